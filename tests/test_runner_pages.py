"""What the runner does to executed notebooks before the book renders them, and partial builds."""

from __future__ import annotations

import nbformat
import pytest

from pulse_lib import runner


def _stream(name: str, text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_a_progress_bar_ends_as_one_line_and_other_output_is_kept():
    # what tqdm.auto's text bar looks like in a papermill-executed notebook: one chunk a refresh
    bar = [
        f"\rloop: {p:>3}%|{'#' * (p // 10):<10}| {p // 25}/4"
        for p in (0, 25, 50, 75, 100, 100)
    ]
    cell = nbformat.v4.new_code_cell("...")
    cell.outputs = [
        _stream("stdout", "a\n"),
        *[_stream("stderr", b) for b in bar],
        _stream("stderr", "\n"),
        _stream("stdout", "b\n"),
        _stream("stderr", "\r  0%|   | 0/3"),
        _stream("stderr", "\r100%|###| 3/3"),
        _stream("stderr", "\r              \r"),  # a bar with leave=False erases itself
        nbformat.v4.new_output(
            "execute_result", data={"text/plain": "42"}, execution_count=1
        ),
    ]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    runner.tidy_outputs(notebook)
    texts = [(o.get("name"), o.get("text")) for o in notebook.cells[0].outputs]
    assert texts == [
        ("stdout", "a\n"),
        ("stderr", "loop: 100%|##########| 4/4\n"),
        ("stdout", "b\n"),
        (None, None),
    ]


def test_the_injected_parameters_cell_is_removed_from_the_page():
    injected = nbformat.v4.new_code_cell(
        'profile = "ci"', metadata={"tags": ["injected-parameters"]}
    )
    own = nbformat.v4.new_code_cell(
        'profile = "auto"', metadata={"tags": ["parameters"]}
    )
    notebook = runner.tidy_outputs(nbformat.v4.new_notebook(cells=[own, injected]))
    assert notebook.cells[1].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert notebook.cells[0].metadata["tags"] == ["parameters"]


def test_a_partial_toc_keeps_only_executed_chapters():
    toc = {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {"caption": "A", "chapters": [{"file": "book/how_to_use"}]},
            {"caption": "B", "numbered": True, "chapters": [{"file": "chapters/01_x"}]},
            {
                "caption": "C",
                "chapters": [{"file": "chapters/02_y"}, {"file": "chapters/03_z"}],
            },
        ],
    }
    partial = runner._drop_from_toc(toc, {"01_x", "03_z"})
    assert [p["caption"] for p in partial["parts"]] == ["A", "C"]
    assert partial["parts"][1]["chapters"] == [{"file": "chapters/02_y"}]
    assert toc["parts"][1]["chapters"] == [{"file": "chapters/01_x"}], (
        "the input is not changed"
    )


def test_quiet_imports_drops_gyms_notice_and_nothing_else():
    import subprocess
    import sys

    pytest.importorskip("gym")

    def stderr(code: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stderr

    assert "Gym has been unmaintained" in stderr("import gym"), (
        "the notice this drops is gone"
    )
    quiet = stderr(
        "from pulse_lib import book; book.quiet_imports(); import sys; "
        "print('other', file=sys.stderr); import d3rlpy"
    )
    assert "Gym has been unmaintained" not in quiet
    assert "other" in quiet
