"""The API reference (docs/api/*.md, rendered by mkdocstrings) covers every public name.

Every name in `pcscale.__all__` and in each sub-package's `__all__` must have a docstring
that mkdocstrings can show, and must appear in docs/api/*.md, either as its own
`::: pcscale...` entry or as a member of a documented module. Docstrings are read as
mkdocstrings reads them, from the source: a class's or function's own docstring (or a
module-level `name.__doc__ = ...` assignment, which the site's griffe extension
docs/hooks/griffe_doc_assignments.py reads), and for a constant (`SOLVERS`, `ACTIVATIONS`,
`DATASETS`, ...) the string literal right after its assignment. Cross-references written
in docstrings as [`X`][pcscale.X] must point at public names. The site itself is built by
`mkdocs build --strict` in CI, not here.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import types
from functools import cache
from pathlib import Path

import pytest

import pcscale

ROOT = Path(__file__).resolve().parent.parent
API_DOCS = ROOT / "docs" / "api"
SOURCE = ROOT / "src" / "pcscale"
PACKAGES = ("pcscale", "pcscale.nn", "pcscale.theory", "pcscale.data", "pcscale.experiments", "pcscale.plots")


def _public_names() -> list[tuple[str, str]]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        assert hasattr(module, "__all__"), f"{package} has no __all__"
        names += [(package, name) for name in module.__all__]
    return names


@cache
def _tree(module_name: str) -> tuple[ast.Module, str]:
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None, module_name
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8")), spec.origin


def _statements(tree: ast.Module):
    """Module-level statements, including those under `if TYPE_CHECKING:`."""
    for node in tree.body:
        if isinstance(node, ast.If):
            yield from node.body
            yield from node.orelse
        else:
            yield node


def _string(node) -> str | None:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return node.value.value
    return None


def _static_docstring(module_name: str, name: str, depth: int = 0) -> str | None:
    """The docstring mkdocstrings shows for `name` as found from `module_name`, following
    re-exports (`from .x import name as name`) to the defining module."""
    assert depth < 10, f"import cycle while looking for {name} from {module_name}"
    tree, _ = _tree(module_name)
    body = list(_statements(tree))
    for index, node in enumerate(body):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            docstring = ast.get_docstring(node)
            if docstring:
                return docstring
            for later in body[index + 1:]:  # name.__doc__ = ... further down
                if (isinstance(later, ast.Assign) and len(later.targets) == 1
                        and isinstance(later.targets[0], ast.Attribute) and later.targets[0].attr == "__doc__"
                        and isinstance(later.targets[0].value, ast.Name) and later.targets[0].value.id == name):
                    return "assigned"
            return None
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return _string(body[index + 1]) if index + 1 < len(body) else None
    for node in body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    package = module_name if Path(_tree(module_name)[1]).name == "__init__.py" else (
                        module_name.rpartition(".")[0])
                    source = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                        if node.level else node.module
                    if node.module is None:  # from . import name: a sub-module
                        return ast.get_docstring(_tree(f"{source}.{alias.name}")[0])
                    return _static_docstring(source, alias.name, depth + 1)
    return None


def _documented() -> tuple[set[str], dict[str, list[str] | None]]:
    """(`::: path` entries, documented modules → their `members` option or None)."""
    entries: set[str] = set()
    members: dict[str, list[str] | None] = {}
    for page in sorted(API_DOCS.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            match = re.match(r"^:::\s+(\S+)\s*$", line)
            if not match:
                continue
            path = match.group(1)
            entries.add(path)
            options = []
            for following in lines[index + 1:]:
                if following.startswith("    ") or not following.strip():
                    if following.strip().startswith(":::"):
                        break
                    options.append(following)
                else:
                    break
            listed = None
            text = "\n".join(options)
            found = re.search(r"members:\s*\[([^\]]*)\]", text)
            if found:
                listed = [m.strip().strip("\"'") for m in found.group(1).split(",") if m.strip()]
            elif re.search(r"members:\s*(false|False|no)\b", text):
                listed = []
            elif re.search(r"members:\s*$", text, re.MULTILINE):
                listed = re.findall(r"^\s*-\s*(\w+)\s*$", text.split("members:", 1)[1], re.MULTILINE)
            members[path] = listed
    return entries, members


PUBLIC = _public_names()


def test_sub_packages_declare_all():
    for package in PACKAGES:
        module = importlib.import_module(package)
        assert len(module.__all__) == len(set(module.__all__)), f"{package}.__all__ lists a name twice"
        for name in module.__all__:
            assert not name.startswith("_") or name.startswith("__"), f"{package}.__all__ lists private {name}"
            assert hasattr(module, name), f"{package}.__all__ lists {name}, which it does not define"


@pytest.mark.parametrize(("package", "name"), PUBLIC, ids=[f"{p}.{n}" for p, n in PUBLIC])
def test_public_name_has_a_docstring(package, name):
    value = getattr(importlib.import_module(package), name)
    if isinstance(value, types.ModuleType):
        docstring = inspect.getdoc(value)
    else:
        docstring = _static_docstring(package, name)
        if docstring not in (None, "assigned") and inspect.isclass(value):
            # dataclasses and Enums invent a docstring when there is none; the source has the truth
            assert not docstring.startswith(f"{name}("), f"{package}.{name} has only a generated docstring"
        if docstring == "assigned":
            docstring = inspect.getdoc(value)
    assert docstring and docstring.strip(), (
        f"{package}.{name} has no docstring that the API reference can show "
        "(for a constant, put a string literal right after its assignment)")


@pytest.mark.parametrize(("package", "name"), PUBLIC, ids=[f"{p}.{n}" for p, n in PUBLIC])
def test_public_name_is_in_the_api_reference(package, name):
    entries, modules = _documented()
    path = f"{package}.{name}"
    value = getattr(importlib.import_module(package), name)
    if isinstance(value, types.ModuleType):
        assert value.__name__ in entries, f"no '::: {value.__name__}' page in docs/api for {path}"
        return
    if path in entries:
        return
    assert package in modules, f"{path} is neither a '::: {path}' entry nor a member of a documented module"
    listed = modules[package]
    assert listed is None or name in listed, f"'::: {package}' in docs/api restricts its members and omits {name}"


def test_api_reference_entries_exist():
    entries, _ = _documented()
    assert entries, "docs/api/*.md has no ::: entries"
    for path in sorted(entries):
        parts = path.split(".")
        assert parts[0] == "pcscale" and not any(p.startswith("_") for p in parts), f"'::: {path}' is not public"
        value = importlib.import_module(parts[0])
        for part in parts[1:]:
            assert hasattr(value, part), f"'::: {path}' in docs/api names nothing"
            value = getattr(value, part)


def test_docstring_cross_references_point_at_public_names():
    bad = []
    for source in sorted(SOURCE.rglob("*.py")):
        for target in re.findall(r"\]\[(pcscale[\w.]*)\]", source.read_text(encoding="utf-8")):
            parts = target.split(".")
            if any(p.startswith("_") for p in parts):
                bad.append(f"{source.relative_to(ROOT)}: {target} (private)")
                continue
            value = pcscale
            for part in parts[1:]:
                if not hasattr(value, part):
                    bad.append(f"{source.relative_to(ROOT)}: {target} (no such name)")
                    break
                value = getattr(value, part)
    assert not bad, "unresolvable cross-references:\n" + "\n".join(bad)
