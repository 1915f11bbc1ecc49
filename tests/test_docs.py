"""The repository's own docs: every `<doc>.md §n` citation in the package's Python files resolves.

A citation names a file of docs/ (or the root README.md / FIGURES.md) and, with §, a heading of that file
numbered n (`## 2.`, `### 2.1`); a range `§2.2-2.4` needs both ends. The bare names of the four docs cited
without § (`DESIGN.md`, `CONTRACT.md`, ...) must exist in docs/ too.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_NAMES = ("METHOD.md", "RECIPES.md", "DESIGN.md", "CONTRACT.md")
CITATION = re.compile(r"\b([A-Za-z_]+\.md) ?§ ?(\d+(?:\.\d+)*)(?:-(\d+(?:\.\d+)*))?")
BARE = re.compile(r"\b(" + "|".join(re.escape(n) for n in DOC_NAMES) + r")\b")
HEADING = re.compile(r"^#{1,6} +(\d+(?:\.\d+)*)[. ]", re.MULTILINE)


def python_files() -> list[Path]:
    skip = {".git", ".venv", "build", "dist"}
    return sorted(p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts))


def doc_file(name: str) -> Path | None:
    for candidate in (DOCS / name, ROOT / name):
        if name in DOC_NAMES and candidate.parent != DOCS:
            continue
        if candidate.is_file():
            return candidate
    return None


def citations() -> list[tuple[str, str, list[str]]]:
    """(where, file name, section numbers) of every § citation in the Python files."""
    found = []
    for path in python_files():
        text = path.read_text(encoding="utf-8")
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            sections = [s for s in match.group(2, 3) if s]
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1), sections))
    return found


def test_the_package_cites_the_docs_by_section():
    cited = {name for _, name, _ in citations()}
    assert {"METHOD.md", "RECIPES.md"} <= cited


def test_every_section_citation_names_a_docs_file_and_an_existing_heading():
    headings: dict[Path, set[str]] = {}
    broken = []
    for where, name, sections in citations():
        path = doc_file(name)
        if path is None:
            broken.append(f"{where}: {name} is not in docs/ (nor README.md/FIGURES.md at the root)")
            continue
        if path not in headings:
            headings[path] = set(HEADING.findall(path.read_text(encoding="utf-8")))
        broken += [f"{where}: {name} has no heading §{s}" for s in sections if s not in headings[path]]
    assert not broken, "\n".join(broken)


def test_every_doc_named_in_the_code_exists_in_docs():
    missing = sorted({f"{path.relative_to(ROOT)}: {name}" for path in python_files()
                      for name in BARE.findall(path.read_text(encoding="utf-8")) if not (DOCS / name).is_file()})
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("name", DOC_NAMES + ("README.md",))
def test_docs_refer_to_no_path_outside_the_repository(name):
    text = (DOCS / name).read_text(encoding="utf-8")
    assert "../shared" not in text and "/work/" not in text
