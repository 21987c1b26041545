"""`pcscale` loads its public names on first use from a literal table
(`_EXPORTS_BY_MODULE`), while type checkers and the API reference read the
`if TYPE_CHECKING:` imports of the same file: the two lists must agree. Each
sub-package's `__all__` must list exactly the public names its `__init__.py` re-exports."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import pcscale

SOURCE = Path(pcscale.__file__).parent


def _reexports(init: Path, *, guarded: bool) -> dict[str, str]:
    """name → module of the `from … import name as name` lines of `init` (inside the
    `if TYPE_CHECKING:` block when `guarded`, else at module level)."""
    tree = ast.parse(init.read_text(encoding="utf-8"))
    if guarded:
        body = next(node for node in tree.body if isinstance(node, ast.If)
                    and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING").body
    else:
        body = tree.body
    found = {}
    for node in body:
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            for alias in node.names:
                if alias.asname == alias.name and not alias.name.startswith("_"):
                    found[alias.name] = "." * node.level + (node.module or "")
    return found


def test_the_lazy_table_is_the_type_checking_imports():
    assert _reexports(SOURCE / "__init__.py", guarded=True) == pcscale._EXPORTS
    assert pcscale.__all__ == sorted(pcscale._EXPORTS)


def test_every_public_name_loads_and_is_the_defining_modules_object():
    for name, module in pcscale._EXPORTS.items():
        value = getattr(pcscale, name)
        home = importlib.import_module(module + ("" if module != "." else name), "pcscale")
        assert value is (home if module == "." else getattr(home, name)), name
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        pcscale.no_such_name  # noqa: B018


def test_import_pcscale_loads_no_jax_until_a_name_is_used():
    probe = ("import sys, pcscale; before = 'jax' in sys.modules; pcscale.infer; "
             "print(before, 'jax' in sys.modules, 'infer' in dir(pcscale), 'importlib' in dir(pcscale))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "True", "False"]


@pytest.mark.parametrize("package", ["nn", "theory", "data", "experiments", "plots"])
def test_each_sub_packages_all_lists_its_reexports(package):
    module = importlib.import_module(f"pcscale.{package}")
    reexported = _reexports(SOURCE / package / "__init__.py", guarded=False)
    defined = {name for name in vars(module) if not name.startswith("_")} - set(reexported)
    assert set(module.__all__) >= set(reexported), sorted(set(reexported) - set(module.__all__))
    assert set(module.__all__) <= set(reexported) | defined, sorted(set(module.__all__) - set(reexported) - defined)
