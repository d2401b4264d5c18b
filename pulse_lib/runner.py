"""Execute the book's chapters with papermill and build the HTML book from the executed
copies.

::

    python -m pulse_lib.runner run   [--profile ci|full] [--jobs N] [--force] [CHAPTER
    ...]
    python -m pulse_lib.runner build                       # Jupyter Book from
    _build/executed
    python -m pulse_lib.runner book  [--profile ci|full]   # run, then build

Chapters are the notebooks under ``chapters/`` listed in ``_toc.yml``; name one by its
file stem (``01_marketing_funnel``) or its number (``01``). Each chapter runs in its own
kernel with ``profile`` injected after its ``parameters`` cell, one torch/BLAS thread,
and ``chapters/`` as working directory. Executed notebooks go to
``_build/executed/chapters/`` beside a copy of the book's pages and configuration, which
is what Jupyter Book renders: no notebook runs twice. A chapter whose notebook, profile,
library, shipped data, benchmark results and pinned versions are unchanged since its
last successful run is not executed again (``--force`` overrides).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pulse_lib.book import PROFILE_NAMES, repo_root
from pulse_lib.errors import ConfigError
from pulse_lib.validation import check_integer

BUILD_DIR = "_build"
STAGE_DIR = "_build/executed"
FAILED_DIR = "_build/failed"
HTML_DIR = "_build/html"
#: Copied from the repository into the staging folder the book is built from.
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book")
#: Environment of every chapter kernel: one thread each, so chapters can run side by
#: side.
KERNEL_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PULSE_TORCH_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "TQDM_MININTERVAL": "5",
    # Without ipywidgets (CI), tqdm.auto falls back to text bars after warning about it;
    # the
    # text bars are what we want in the executed pages, the warning is noise.
    "PYTHONWARNINGS": "ignore:IProgress not found",
}


@dataclasses.dataclass
class ChapterResult:
    """Outcome of one chapter: ``ok``, ``cached`` or ``failed`` (with where and why)."""

    chapter: str
    status: str
    seconds: float
    detail: str = ""


def _walk_toc(node: object, where: str = "_toc.yml") -> list[str]:
    files: list[str] = []
    if not isinstance(node, dict):
        raise ConfigError(
            f"{where}: an entry must be a mapping with 'file', 'parts', "
            "'chapters' or "
            f"'sections', got {node!r:.80}"
        )
    if "file" in node:
        if not isinstance(node["file"], str) or not node["file"].strip():
            raise ConfigError(
                f"{where}: 'file' must be a path like chapters/01_x, got "
                f"{node['file']!r}"
            )
        files.append(node["file"])
    for key in ("parts", "chapters", "sections"):
        children = node.get(key) or []
        if not isinstance(children, list):
            raise ConfigError(
                f"{where}: {key!r} must be a list of entries, got {children!r:.80}"
            )
        for i, child in enumerate(children):
            files += _walk_toc(child, f"{where}: {key}[{i}]")
    return files


def toc_chapters(root: Path) -> list[str]:
    """File stems of the notebooks in ``chapters/`` that ``_toc.yml`` lists, in book
    order.

    A missing or malformed ``_toc.yml`` (not YAML, not a mapping, an entry of the wrong
    kind) and a notebook listed twice are :class:`ConfigError` naming the file and the
    entry.
    """
    toc_path = root / "_toc.yml"
    if not toc_path.is_file():
        raise ConfigError(
            f"no table of contents at {toc_path}: is {root} the book's checkout?"
        )
    try:
        toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{toc_path} is not valid YAML: {exc}") from None
    stems: list[str] = []
    for entry in _walk_toc(toc):
        path = Path(entry)
        if path.parts[0] == "chapters":
            notebook = root / path.with_suffix(".ipynb")
            if not notebook.is_file():
                raise ConfigError(
                    f"_toc.yml lists {entry} but {notebook} does not exist"
                )
            if path.stem in stems:
                raise ConfigError(f"_toc.yml lists {entry} twice")
            stems.append(path.stem)
    return stems


def resolve_chapters(root: Path, requested: Sequence[str]) -> list[str]:
    """Map names or numbers (``01``) to chapter stems; unknown names are an error."""
    known = toc_chapters(root)
    if not requested:
        return known
    if isinstance(requested, str):
        raise ConfigError(
            f"chapters must be a list of names, got the string {requested!r}"
        )
    chosen: list[str] = []
    asked: dict[str, str] = {}
    for name in requested:
        name = Path(name).stem
        matches = [
            stem for stem in known if stem == name or stem.split("_", 1)[0] == name
        ]
        if len(matches) != 1:
            raise ConfigError(
                f"unknown chapter {name!r}; the book has: {', '.join(known)}"
            )
        if matches[0] in asked:  # two workers would write the same executed copy
            raise ConfigError(
                f"chapter {matches[0]} is requested twice (as "
                f"{asked[matches[0]]!r} "
                f"and {name!r})"
            )
        asked[matches[0]] = name
        chosen.append(matches[0])
    return chosen


def _hash_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def inputs_key(root: Path, chapter: str, profile: str) -> str:
    """Hash of what a chapter's output depends on: notebook, profile, library, shipped
    data, the benchmark results chapters display, and the pinned versions."""
    library = [
        p
        for p in (root / "pulse_lib").rglob("*")
        if p.is_file() and p.suffix in (".py", ".stan")
    ]
    data = [
        p
        for p in (root / "datasets").rglob("*")
        if p.is_file() and "generated" not in p.relative_to(root / "datasets").parts
    ]
    data += sorted((root / "benchmarks" / "results").glob("*.json"))
    digest = hashlib.sha256()
    digest.update(profile.encode())
    digest.update((root / "chapters" / f"{chapter}.ipynb").read_bytes())
    digest.update(_hash_files(library).encode())
    digest.update(_hash_files(data).encode())
    pins = root / "requirements" / "ci.txt"
    if pins.is_file():  # new package versions can change a chapter's output
        digest.update(pins.read_bytes())
    return digest.hexdigest()


def _cached(output: Path, key: str) -> bool:
    if not output.is_file():
        return False
    import nbformat

    try:
        meta = nbformat.read(output, as_version=4).metadata.get("pulse_book", {})
    except Exception:  # noqa: BLE001  (an unreadable copy is simply not cached)
        return False
    return meta.get("inputs_key") == key


def _flatten(value: object, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, float):
        return [(prefix, f"{value:,.4g}")]
    if isinstance(value, list) and len(value) > 8:
        return [(prefix, f"list of {len(value)} values")]
    return [(prefix, str(value))]


def benchmarks_markdown(root: Path) -> str:
    """One table per file in ``benchmarks/results/``: every measurement as it was
    recorded."""
    files = sorted((root / "benchmarks" / "results").glob("*.json"))
    if not files:
        return "No benchmark results have been recorded yet.\n"
    parts = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"benchmark result {path} is not valid JSON: {exc}"
            ) from exc
        rows = "\n".join(
            f"| `{key}` | {value.replace('|', '/')} |" for key, value in _flatten(data)
        )
        parts.append(
            f"## {path.stem}\n\nFrom `benchmarks/results/{path.name}`.\n\n| "
            f"measure | value |\n| --- | --- |\n{rows}\n"
        )
    return "\n".join(parts)


def chapter_times_markdown(root: Path) -> str:
    """A table of the executed chapters: profile and seconds of their last run (this
    build)."""
    import nbformat

    rows = []
    for chapter in toc_chapters(root):
        executed = root / STAGE_DIR / "chapters" / f"{chapter}.ipynb"
        if not executed.is_file():
            continue
        try:
            meta = nbformat.read(executed, as_version=4).metadata.get("pulse_book", {})
        except Exception:  # noqa: BLE001, S112  (an unreadable copy has no row)
            continue
        if "seconds" in meta:
            rows.append(
                f"| {chapter} | {meta.get('profile', '?')} | "
                f"{float(meta['seconds']):.0f} s |"
            )
    if not rows:
        return "No chapter has been executed in this build yet.\n"
    return (
        "| chapter | profile | seconds (this build's run) |\n| --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n"
    )


def stage_book(root: Path) -> Path:
    """Copy the book's pages and configuration into the staging folder; return it."""
    stage = root / STAGE_DIR
    (stage / "chapters").mkdir(parents=True, exist_ok=True)
    for name in BOOK_SOURCES:
        source, target = root / name, stage / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    (stage / "book" / "benchmarks_table.md").write_text(benchmarks_markdown(root))
    (stage / "book" / "chapter_times_table.md").write_text(chapter_times_markdown(root))
    return stage


def _describe_failed_cell(
    executed: Path, cell_index: int, exec_count: int | None
) -> str:
    """Name the failing cell as it is numbered in the source notebook (papermill adds
    one)."""
    import nbformat

    try:
        cells = nbformat.read(executed, as_version=4).cells
    except Exception:  # noqa: BLE001  (fall back to the plain cell number)
        return f"cell {cell_index} of the executed copy (execution count {exec_count})"
    injected = [
        i
        for i, c in enumerate(cells)
        if "injected-parameters" in c.metadata.get("tags", [])
    ]
    source_index = cell_index - sum(1 for i in injected if i < cell_index)
    first_line = (
        cells[cell_index].source.strip().splitlines()[0]
        if cells[cell_index].source.strip()
        else ""
    )
    return (
        f"cell {source_index} (execution count {exec_count}, starting "
        f"`{first_line[:60]}`)"
    )


#: Text up to a carriage return that more text on the same line overwrites (a progress
#: bar's
#: earlier states); the same rule as nbconvert's ``CoalesceStreamsPreprocessor``.
_OVERWRITTEN = re.compile(r"[^\n]*\r(?=[^\n])")


def tidy_outputs(notebook: Any) -> Any:
    """Make an executed notebook read like a finished run: what the rendered page shows.

    - Consecutive ``stdout`` (or ``stderr``) chunks of a cell become one block, and a
      line a progress bar rewrote with ``\\r`` keeps only its final state: a ``tqdm``
      bar shows as one line (``100%|...|``) instead of one block per refresh; a bar that
      erased itself (``leave=False``) leaves nothing. Readers running the notebook still
      see the live bar: only the executed copy the book renders is tidied.
    - Papermill's injected-parameters cell gets the ``remove-cell`` tag: the page shows
      the chapter's own ``parameters`` cell, not the runner's plumbing.
    """
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        merged: list[Any] = []
        for output in cell.get("outputs", []):
            last = merged[-1] if merged else None
            if (
                output.output_type == "stream"
                and last is not None
                and last.output_type == "stream"
                and last.name == output.name
            ):
                last.text += output.text
            else:
                merged.append(output)
        tidy = []
        for output in merged:
            if output.output_type == "stream":
                text = _OVERWRITTEN.sub("", output.text.replace("\r\n", "\n"))
                text = text.replace("\r", "")
                if not text.strip():
                    continue
                output.text = text
            tidy.append(output)
        cell.outputs = tidy
    return notebook


def execute_chapter(
    root: str, chapter: str, profile: str, force: bool = False
) -> ChapterResult:
    """Execute one chapter with papermill (runs in a worker process)."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    root_path = Path(root)
    source = root_path / "chapters" / f"{chapter}.ipynb"
    output = root_path / STAGE_DIR / "chapters" / f"{chapter}.ipynb"
    failed = root_path / FAILED_DIR / f"{chapter}.ipynb"
    key = inputs_key(root_path, chapter, profile)
    if not force and _cached(output, key):
        return ChapterResult(chapter, "cached", 0.0)
    os.environ.update(KERNEL_ENV)
    os.environ.setdefault("PULSE_BOOK_ROOT", str(root_path))
    failed.parent.mkdir(parents=True, exist_ok=True)
    # a stale copy must not be rendered if this run fails
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(failed),
            parameters={"profile": profile},
            cwd=str(source.parent),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
            report_mode=False,
        )
    except PapermillExecutionError as exc:
        seconds = time.perf_counter() - start
        where = _describe_failed_cell(failed, exc.cell_index, exc.exec_count)
        return ChapterResult(
            chapter,
            "failed",
            seconds,
            f"{where}: {exc.ename}: {exc.evalue}; executed copy in {failed}",
        )
    except Exception as exc:  # noqa: BLE001  (kernel died, notebook unreadable, ...)
        return ChapterResult(
            chapter,
            "failed",
            time.perf_counter() - start,
            f"{type(exc).__name__}: {exc}; partial copy (if any) in {failed}",
        )
    seconds = time.perf_counter() - start
    notebook = tidy_outputs(nbformat.read(failed, as_version=4))
    notebook.metadata["pulse_book"] = {
        "inputs_key": key,
        "profile": profile,
        "seconds": round(seconds, 1),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".ipynb.part")
    nbformat.write(notebook, tmp)
    os.replace(tmp, output)
    failed.unlink(missing_ok=True)
    return ChapterResult(chapter, "ok", seconds)


def run_chapters(
    chapters: Sequence[str] = (),
    profile: str = "ci",
    jobs: int | None = None,
    force: bool = False,
    root: Path | None = None,
) -> list[ChapterResult]:
    """Execute chapters (all of ``_toc.yml`` by default) and print a time table."""
    if profile not in PROFILE_NAMES:
        raise ConfigError(
            f"unknown profile {profile!r}; choose one of {list(PROFILE_NAMES)}"
        )
    if jobs is not None:
        check_integer("jobs", jobs, low=1)
    root = root or repo_root()
    names = resolve_chapters(root, chapters)
    stage_book(root)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(names)))
    print(
        f"executing {len(names)} chapter(s), profile {profile!r}, {jobs} at a time",
        flush=True,
    )
    results: list[ChapterResult] = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(execute_chapter, str(root), name, profile, force): name
            for name in names
        }
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results.append(result)
            print(
                f"  {result.status:>6}  {result.chapter}  {result.seconds:7.1f} s  "
                f"{result.detail}",
                flush=True,
            )
    results.sort(key=lambda r: names.index(r.chapter))
    print_table(results)
    return results


def print_table(results: Sequence[ChapterResult]) -> None:
    width = max([len(r.chapter) for r in results] + [7])
    print(f"\n{'chapter':<{width}}  status   seconds")
    for r in results:
        print(f"{r.chapter:<{width}}  {r.status:<7} {r.seconds:8.1f}")
    print(f"{'total':<{width}}  {'':<7} {sum(r.seconds for r in results):8.1f}")
    for r in results:
        if r.status == "failed":
            print(f"\nFAILED {r.chapter} at {r.detail}", file=sys.stderr)


def _drop_from_toc(node: Any, missing: set[str]) -> Any:
    """A copy of a ``_toc.yml`` tree without the entries of ``missing`` chapters (and
    parts left empty by that)."""
    if isinstance(node, list):
        kept = [_drop_from_toc(item, missing) for item in node]
        return [item for item in kept if item is not None]
    if not isinstance(node, dict):
        return node
    if "file" in node and Path(str(node["file"])).stem in missing:
        return None
    copy = {key: _drop_from_toc(value, missing) for key, value in node.items()}
    for key in ("parts", "chapters", "sections"):
        if key in node and not copy[key]:
            if "file" not in node:
                return None
            del copy[key]
    return copy


def build_html(root: Path | None = None, partial: bool = False) -> Path:
    """Render the staged, executed book with Jupyter Book (Sphinx warnings are errors).

    ``partial=True`` renders only the chapters executed so far (a quick look while
    writing one chapter); the full book needs every chapter of ``_toc.yml``.
    """
    root = root or repo_root()
    stage = stage_book(root)
    missing = [
        c
        for c in toc_chapters(root)
        if not (stage / "chapters" / f"{c}.ipynb").is_file()
    ]
    if missing and not partial:
        raise ConfigError(
            f"chapters not executed yet: {missing}; run `python -m "
            "pulse_lib.runner run` first"
        )
    if missing:
        toc = _drop_from_toc(
            yaml.safe_load((root / "_toc.yml").read_text()), set(missing)
        )
        (stage / "_toc.yml").write_text(
            yaml.safe_dump(toc, sort_keys=False, allow_unicode=True)
        )
        print(
            f"partial book: leaving out {len(missing)} chapter(s) not executed yet",
            flush=True,
        )
    cmd = [
        "jupyter-book",
        "build",
        str(stage),
        "--path-output",
        str(root),
        "--warningiserror",
        "--nitpick",
        "--keep-going",
        "--quiet",
    ]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    html = root / HTML_DIR
    print(f"book: {html / 'index.html'}")
    return html


def _positive_int(text: str) -> int:
    """``--jobs``: a whole number >= 1 (argparse reports the error with the option's
    name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number >= 1, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pulse_lib.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "book"):
        cmd = sub.add_parser(
            name,
            help="execute chapters"
            + (" and build the HTML book" if name == "book" else ""),
        )
        cmd.add_argument(
            "chapters",
            nargs="*",
            help="chapter stems or numbers (default: all in _toc.yml)",
        )
        cmd.add_argument(
            "--profile",
            default="ci",
            help="ci (small, CPU minutes) or full (the reproduction, GPU)",
        )
        cmd.add_argument(
            "--jobs",
            type=_positive_int,
            default=None,
            help="chapters run at once (default: CPU cores)",
        )
        cmd.add_argument(
            "--force", action="store_true", help="re-execute even when nothing changed"
        )
    build = sub.add_parser(
        "build", help="build the HTML book from the executed chapters"
    )
    build.add_argument(
        "--partial",
        action="store_true",
        help="render only the chapters executed so far (a draft, not the book)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command in ("run", "book"):
            results = run_chapters(args.chapters, args.profile, args.jobs, args.force)
            if any(r.status == "failed" for r in results):
                return 1
        if args.command in ("build", "book"):
            build_html(partial=getattr(args, "partial", False))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(
            f"error: the book build failed ({exc.returncode}); see the Sphinx "
            "messages above",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
