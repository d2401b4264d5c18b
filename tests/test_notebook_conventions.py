"""Every chapter follows CONTRIBUTING.md: committed without outputs, opens on Colab, runs with a profile."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from pulse_lib import repository, runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
#: The badge URL, from the one place that names the repository (pyproject [tool.pulse-book]).
COLAB = ("https://colab.research.google.com/github/"
         + repository.slug(repository.configured(ROOT)) + "/blob/main/chapters/{}")


def test_every_chapter_is_in_the_toc_and_every_toc_chapter_exists():
    assert sorted(runner.toc_chapters(ROOT)) == sorted(p.stem for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_conventions(path: Path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    markdown = [c for c in notebook.cells if c.cell_type == "markdown"]
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3", "set the python3 kernelspec"
    for cell in code:
        assert not cell.outputs and cell.execution_count is None, (
            f"commit chapters without outputs: jupyter nbconvert --clear-output --inplace {path.name}")
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "start with the chapter title"
    assert COLAB.format(path.name) in first.source, "the Colab badge must point at this notebook on main"
    assert any('"google.colab" in sys.modules' in c.source for c in code[:2]), "a Colab setup cell comes first"
    parameters = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0].source.strip() == 'profile = "auto"'
    assert any("resolve_profile(PROFILES, profile)" in c.source for c in code)
    assert "version_stamp(" in code[-1].source, "end with book.version_stamp()"
    text = "\n".join(c.source for c in markdown)
    exercises = re.findall(r"```\{exercise\}[^\n]*\n:label: (\S+)", text)
    solutions = re.findall(r"```\{solution\} (\S+)", text)
    assert exercises, "every chapter has exercises"
    assert sorted(exercises) == sorted(solutions), "every exercise has a solution"
    hidden = [c for c in code if "hide-cell" in c.metadata.get("tags", []) and "strict=True" in c.source]
    assert len(hidden) >= len(exercises), "each exercise's reference solution is checked (strict=True)"


def test_labels_are_unique_across_chapters():
    seen: dict[str, str] = {}
    for path in NOTEBOOKS:
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        for label in re.findall(r":label: (\S+)", text) + re.findall(r"^\(([\w-]+)\)=", text, flags=re.MULTILINE):
            assert label not in seen, f"label {label} in {path.name} is also in {seen[label]}"
            seen[label] = path.name


#: The longest code line a rendered page shows without scrolling sideways (and ruff's limit,
#: pyproject.toml [tool.ruff]). IPython shell and magic lines (``!git clone ...``) are exempt:
#: no formatter wraps them.
MAX_LINE = 88


def long_code_lines(path: Path, limit: int = MAX_LINE) -> list[str]:
    """``cell N line M (length)`` for every code line of a notebook longer than ``limit``."""
    found = []
    cells = nbformat.read(path, as_version=4).cells
    for index, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        for number, line in enumerate(cell.source.splitlines(), 1):
            if len(line) > limit and not line.lstrip().startswith(("!", "%")):
                found.append(f"cell {index} line {number} ({len(line)} chars): {line.strip()[:50]}")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_code_lines_fit_the_page(path: Path):
    long = long_code_lines(path)
    assert not long, (f"{len(long)} code line(s) over {MAX_LINE} characters in {path.name} "
                      f"(try `ruff format {path}`):\n" + "\n".join(long[:20]))


def test_the_line_check_finds_a_long_line(tmp_path: Path):
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1\n" + "y = " + "1 + " * 30 + "1"),
        nbformat.v4.new_code_cell("!git clone " + "x" * 100),
        nbformat.v4.new_markdown_cell("a" * 200),
    ])
    path = tmp_path / "long.ipynb"
    nbformat.write(notebook, path)
    assert [entry.split(" (")[0] for entry in long_code_lines(path)] == ["cell 0 line 2"]


LIBRARY = sorted((ROOT / "pulse_lib").rglob("*.py"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_lines_fit_the_page(path: Path):
    """Readers open the library beside the chapters: the same 88 columns (ruff's limit)."""
    long = [f"line {number} ({len(line)} chars): {line.strip()[:50]}"
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > MAX_LINE]
    assert not long, (f"{len(long)} line(s) over {MAX_LINE} characters in {path.name} "
                      f"(try `ruff format {path}`, then wrap strings and comments):\n"
                      + "\n".join(long[:20]))
