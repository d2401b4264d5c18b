"""The repository URL comes from one place (pyproject.toml [tool.pulse-book]) and every badge,
Colab cell, _config.yml and project URL agrees with it; one command rewrites them all."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from pulse_lib import repository
from pulse_lib.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))


def test_every_reference_matches_the_configured_repository():
    assert repository.mismatches(ROOT) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_chapter_badge_and_colab_cell_name_the_configured_repository(path: Path):
    url = repository.configured(ROOT)
    cells = nbformat.read(path, as_version=4).cells
    badge = f"https://colab.research.google.com/github/{repository.slug(url)}/blob/main/chapters/{path.name}"
    assert badge in cells[0].source, (
        "the Colab badge must point at this notebook on main"
    )
    code = [c for c in cells if c.cell_type == "code"]
    setup = [c for c in code[:2] if "google.colab" in c.source]
    assert setup and url in setup[0].source, (
        "the Colab setup cell must clone the configured repository"
    )


def _copy_book(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "_config.yml", "README.md", "CONTRIBUTING.md"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "chapters").mkdir()
    shutil.copy2(NOTEBOOKS[0], tmp_path / "chapters" / NOTEBOOKS[0].name)
    return tmp_path


def test_a_stray_reference_is_found_and_set_rewrites_everything(tmp_path: Path):
    root = _copy_book(tmp_path)
    chapter = root / "chapters" / NOTEBOOKS[0].name
    old = repository.slug(repository.configured(root))
    chapter.write_text(
        chapter.read_text().replace(f"github/{old}/blob", "github/someone/else/blob", 1)
    )
    assert any("someone/else" in p for p in repository.mismatches(root))
    changed = repository.rewrite("https://github.com/new-owner/new-book", root)
    assert repository.configured(root) == "https://github.com/new-owner/new-book"
    assert {p.name for p in changed} >= {"pyproject.toml", "_config.yml", chapter.name}
    # the stray reference was not the configured one, so `set` leaves it for a human to see
    assert [p for p in repository.mismatches(root) if "someone/else" not in p] == []
    text = "\n".join(
        (root / n).read_text() for n in ("pyproject.toml", "_config.yml", "README.md")
    )
    assert old not in text and "https://new-owner.github.io/new-book" in text


def test_bad_urls_are_refused():
    for url in ("github.com/a/b", "https://gitlab.com/a/b", "https://github.com/a", ""):
        with pytest.raises(ConfigError):
            repository.slug(url)
