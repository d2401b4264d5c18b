"""The chapter runner: chapter lookup, profiles, failure reports, caching (on a tiny book)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from pulse_lib import runner
from pulse_lib.errors import ConfigError


def _notebook(*sources: str) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_markdown_cell("# A tiny chapter")]
    cells.append(nbformat.v4.new_code_cell('profile = "auto"', metadata={"tags": ["parameters"]}))
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


@pytest.fixture()
def tiny_book(tmp_path: Path) -> Path:
    (tmp_path / "pulse_lib").mkdir()
    (tmp_path / "datasets").mkdir()
    (tmp_path / "book").mkdir()
    (tmp_path / "chapters").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "_config.yml").write_text("title: tiny\n")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: Part\n    chapters:\n"
        "      - file: chapters/01_good\n      - file: chapters/02_bad\n"
    )
    nbformat.write(_notebook("x = 2", "print(f'ran with {profile}')"), tmp_path / "chapters" / "01_good.ipynb")
    nbformat.write(_notebook("x = 1", "raise ValueError('boom in cell three')"), tmp_path / "chapters" / "02_bad.ipynb")
    return tmp_path


def test_toc_and_chapter_names(tiny_book):
    assert runner.toc_chapters(tiny_book) == ["01_good", "02_bad"]
    assert runner.resolve_chapters(tiny_book, ["01"]) == ["01_good"]
    assert runner.resolve_chapters(tiny_book, ["chapters/02_bad.ipynb"]) == ["02_bad"]
    with pytest.raises(ConfigError, match=r"unknown chapter '07'; the book has: 01_good, 02_bad"):
        runner.resolve_chapters(tiny_book, ["07"])
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        runner.run_chapters(["01"], profile="huge", root=tiny_book)


def test_toc_entry_without_notebook_is_an_error(tiny_book):
    (tiny_book / "chapters" / "02_bad.ipynb").unlink()
    with pytest.raises(ConfigError, match=r"02_bad\.ipynb does not exist"):
        runner.toc_chapters(tiny_book)


def test_run_injects_profile_reports_failures_and_caches(tiny_book, capsys):
    results = {r.chapter: r for r in runner.run_chapters(profile="ci", jobs=2, root=tiny_book)}
    assert results["01_good"].status == "ok"
    executed = nbformat.read(tiny_book / runner.STAGE_DIR / "chapters" / "01_good.ipynb", as_version=4)
    assert "ran with ci" in executed.cells[-1].outputs[0]["text"]
    bad = results["02_bad"]
    assert bad.status == "failed"
    assert "cell 3" in bad.detail and "ValueError: boom in cell three" in bad.detail
    assert not (tiny_book / runner.STAGE_DIR / "chapters" / "02_bad.ipynb").exists()
    assert (tiny_book / runner.FAILED_DIR / "02_bad.ipynb").exists()
    assert "FAILED 02_bad" in capsys.readouterr().err

    again = runner.run_chapters(["01"], profile="ci", root=tiny_book)
    assert again[0].status == "cached"
    assert runner.run_chapters(["01"], profile="full", root=tiny_book)[0].status == "ok"
    (tiny_book / "pulse_lib" / "new.py").write_text("CHANGED = True\n")  # the library changed
    assert runner.run_chapters(["01"], profile="full", root=tiny_book)[0].status == "ok"
    results = tiny_book / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "speed.json").write_text('{"steps_per_s": 1}')  # a chapter may display it
    assert runner.run_chapters(["01"], profile="full", root=tiny_book)[0].status == "ok"
    assert runner.run_chapters(["01"], profile="full", root=tiny_book)[0].status == "cached"
    assert runner.run_chapters(["01"], profile="full", root=tiny_book, force=True)[0].status == "ok"


def test_cli_exit_codes(tiny_book, monkeypatch):
    monkeypatch.setenv("PULSE_BOOK_ROOT", str(tiny_book))
    assert runner.main(["run", "nope"]) == 2
    assert runner.main(["run", "02"]) == 1
    assert runner.main(["build"]) == 2  # 02_bad never executed: a clear error, no half book


def test_benchmarks_markdown_lists_results_and_rejects_bad_json(tiny_book):
    assert "No benchmark results" in runner.benchmarks_markdown(tiny_book)
    results = tiny_book / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "speed.json").write_text('{"machine": {"cores": 2}, "steps_per_s": 1234.5}')
    table = runner.benchmarks_markdown(tiny_book)
    assert "| `machine.cores` | 2 |" in table and "1,234" in table
    (results / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="broken.json is not valid JSON"):
        runner.benchmarks_markdown(tiny_book)
