"""The package's layering: core ← theory ← experiments ← plots ← cli. A module imports only
from its own layer or a lower one, never a private name (`_name`) of another layer, and no
module grows past 400 lines."""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "pcscale"
LAYERS = ("core", "theory", "experiments", "plots", "cli")
# Deprecated aliases kept for one release may point upwards, lazily, from here only.
SHIMS = {("theory/__init__.py", "pcscale.experiments._coord_files")}
# The package root is the public façade: it may expose the theory sub-package.
FACADE = {("__init__.py", "pcscale.theory")}


def _layer(module: str) -> str:
    """The layer of a dotted module name inside pcscale."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("theory", "experiments", "plots", "cli"):
        return parts[1]
    return "core"


def _module_name(path: Path) -> str:
    relative = path.relative_to(SOURCE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, text: str | None = None):
    """(imported module, imported names) of every import statement of a source file (or
    of `text` as if it were that file), with relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def _sources():
    return sorted(SOURCE.rglob("*.py"))


def test_the_layers_are_known():
    assert {_layer(_module_name(path)) for path in _sources()} == set(LAYERS)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SOURCE)))
def test_a_module_imports_only_downwards_and_no_private_name_of_another_layer(path):
    own = _layer(_module_name(path))
    for module, names in _imports(path):
        if not module.startswith("pcscale"):
            continue
        if (str(path.relative_to(SOURCE)), module) in SHIMS | FACADE:
            continue
        other = _layer(module)
        assert LAYERS.index(other) <= LAYERS.index(own), f"{path.name} ({own}) imports {module} ({other})"
        if other != own:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{path.name} imports the private {private} of {module}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SOURCE)))
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_the_checker_sees_an_upward_and_a_private_import():
    # The checker itself, on a theory module importing experiments and a private core name.
    source = "from ..experiments import run\nfrom .._train import _check_optimiser\n"
    imports = list(_imports(SOURCE / "theory" / "_probe.py", source))
    assert imports == [("pcscale.experiments", ["run"]), ("pcscale._train", ["_check_optimiser"])]
    assert _layer("pcscale.experiments") == "experiments" and _layer("pcscale._train") == "core"
