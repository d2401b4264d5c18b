"""Every chapter follows CONTRIBUTING.md: committed without outputs, opens on Colab, runs with a profile."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from pulse_lib import runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
COLAB = "https://colab.research.google.com/github/pulse-book/rl-marketing-book/blob/main/chapters/{}"


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
        for label in re.findall(r":label: (\S+)", text) + re.findall(r"^\(([\w-]+)\)=", text, flags=re.M):
            assert label not in seen, f"label {label} in {path.name} is also in {seen[label]}"
            seen[label] = path.name
