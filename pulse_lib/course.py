"""Student versions of the chapters and an autograder built on the chapters' own
self-checks.

::

    python -m pulse_lib.course student [CHAPTER ...] [--out _build/student]
    python -m pulse_lib.course grade NOTEBOOK ... [--json grades.json] [--timeout 900]
    python -m pulse_lib.course grade --reference CHAPTER ...   # the book's own answers

**Student version.** Each chapter as committed, minus what gives an answer away: the
``{solution}`` blocks of the markdown and the cells that check the reference solution
(``check(..., strict=True)``). A hidden cell inside an exercise block (the reference a
self-check compares with, or a solution cell the self-check needs because it computes
that reference) stays out of sight: the student notebook runs the book's own copy of
that cell, silently (:func:`run_hidden`), so every self-check still works and the
student sees feedback while working. Everything else (stubs, self-checks, the chapter's
prose and code) is kept. This keeps answers out of sight, not secret: the book is open.

**Grading.** The grader executes a filled-in notebook in a fresh kernel (``ci`` profile,
from
the book's ``chapters/`` folder, errors allowed so one broken answer does not sink the
rest).
Each :func:`pulse_lib.exercises.check` call appends its verdict to a log, tagged with
the
exercise block it ran in (the grader marks the blocks; the student's notebook is not
edited).
An exercise is worth one point, shared equally among its self-checks; an untouched stub
scores
0. With ``--reference`` the grader runs the chapter itself and scores its reference
   checks:
every exercise then earns its point, which proves the checks accept a right answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pulse_lib.book import repo_root
from pulse_lib.errors import ConfigError, DataFormatError

#: Where ``student`` writes by default (relative to the repository).
STUDENT_DIR = "_build/student"
#: Overrides the folder :func:`run_hidden` reads the book's chapters from (tests, a
#: course copy).
SOURCES_ENV = "PULSE_COURSE_SOURCES"
#: Tags that keep a cell's code out of the rendered page.
HIDDEN_TAGS = frozenset({"hide-cell", "remove-cell", "hide-input", "remove-input"})

_EXERCISE = re.compile(
    r"^(`{3,}|:{3,})\{exercise\}[^\n]*\n(?:[^\n]*\n)*?:label:\s*(\S+)", re.MULTILINE
)
_SOLUTION_OPEN = re.compile(r"^(`{3,}|:{3,})\{solution\}")
_STRICT = re.compile(r"strict\s*=\s*True")
_HEADING = re.compile(r"^#{1,6} ", re.MULTILINE)


def exercise_labels(text: str) -> list[str]:
    """Labels of the ``{exercise}`` directives in a markdown text, in order."""
    return [match.group(2) for match in _EXERCISE.finditer(text)]


def strip_solutions(text: str) -> str:
    """Markdown without its ``{solution}`` blocks (fenced with backticks or colons)."""
    kept: list[str] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        if fence is None:
            opening = _SOLUTION_OPEN.match(line)
            if opening:
                fence = opening.group(1)
                continue
            kept.append(line)
        elif line.strip() == fence:
            fence = None
    return "".join(kept).strip("\n")


def _tags(cell: Any) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _is_reference_solution(cell: Any) -> bool:
    return cell["cell_type"] == "code" and bool(_STRICT.search(cell["source"]))


def _run_hidden_source(chapter: str, cell_id: str) -> str:
    return (
        "# The reference this exercise's self-check compares with, kept out of sight:\n"
        "# this runs the book's own hidden cell.\n"
        "from pulse_lib import course\n\n"
        f'course.run_hidden("{chapter}", "{cell_id}")'
    )


def exercise_blocks(notebook: Any) -> dict[str, list[int]]:
    """Indices of the cells of each exercise block: from its ``{exercise}`` directive to
    the next exercise or the next heading (the rule the student version and the grader
    share)."""
    blocks: dict[str, list[int]] = {}
    current: str | None = None
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            found = exercise_labels(cell.source)
            if found:
                current = found[-1]
                for label in found:
                    blocks.setdefault(label, [])
            elif _HEADING.search(cell.source) and "{solution}" not in cell.source:
                current = None
        if current is not None:
            blocks[current].append(index)
    return blocks


def self_check_problems(notebook: Any) -> list[str]:
    """Why a chapter's exercises would not work in its student version (empty: they
    would).

    Each exercise block needs a self-check (a ``check(`` call without ``strict=True``)
    for the student and a solution cell (``check(..., strict=True)``) that proves the
    check accepts the reference answer.
    """
    problems = []
    for label, cells in exercise_blocks(notebook).items():
        code = [
            notebook.cells[i] for i in cells if notebook.cells[i].cell_type == "code"
        ]
        if not any(
            "check(" in c.source and not _is_reference_solution(c) for c in code
        ):
            problems.append(
                f"{label}: no self-check (check(...) without strict=True) in its block"
            )
        if not any(_is_reference_solution(c) for c in code):
            problems.append(
                f"{label}: no solution cell (check(..., strict=True)) in its block"
            )
    return problems


def _self_check_cells(notebook: Any) -> dict[int, int | None]:
    """For each cell index inside an exercise block: the index of that block's first
    self-check (a ``check(`` call without ``strict=True``), or ``None`` if it has
    none."""
    first: dict[int, int | None] = {}
    for cells in exercise_blocks(notebook).values():
        checks = [
            i
            for i in cells
            if notebook.cells[i].cell_type == "code"
            and "check(" in notebook.cells[i].source
            and not _is_reference_solution(notebook.cells[i])
        ]
        for i in cells:
            first[i] = min(checks) if checks else None
    return first


def student_notebook(notebook: Any, chapter: str) -> Any:
    """The student version of a chapter notebook (see the module docstring); a new
    object.

    Inside an exercise block: a solution cell (``strict=True``) after the block's
    self-check is removed; a hidden cell, or a solution cell the self-check needs (one
    that comes before it, e.g. computing the reference and checking it at once), is
    replaced by a call that runs the book's own copy out of sight (:func:`run_hidden`).
    Outside exercise blocks only solution cells are removed.
    """
    import copy

    import nbformat

    notebook = copy.deepcopy(notebook)
    first_check = _self_check_cells(notebook)
    labels: list[str] = []
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            labels += exercise_labels(cell.source)
            text = strip_solutions(cell.source)
            if not text.strip():
                continue
            cell.source = text
            cells.append(cell)
            continue
        in_block = index in first_check
        check_at = first_check.get(index)
        solution = _is_reference_solution(cell)
        if solution and (not in_block or (check_at is not None and index > check_at)):
            continue  # the solution itself: nothing later needs it
        if in_block and (solution or _tags(cell) & HIDDEN_TAGS):
            if not cell.get("id"):
                raise DataFormatError(
                    f"{chapter}: a hidden exercise cell has no cell id "
                    "(nbformat >= 4.5 gives every cell one)"
                )
            cell.source = _run_hidden_source(chapter, cell.id)
            cell.metadata["tags"] = sorted(_tags(cell) - HIDDEN_TAGS)
            cell.outputs = []
        cells.append(cell)
    if not labels:
        raise ConfigError(
            f"{chapter} has no {{exercise}} directive: nothing for a student to do"
        )
    note = nbformat.v4.new_markdown_cell(
        "*Student version: the solutions are removed. Fill in each stub, then run the "
        "cell "
        "below it: the self-check says whether your answer is right. Your notebook is "
        "graded "
        "by the same checks (`python -m pulse_lib.course grade`).*"
    )
    first_markdown = next(
        (i for i, c in enumerate(cells) if c.cell_type == "markdown"), -1
    )
    cells.insert(first_markdown + 1, note)
    notebook.cells = cells
    notebook.metadata["pulse_course"] = {"chapter": chapter, "exercises": labels}
    return notebook


def write_student_versions(
    chapters: Sequence[str] = (), out: Path | None = None, root: Path | None = None
) -> list[Path]:
    """Write the student version of each chapter (all of ``_toc.yml`` by default)."""
    import nbformat

    from pulse_lib.io import atomic_write
    from pulse_lib.runner import resolve_chapters

    root = root or repo_root()
    out = out or root / STUDENT_DIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in resolve_chapters(root, chapters):
        source = nbformat.read(root / "chapters" / f"{chapter}.ipynb", as_version=4)
        student = student_notebook(source, chapter)
        target = out / f"{chapter}.ipynb"
        with atomic_write(target, "w") as handle:
            handle.write(nbformat.writes(student))
        written.append(target)
    return written


def _sources_dir() -> Path:
    override = os.environ.get(SOURCES_ENV)
    return Path(override) if override else repo_root() / "chapters"


def run_hidden(chapter: str, cell_id: str) -> None:
    """Run the book's own copy of a hidden cell of ``chapter`` in the calling notebook.

    Student notebooks call this where a chapter computes a self-check's reference out of
    sight. The cell is read from the book's ``chapters/`` folder (or
    ``$PULSE_COURSE_SOURCES``) and runs in the notebook's namespace, IPython magics
    included.
    """
    import nbformat

    path = _sources_dir() / f"{chapter}.ipynb"
    if not path.is_file():
        raise ConfigError(
            f"cannot find the chapter {path} this student notebook was made from"
        )
    cells = [
        c for c in nbformat.read(path, as_version=4).cells if c.get("id") == cell_id
    ]
    if not cells:
        raise ConfigError(
            f"cell {cell_id!r} is no longer in {path.name}: the chapter changed since "
            "this "
            "student notebook was written; write it again (python -m pulse_lib.course "
            "student)"
        )
    source = cells[0].source
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - notebooks always run under IPython
        shell = None
    if shell is not None:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(source)
        namespace = shell.user_ns
    else:
        import __main__

        namespace = __main__.__dict__
    # A hidden cell says nothing to the student (a reference check would print
    # "correct."
    # under an untouched stub); its output is shown only if it fails.
    import contextlib
    import io

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            # the chapter's own hidden cell, run as the notebook would run it
            exec(  # noqa: S102
                compile(source, f"<{chapter} hidden cell {cell_id}>", "exec"), namespace
            )
    except Exception:
        sys.stdout.write(printed.getvalue())
        raise


@dataclasses.dataclass
class ExerciseGrade:
    """Points of one exercise and what its self-checks said."""

    label: str
    points: float  # 0..1: the share of this exercise's self-checks that passed
    checks: list[
        dict[str, Any]
    ]  # the check log lines recorded in this exercise's block


@dataclasses.dataclass
class NotebookGrade:
    """A graded notebook: points per exercise, total, and cells that raised."""

    notebook: str
    exercises: list[ExerciseGrade]
    errors: int  # cells that raised (the notebook ran on regardless)

    @property
    def points(self) -> float:
        return sum(e.points for e in self.exercises)

    @property
    def max_points(self) -> int:
        return len(self.exercises)


def _marker_cell(label: str | None) -> Any:
    import nbformat

    value = "None" if label is None else json.dumps(label)
    return nbformat.v4.new_code_cell(
        "import pulse_lib.exercises as _pulse_grader\n_pulse_grader.current_exercise "
        f"= {value}",
        metadata={"tags": ["pulse-grader"]},
    )


def grading_notebook(notebook: Any, profile: str = "ci") -> tuple[Any, list[str]]:
    """A copy of ``notebook`` ready to grade: ``profile`` injected after the
    ``parameters`` cell and a marker cell at each exercise block; returns it and the
    exercise labels."""
    import copy

    import nbformat

    notebook = copy.deepcopy(notebook)
    cells, labels = [], []
    for cell in notebook.cells:
        cells.append(cell)
        if cell.cell_type == "markdown":
            found = exercise_labels(cell.source)
            if found:
                labels += found
                cells.append(_marker_cell(found[-1]))
            elif _HEADING.search(cell.source) and "{solution}" not in cell.source:
                cells.append(_marker_cell(None))
        elif "parameters" in _tags(cell):
            cells.append(
                nbformat.v4.new_code_cell(
                    f"profile = {profile!r}", metadata={"tags": ["injected-parameters"]}
                )
            )
    if not any(
        "injected-parameters" in _tags(c) for c in cells
    ):  # parameters cell deleted
        cells.insert(
            0,
            nbformat.v4.new_code_cell(
                f"profile = {profile!r}", metadata={"tags": ["injected-parameters"]}
            ),
        )
    notebook.cells = cells
    return notebook, labels


def grade_notebook(
    path: Path,
    *,
    reference: bool = False,
    timeout: int = 900,
    profile: str = "ci",
    root: Path | None = None,
) -> NotebookGrade:
    """Execute ``path`` and score its exercises from their self-checks (see the module
    doc).

    ``reference=True`` scores the reference checks (``strict=True``) instead of the
    student's.
    """
    import nbformat
    from nbclient import NotebookClient

    from pulse_lib.runner import KERNEL_ENV

    root = root or repo_root()
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    try:
        source = nbformat.read(path, as_version=4)
    except Exception as exc:
        raise DataFormatError(f"{path} is not a readable notebook: {exc}") from exc
    notebook, labels = grading_notebook(source, profile)
    if not labels:
        raise ConfigError(f"{path} has no {{exercise}} directive: nothing to grade")
    with tempfile.TemporaryDirectory(prefix="pulse-grade-") as tmp:
        log = Path(tmp) / "checks.jsonl"
        saved = {
            key: os.environ.get(key) for key in [*KERNEL_ENV, "PULSE_EXERCISE_LOG"]
        }
        os.environ.update(KERNEL_ENV)
        os.environ["PULSE_EXERCISE_LOG"] = str(log)
        os.environ.setdefault("PULSE_BOOK_ROOT", str(root))
        try:
            client = NotebookClient(
                notebook,
                timeout=timeout,
                kernel_name="python3",
                allow_errors=True,
                resources={"metadata": {"path": str(root / "chapters")}},
            )
            client.execute()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        records = (
            [json.loads(line) for line in log.read_text().splitlines()]
            if log.is_file()
            else []
        )
    errors = sum(
        1
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    )
    grades = []
    for label in labels:
        mine = [
            r
            for r in records
            if r["exercise"] == label and bool(r["reference"]) == reference
        ]
        points = (
            sum(r["status"] == "correct" for r in mine) / len(mine) if mine else 0.0
        )
        grades.append(ExerciseGrade(label, round(points, 4), mine))
    return NotebookGrade(str(path), grades, errors)


def _print_grade(grade: NotebookGrade) -> None:
    print(
        f"\n{grade.notebook}: {grade.points:g} / {grade.max_points} points"
        + (f" ({grade.errors} cell(s) raised)" if grade.errors else "")
    )
    for exercise in grade.exercises:
        said = (
            "; ".join(
                f"{c['status']}" + (f" ({c['reason']})" if c.get("reason") else "")
                for c in exercise.checks
            )
            or "no self-check ran"
        )
        print(f"  {exercise.label:<28} {exercise.points:>5g}  {said[:100]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pulse_lib.course",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    student = sub.add_parser("student", help="write the student version of chapters")
    student.add_argument(
        "chapters", nargs="*", help="chapter stems or numbers (default: all)"
    )
    student.add_argument(
        "--out", type=Path, default=None, help=f"folder (default: {STUDENT_DIR})"
    )
    grade = sub.add_parser("grade", help="grade filled-in student notebooks")
    grade.add_argument(
        "notebooks", nargs="+", help="notebooks (with --reference: chapters)"
    )
    grade.add_argument(
        "--reference",
        action="store_true",
        help="grade the book's chapters by their reference solutions",
    )
    grade.add_argument(
        "--json", type=Path, default=None, help="also write the grades as JSON"
    )
    grade.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    try:
        if args.command == "student":
            for path in write_student_versions(args.chapters, args.out):
                print(path)
            return 0
        root = repo_root()
        if args.timeout <= 0:
            raise ConfigError(
                f"--timeout must be a positive number of seconds, got {args.timeout}"
            )
        if args.reference:
            from pulse_lib.runner import resolve_chapters

            paths = [
                root / "chapters" / f"{c}.ipynb"
                for c in resolve_chapters(root, args.notebooks)
            ]
        else:
            paths = [Path(p) for p in args.notebooks]
        grades = []
        for path in paths:
            result = grade_notebook(
                path, reference=args.reference, timeout=args.timeout, root=root
            )
            _print_grade(result)
            grades.append(result)
        if args.json:
            from pulse_lib.io import atomic_write

            payload = [
                {
                    **dataclasses.asdict(g),
                    "points": g.points,
                    "max_points": g.max_points,
                }
                for g in grades
            ]
            with atomic_write(args.json, "w") as handle:
                handle.write(json.dumps(payload, indent=2))
    except (ConfigError, DataFormatError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
