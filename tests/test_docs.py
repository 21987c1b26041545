"""The documentation is self-contained: every page, docstring and printed summary cites
files that ship with the package, and every "docs/background.md §X.Y" names a section
that exists."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BACKGROUND = DOCS / "background.md"

# The section numbers of background.md, fixed once: code everywhere cites them.
SECTIONS = (
    ["1", "2", "3", "4", "5", "6", "7"]
    + [f"2.{i}" for i in range(1, 8)]
    + [f"3.{i}" for i in range(1, 6)]
    + [f"4.{i}" for i in range(1, 9)]
    + [f"5.{i}" for i in range(10)]
    + [f"6.{i}" for i in range(1, 4)]
)

# "docs/background.md §4.4", "`docs/background.md`\n    §3.3", "[background.md §4.4–4.5](background.md)".
CITATION = re.compile(r"background\.md`?[\s#`]*§\s*(\d+(?:\.\d+)?)(?:\s*[–-]\s*(\d+(?:\.\d+)?))?")
DOCS_PATH = re.compile(r"docs/([A-Za-z0-9_.\-]+?\.md)")
RELATIVE_LINK = re.compile(r"\]\(([A-Za-z0-9_\-]+\.md)(?:#[^)]*)?\)")


def _text_files(*places: str) -> list[Path]:
    """Every file under the given places (files or folders), skipping bytecode caches."""
    files = []
    for place in places:
        path = ROOT / place
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates if "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return files


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="ignore")


USER_FACING = _text_files("src/pcscale", "docs", "README.md")


def _headings() -> list[str]:
    return re.findall(r"^## (\d+(?:\.\d+)?) \S", BACKGROUND.read_text(encoding="utf-8"), flags=re.MULTILINE)


def test_background_has_the_cited_numbering():
    headings = _headings()
    assert len(headings) == len(set(headings)), "a section number appears twice"
    assert sorted(headings, key=lambda s: tuple(map(int, s.split(".")))) == headings, "sections out of order"
    assert set(headings) == set(SECTIONS)


@pytest.mark.parametrize("needle", ["science.md", "../shared", "shared/data", "design.md"])
def test_user_facing_files_cite_nothing_outside_the_package(needle):
    offenders = [str(p.relative_to(ROOT)) for p in USER_FACING if needle in _read(p)]
    assert offenders == [], f"{needle!r} is not shipped with pcscale but is cited in {offenders}"


def test_cited_docs_pages_exist():
    missing = []
    for path in USER_FACING:
        text = _read(path)
        # "docs/NAME.md" citations name a page under docs/; a Markdown link inside docs/
        # is relative to its own page (docs/api/core.md links ../models.md and nn.md).
        cited = {DOCS / name for name in DOCS_PATH.findall(text)}
        if path.is_relative_to(DOCS) and path.suffix == ".md":
            cited |= {path.parent / name for name in RELATIVE_LINK.findall(text)}
        missing += [f"{path.relative_to(ROOT)} -> {target.resolve().relative_to(ROOT)}" for target in sorted(cited)
                    if not target.is_file()]
    assert missing == []


def test_background_citations_name_existing_sections():
    sections = set(_headings())
    citing = _text_files("src/pcscale", "docs", "README.md", "tests", "benchmarks")
    bad, count = [], 0
    for path in citing:
        if path.suffix not in (".py", ".md"):
            continue
        for match in CITATION.finditer(_read(path)):
            count += 1
            bad += [f"{path.relative_to(ROOT)}: §{number}" for number in match.groups()
                    if number is not None and number not in sections]
    assert count > 50  # the pattern still finds the citations (about 125 of them)
    assert bad == []
