"""Student versions and the autograder (pulse_lib.course), on a small fixture chapter and on
chapter 01 (the latter executes it twice: marked ``book``)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from pulse_lib import course, exercises
from pulse_lib.errors import ConfigError, PulseError

ROOT = Path(__file__).resolve().parent.parent


def _fixture_chapter() -> nbformat.NotebookNode:
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    hidden = {"tags": ["hide-cell"]}
    notebook = nbformat.v4.new_notebook(
        cells=[
            md("# A fixture chapter\n\nTwo exercises."),
            code('profile = "auto"', metadata={"tags": ["parameters"]}),
            code(
                "import numpy as np\nfrom pulse_lib.exercises import check, close_to\n\nx = np.arange(5.0)"
            ),
            md(
                "## Exercises\n\n```{exercise} Mean\n:label: fx-mean\nThe mean of `x`.\n```"
            ),
            code(
                "expected_mean = float(np.mean(x))  # the reference, out of sight",
                metadata=hidden,
            ),
            code(
                "def my_mean():\n    # Your code here.\n    return None\n\n\n"
                'check("fx-mean", my_mean(), close_to(expected_mean))'
            ),
            md("```{solution} fx-mean\n:class: dropdown\nUse `x.mean()`.\n```"),
            code(
                'check("fx-mean", float(x.mean()), close_to(expected_mean), strict=True);',
                metadata=hidden,
            ),
            md("```{exercise} Total\n:label: fx-sum\nThe sum of `x`.\n```"),
            code(
                "def my_sum():\n    # Your code here.\n    return None\n\n\n"
                'check("fx-sum", my_sum(), lambda a: None if a == 10 else f"expected 10, got {a}")'
            ),
            md(":::{solution} fx-sum\nSum it: `x.sum()` is 10.\n:::"),
            code(
                'check("fx-sum", float(x.sum()), lambda a: a == 10, strict=True);',
                metadata=hidden,
            ),
            md("## Summary\n\nDone."),
            code('check("outside any exercise", None, lambda a: None)'),
        ]
    )
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


@pytest.fixture()
def fixture_course(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, nbformat.NotebookNode]:
    sources = tmp_path / "sources"
    sources.mkdir()
    chapter = _fixture_chapter()
    nbformat.write(chapter, sources / "99_fixture.ipynb")
    monkeypatch.setenv(course.SOURCES_ENV, str(sources))
    return sources, course.student_notebook(chapter, "99_fixture")


def _grade(
    tmp_path: Path, notebook: nbformat.NotebookNode, name: str, **kw
) -> course.NotebookGrade:
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(notebook, path)
    return course.grade_notebook(path, root=ROOT, timeout=120, **kw)


def _fill(
    notebook: nbformat.NotebookNode, stub: str, answer: str
) -> nbformat.NotebookNode:
    filled = nbformat.from_dict(notebook)
    cell = next(
        c for c in filled.cells if c.cell_type == "code" and f"def {stub}" in c.source
    )
    cell.source = cell.source.replace(
        "    # Your code here.\n    return None", f"    return {answer}"
    )
    return filled


def test_student_version_removes_solutions_and_keeps_self_checks(fixture_course):
    _, student = fixture_course
    text = "\n".join(c.source for c in student.cells)
    assert (
        "{solution}" not in text
        and "x.sum()" not in text
        and "Use `x.mean()`" not in text
    )
    assert "strict=True" not in text, "a reference solution cell survived"
    assert "np.mean(x)" not in text, (
        "the hidden reference is visible in the student notebook"
    )
    assert 'course.run_hidden("99_fixture"' in text
    assert text.count('check("fx-') == 2, "the two self-checks are kept"
    assert "{exercise} Mean" in text and "{exercise} Total" in text
    assert student.metadata["pulse_course"] == {
        "chapter": "99_fixture",
        "exercises": ["fx-mean", "fx-sum"],
    }
    nbformat.validate(student)


def test_untouched_student_notebook_scores_zero(fixture_course, tmp_path):
    _, student = fixture_course
    grade = _grade(tmp_path, student, "untouched")
    assert (grade.points, grade.max_points, grade.errors) == (0, 2, 0)
    assert [c["status"] for e in grade.exercises for c in e.checks] == [
        "not attempted"
    ] * 2


def test_filled_in_notebook_scores_full_and_partial_and_survives_a_crash(
    fixture_course, tmp_path
):
    _, student = fixture_course
    full = _fill(
        _fill(student, "my_mean", "float(x.mean())"), "my_sum", "float(x.sum())"
    )
    assert _grade(tmp_path, full, "full").points == 2
    crash = _fill(_fill(student, "my_mean", "1 / 0"), "my_sum", "float(x.sum())")
    graded = _grade(tmp_path, crash, "crash")
    assert [e.points for e in graded.exercises] == [0, 1] and graded.errors == 1


def test_reference_mode_gives_the_chapter_full_points(fixture_course, tmp_path):
    sources, _ = fixture_course
    chapter = nbformat.read(sources / "99_fixture.ipynb", as_version=4)
    assert _grade(tmp_path, chapter, "reference", reference=True).points == 2


def test_a_changed_chapter_is_named_and_wrong_answers_get_reasons(
    fixture_course, tmp_path
):
    sources, student = fixture_course
    chapter = nbformat.read(sources / "99_fixture.ipynb", as_version=4)
    chapter.cells[4].id = "renamed"
    nbformat.write(chapter, sources / "99_fixture.ipynb")
    wrong = _fill(_fill(student, "my_mean", "float(x.mean())"), "my_sum", "11.0")
    grade = _grade(tmp_path, wrong, "stale")
    assert grade.errors >= 1 and [e.points for e in grade.exercises] == [0, 0]
    assert "expected 10, got 11.0" in grade.exercises[1].checks[0]["reason"]


def test_bad_inputs_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        course.grade_notebook(tmp_path / "missing.ipynb", root=ROOT)
    (tmp_path / "junk.ipynb").write_text("not json")
    with pytest.raises(PulseError, match="not a readable notebook"):
        course.grade_notebook(tmp_path / "junk.ipynb", root=ROOT)
    empty = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# nothing")])
    with pytest.raises(ConfigError, match="no \\{exercise\\}"):
        course.student_notebook(empty, "00_empty")
    assert course.main(["grade", str(tmp_path / "missing.ipynb")]) == 2


def test_strip_solutions_keeps_the_exercise():
    text = "```{exercise} A\n:label: a\nDo it.\n```\n\n````{solution} a\n```python\nx = 1\n```\n````\nAfter."
    assert (
        course.strip_solutions(text)
        == "```{exercise} A\n:label: a\nDo it.\n```\n\nAfter."
    )
    assert course.exercise_labels(text) == ["a"]


def test_check_results_are_logged_for_the_grader(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(exercises.LOG_ENV, str(log))
    monkeypatch.setattr(exercises, "current_exercise", "ex-a")
    exercises.check("ex-a", 1.0, exercises.close_to(1.0))
    exercises.check("ex-a", None, exercises.close_to(1.0))
    exercises.check("ex-a", 2.0, exercises.close_to(1.0))
    lines = log.read_text().splitlines()
    assert [__import__("json").loads(line)["status"] for line in lines] == [
        "correct",
        "not attempted",
        "wrong",
    ]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.stem
)
def test_every_chapter_makes_a_working_student_version(path: Path):
    chapter = nbformat.read(path, as_version=4)
    assert course.self_check_problems(chapter) == []
    student = course.student_notebook(chapter, path.stem)
    text = "\n".join(c.source for c in student.cells)
    assert "strict=True" not in text and "{solution}" not in text
    assert student.metadata["pulse_course"]["exercises"] == course.exercise_labels(
        "\n".join(c.source for c in chapter.cells if c.cell_type == "markdown")
    )


def test_a_chapter_without_a_self_check_is_caught():
    chapter = _fixture_chapter()
    del chapter.cells[9]
    assert course.self_check_problems(chapter) == [
        "fx-sum: no self-check (check(...) without strict=True) in its block"
    ]


def test_a_solution_cell_the_self_check_needs_runs_out_of_sight(tmp_path, monkeypatch):
    # the pattern "compute the reference and check it strictly in one hidden cell, then the
    # visible self-check compares with that reference"
    chapter = _fixture_chapter()
    chapter.cells[
        4
    ].source += (
        '\ncheck("fx-mean", float(x.mean()), close_to(expected_mean), strict=True)'
    )
    del chapter.cells[7]
    assert course.self_check_problems(chapter) == []
    sources = tmp_path / "sources"
    sources.mkdir()
    nbformat.write(chapter, sources / "98_fused.ipynb")
    monkeypatch.setenv(course.SOURCES_ENV, str(sources))
    student = course.student_notebook(chapter, "98_fused")
    text = "\n".join(c.source for c in student.cells)
    assert "strict=True" not in text and "np.mean(x)" not in text
    assert text.count("course.run_hidden(") == 1
    filled = _fill(student, "my_mean", "float(x.mean())")
    graded = _grade(tmp_path, filled, "fused")
    assert [e.points for e in graded.exercises] == [1, 0] and graded.errors == 0
    assert [c["reference"] for c in graded.exercises[0].checks] == [False]


# -- a real chapter: executes chapter 01 twice (about a minute each on 2 cores) ---------------


@pytest.mark.book
def test_chapter_01_student_version_scores_zero_and_the_reference_full(tmp_path):
    written = course.write_student_versions(["01"], out=tmp_path, root=ROOT)
    untouched = course.grade_notebook(written[0], root=ROOT)
    assert untouched.max_points >= 2 and untouched.points == 0 and untouched.errors == 0
    assert all(e.checks for e in untouched.exercises), "every exercise's self-check ran"
    reference = course.grade_notebook(
        ROOT / "chapters" / "01_marketing_funnel.ipynb", reference=True, root=ROOT
    )
    assert reference.points == reference.max_points == untouched.max_points


def test_the_grader_injects_the_profile_even_without_a_parameters_cell():
    chapter = _fixture_chapter()
    graded, labels = course.grading_notebook(chapter)
    injected = [
        i
        for i, c in enumerate(graded.cells)
        if "injected-parameters" in c.metadata.get("tags", [])
    ]
    parameters = [
        i
        for i, c in enumerate(graded.cells)
        if "parameters" in c.metadata.get("tags", [])
    ]
    assert labels == ["fx-mean", "fx-sum"] and injected == [parameters[0] + 1]
    del chapter.cells[1]
    graded, _ = course.grading_notebook(chapter)
    assert graded.cells[0].source == "profile = 'ci'"
    markers = [
        c.source.split("= ")[-1]
        for c in graded.cells
        if "pulse-grader" in c.metadata.get("tags", [])
    ]
    assert markers == ["None", '"fx-mean"', '"fx-sum"', "None"]  # headings end a block
