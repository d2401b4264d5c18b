"""Does the book still run as its readers' Python moves? A compatibility check on a fresh venv.

Builds a virtual environment with another Python (3.12 by default, the Python of Colab),
installs the newest releases ``pyproject.toml``'s ranges allow (``--set newest``; or the pinned
CI set, ``--set pinned``; or the lower bounds, ``--set lowest``), installs the book from a
clean copy of the committed tree, *non-editable*, the way a Colab reader does, then runs the
unit tests (``-m "not book"``) and chapters 02, 03, 05, 07 and 10 (the Bayesian and offline-RL
chapters) in the ``ci`` profile, from outside the copy (``PULSE_BOOK_ROOT`` points at it), so
the installed package, not the source tree, is what runs. It writes what pip resolved and each
outcome to ``benchmarks/results/compat.json``.

    nice -n 10 python benchmarks/compat.py                 # Python 3.12, newest (30-60 min)
    python benchmarks/compat.py --set pinned --python python3.11
    python benchmarks/compat.py --quick --out /tmp/c.json  # smoke test: this interpreter, no
                                                           # new venv, a few unit tests, no chapter

Torch: pip on Python 3.12 resolves PyPI's default Linux wheel of torch, the CUDA build (plus
the ``nvidia-*`` wheels); a CPU-only wheel would need PyTorch's own index. The result records
which build was installed (``torch_cuda``) and pip's machine-wide constraints, if any.
CmdStan is the one in ``~/.cmdstan`` (``python -m pulse_lib.stan install`` builds it once).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# machine.py writes with pulse_lib.io: importable from this checkout without installing it
# (the CI job runs this script with a bare Python plus numpy).
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from machine import RESULTS_DIR, machine_info, write_json

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ("02", "03", "05", "07", "10")
#: Chapters that fit a Stan model (they need CmdStan).
STAN_CHAPTERS = ("02", "03", "04", "05")
#: Versions the report lists first (the rest of ``pip list`` is kept as one list).
KEY_PACKAGES = (
    "pulse-lib", "numpy", "scipy", "pandas", "pyarrow", "xarray", "matplotlib", "torch", "gymnasium",
    "d3rlpy", "pymc", "pytensor", "arviz", "arviz-base", "arviz-stats", "arviz-plots", "nutpie",
    "numba", "cmdstanpy", "scikit-learn", "papermill", "ipykernel", "setuptools", "pytest",
)
#: obp (Parts V) is installed as `make setup` does: without its outdated pins.
OBP = "obp==0.5.7"
SETS = ("newest", "pinned", "lowest")


def find_python(name: str) -> str:
    """An interpreter by name (``python3.12``) that runs: on PATH (a pyenv shim may not), in
    /usr/bin, or under ~/.pyenv/versions; else a clear error."""
    version = name.removeprefix("python")
    candidates = [shutil.which(name), f"/usr/bin/{name}", f"/usr/local/bin/{name}"]
    candidates += [str(base / "bin" / name)
                   for base in sorted((Path.home() / ".pyenv" / "versions").glob(f"{version}*"), reverse=True)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            ok = subprocess.run([candidate, "-c", "import venv, ensurepip"], capture_output=True, check=False)
            if ok.returncode == 0:
                return candidate
    raise SystemExit(f"cannot find a working {name} on PATH, in /usr/bin or under ~/.pyenv/versions; "
                     "pass --python PATH")


def run(cmd: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, appending its output to ``log``; raise with the log's tail on failure."""
    with log.open("a") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True, check=False)
    if check and proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def source_info() -> dict[str, Any]:
    """The commit the check ran on, and whether the worktree had uncommitted changes."""
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
                "commit_date": git("log", "-1", "--format=%cI"), "uncommitted_changes": bool(dirty)}
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "branch": None, "commit_date": None, "uncommitted_changes": None}


def export_tree(target: Path) -> Path:
    """A clean copy of the committed tree (``git archive HEAD``): what a fresh clone holds."""
    archive = target.with_suffix(".tar")
    with archive.open("wb") as handle:
        subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, stdout=handle, check=True)
    target.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    archive.unlink()
    return target


def install_commands(py: str, book: Path, which: str) -> list[list[str]]:
    """The pip commands that build the environment for one package set."""
    pip = [py, "-m", "pip", "install", "--progress-bar", "off"]
    target = f"{book}[book,test,serve,scale]"
    if which == "newest":
        steps = [[*pip, "--upgrade", "--upgrade-strategy", "eager", target]]
    elif which == "pinned":
        steps = [[*pip, "-r", str(book / "requirements" / "ci.txt")], [*pip, target]]
    else:
        steps = [[*pip, "-r", str(book / "requirements" / "lowest.txt")], [*pip, target]]
    # the book itself again, from this copy: a reused venv must not keep an older build of it
    again = [*pip, "--no-deps", "--force-reinstall", str(book)]
    return [[*pip, "--upgrade", "pip"], *steps, again, [*pip, "--no-deps", "--ignore-requires-python", OBP]]


def probe(py: str, log: Path, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """What the environment resolved: every distribution, the key ones, torch's build, pip check."""
    out = subprocess.run([py, "-m", "pip", "list", "--format", "json"], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True).stdout
    versions = {d["name"].lower(): d["version"] for d in json.loads(out)}
    code = ("import json, platform, pulse_lib, torch; "
            "print(json.dumps({'python': platform.python_version(), 'pulse_lib': pulse_lib.__file__, "
            "'torch_cuda': torch.version.cuda}))")
    info = json.loads(subprocess.run([py, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                                     check=True).stdout.strip().splitlines()[-1])
    # A Colab reader who skips PULSE_BOOK_ROOT: does the installed package find the copy it was
    # installed from (pip's direct_url.json)? Run from outside the copy, without the variable.
    bare = {k: v for k, v in env.items() if k != "PULSE_BOOK_ROOT"}
    found = subprocess.run([py, "-c", "from pulse_lib import book; print(book.repo_root())"], cwd=cwd,
                           env=bare, capture_output=True, text=True, check=False)
    root_found = found.stdout.strip() if found.returncode == 0 else f"error: {found.stderr.strip()[-300:]}"
    check = subprocess.run([py, "-m", "pip", "check"], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    config = subprocess.run([py, "-m", "pip", "config", "list"], cwd=cwd, env=env, capture_output=True,
                            text=True, check=False).stdout
    constraints = [line.split("=", 1)[1].strip("'") for line in config.splitlines() if ".constraint=" in line]
    pinned = []
    for path in constraints:
        try:
            pinned += [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        except OSError:
            pass
    return {
        "python": info["python"],
        "pulse_lib_imported_from": info["pulse_lib"],
        "torch_cuda": info["torch_cuda"],
        "torch_build": "CPU-only wheel" if info["torch_cuda"] is None else f"CUDA {info['torch_cuda']} wheel (PyPI default)",
        "pip_machine_constraints": pinned,
        "repo_root_without_PULSE_BOOK_ROOT": root_found,
        # obp is installed without its (outdated) pins on purpose: its complaints are left out.
        "pip_check": [ln for ln in (check.stdout.strip() or check.stderr.strip()).splitlines()
                      if not ln.startswith("obp ")][:20],
        "key_packages": {name: versions.get(name) for name in KEY_PACKAGES},
        "all_packages": sorted(f"{k}=={v}" for k, v in versions.items()),
    }


def unit_tests(py: str, book: Path, log: Path, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Run the unit tests of the copy with the installed package; count the outcomes."""
    junit = log.parent / "junit.xml"
    # `python -m pytest` would put the working directory (the copy, with its pulse_lib/) first on
    # sys.path; the pytest script does not, so the tests import the installed package.
    script = Path(py).parent / "pytest"
    launcher = [str(script)] if script.is_file() else [py, "-m", "pytest"]
    cmd = [*launcher, "-q", "-p", "no:cacheprovider", "-m", "not book", f"--junitxml={junit}", *args.pytest_args]
    start = time.perf_counter()
    proc = run(cmd, log, cwd=book, env=env, check=False)
    seconds = time.perf_counter() - start
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    if junit.is_file():
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        for key in counts:
            counts[key] = int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            for bad in list(case.findall("failure")) + list(case.findall("error")):
                message = (bad.get("message") or "").splitlines()[0][:200] if bad.get("message") else ""
                failed.append(f"{case.get('classname')}::{case.get('name')}: {message}")
    return {
        "command": " ".join(["pytest", *cmd[len(launcher):]]).replace(str(junit), "junit.xml"),
        "status": "ok" if proc.returncode == 0 else "failed",
        "exit_code": proc.returncode,
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"] + counts["errors"],
        "skipped": counts["skipped"],
        "failures": failed[:30],
        "seconds": round(seconds, 1),
    }


DRIVER = """
import json, sys
from pulse_lib.runner import run_chapters
results = run_chapters(sys.argv[3:], profile="ci", jobs=int(sys.argv[2]), force=True)
with open(sys.argv[1], "w") as handle:
    json.dump([r.__dict__ for r in results], handle)
"""


def chapters(py: str, work: Path, log: Path, env: dict[str, str], names: list[str], jobs: int) -> dict[str, Any]:
    """Execute chapters with the installed runner (from outside the copy); one outcome each."""
    out = work / f"chapters-{'-'.join(names)}.json"
    out.unlink(missing_ok=True)
    proc = run([py, "-c", DRIVER, str(out), str(jobs), *names], log, cwd=work, env=env, check=False)
    if not out.is_file():
        return {name: {"status": "failed", "seconds": None, "detail": f"runner exited {proc.returncode} (see log)"}
                for name in names}
    return {r["chapter"]: {"status": r["status"], "seconds": round(r["seconds"], 1),
                           **({"detail": r["detail"][:400]} if r["detail"] else {})}
            for r in json.loads(out.read_text())}


def wait_for_cmdstan(py: str, env: dict[str, str], seconds: float) -> str:
    """The complete CmdStan the chapters will use; waits while another process is building it.

    Never starts a build itself: two CmdStan builds at once would stall a small machine.
    """
    code = "from pulse_lib.stan import find_existing; print(find_existing() or '')"
    deadline = time.monotonic() + seconds
    while True:
        found = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, check=False).stdout.strip()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit("no complete CmdStan found: run `python -m pulse_lib.stan install` first")
        print("waiting for a complete CmdStan (being built elsewhere?) ...", flush=True)
        time.sleep(30)


def harvest(work: Path, names: list[str]) -> dict[str, Any]:
    """Chapter outcomes a run left in its work directory, finished or not (for --report-from).

    A finished group of chapters left ``chapters-*.json``; a chapter that succeeded in a group
    still running left its executed copy (with its time) in ``_build/executed``; anything else
    is reported as not finished.
    """
    import nbformat

    found: dict[str, Any] = {}
    for path in sorted(work.glob("chapters-*.json")):
        for r in json.loads(path.read_text()):
            found[r["chapter"]] = {"status": r["status"], "seconds": round(r["seconds"], 1),
                                   **({"detail": r["detail"][:400]} if r["detail"] else {})}
    executed = work / "rl-marketing-book" / "_build" / "executed" / "chapters"
    for name in names:
        if any(key.startswith(name) for key in found):
            continue
        done = sorted(executed.glob(f"{name}_*.ipynb")) if executed.is_dir() else []
        if done:
            meta = nbformat.read(done[0], as_version=4).metadata.get("pulse_book", {})
            found[done[0].stem] = {"status": "ok", "seconds": meta.get("seconds")}
        else:
            found[name] = {"status": "not finished", "seconds": None,
                           "detail": "the run was stopped before this chapter finished (time limit)"}
    return {name: found[name] for name in sorted(found)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="python3.12", help="interpreter of the new venv (name or path)")
    parser.add_argument("--set", dest="which", choices=SETS, default="newest", help="which package versions")
    parser.add_argument("--chapters", nargs="*", default=list(CHAPTERS), help="chapters to execute (ci profile)")
    parser.add_argument("--venv", type=Path, default=None, help="where to build the venv (default: a cache dir)")
    parser.add_argument("--jobs", type=int, default=2, help="chapters executed at once")
    parser.add_argument("--serial", action="store_true", help="unit tests first, then chapters (default: side by side)")
    parser.add_argument("--reuse-venv", action="store_true", help="install into an existing venv")
    parser.add_argument("--wait-cmdstan", type=float, default=1800,
                        help="seconds to wait for a CmdStan another process is building")
    parser.add_argument("--pytest-args", nargs="*", default=[], help="extra pytest arguments")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: this interpreter, no install, a few unit tests, no chapter")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "compat.json")
    parser.add_argument("--report-from", type=Path, default=None,
                        help="write the result from a (stopped) run's work directory, as far as it got")
    parser.add_argument("--source-commit", default=None, help="with --report-from: the commit that run copied")
    args = parser.parse_args(argv)
    if args.report_from is not None:
        return report_from(args)

    start = time.perf_counter()
    src = source_info()
    work = Path(tempfile.mkdtemp(prefix="pulse-compat-"))
    log = work / "compat.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PULSE_TORCH_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)  # nothing but the installed package
    install_seconds = 0.0
    if args.quick:
        py, book = sys.executable, ROOT
        names: list[str] = []
        args.pytest_args = ["tests/test_bayes_compat.py", "-k", "summary or containers or hdi", *args.pytest_args]
        env["PULSE_BOOK_ROOT"] = str(ROOT)
        env["PYTHONPATH"] = str(ROOT)  # this checkout, whether or not it is installed
    else:
        interpreter = args.python if os.sep in args.python else find_python(args.python)
        venv = args.venv or Path.home() / ".cache" / "pulse_lib" / "compat" / f"{Path(interpreter).name}-{args.which}"
        book = export_tree(work / "rl-marketing-book")
        env["PULSE_BOOK_ROOT"] = str(book)
        if venv.exists() and not args.reuse_venv:
            shutil.rmtree(venv)
        if not venv.exists():
            run([interpreter, "-m", "venv", str(venv)], log)
        py = str(venv / "bin" / "python")
        print(f"installing the {args.which} set into {venv} (log: {log}) ...", flush=True)
        t0 = time.perf_counter()
        for cmd in install_commands(py, book, args.which):
            run(cmd, log, cwd=work, env=env)
        install_seconds = time.perf_counter() - t0
        # papermill's kernel "python3" must be this venv's Python, whatever kernels the user has.
        run([py, "-m", "ipykernel", "install", "--prefix", str(venv), "--name", "python3"], log, env=env)
        env["JUPYTER_PATH"] = str(venv / "share" / "jupyter")
        names = list(args.chapters)
    resolved = probe(py, log, work, env)
    print(f"resolved: {json.dumps(resolved['key_packages'])}", flush=True)
    # The unit tests and the chapters are independent: side by side unless --serial. The
    # chapters without Stan start at once; the unit tests and the Stan chapters wait for a
    # complete CmdStan (never building a second one beside another build).
    stan_free = [n for n in names if n not in STAN_CHAPTERS]
    with_stan = [n for n in names if n in STAN_CHAPTERS]

    def stan_part() -> tuple[dict[str, Any], dict[str, Any]]:
        if not args.quick:
            wait_for_cmdstan(py, env, args.wait_cmdstan)
        if args.serial or not with_stan:
            result = unit_tests(py, book, work / "tests.log", env, args)
            return result, chapters(py, work, work / "chapters-stan.log", env, with_stan, args.jobs) if with_stan else {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as inner:
            job = inner.submit(chapters, py, work, work / "chapters-stan.log", env, with_stan, args.jobs)
            result = unit_tests(py, book, work / "tests.log", env, args)
            return result, job.result()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1 if args.serial else 2) as pool:
        free_job = (pool.submit(chapters, py, work, work / "chapters-free.log", env, stan_free, 1)
                    if stan_free else None)
        tests, ran = pool.submit(stan_part).result()
        print(f"unit tests: {tests['status']} ({tests['passed']} passed, {tests['failed']} failed, "
              f"{tests['skipped']} skipped, {tests['seconds']} s)", flush=True)
        if free_job:
            ran = {**free_job.result(), **ran}
    ran = {name: ran[name] for name in sorted(ran)}
    for name, outcome in ran.items():
        print(f"chapter {name}: {outcome['status']} {outcome['seconds']} s", flush=True)
    ok = tests["status"] == "ok" and all(o["status"] == "ok" for o in ran.values())
    payload = {
        "benchmark": "compat",
        "machine": machine_info(),
        "settings": {"python": args.python if not args.quick else sys.executable, "set": args.which,
                     "profile": "ci", "chapters": " ".join(names), "chapter_jobs": args.jobs,
                     "tests_beside_chapters": not args.serial, "quick": args.quick,
                     "install": "non-editable `pip install <copy>[book,test,serve,scale]` of `git archive HEAD`"
                                + (", obp without its pins" if not args.quick else " (quick: not installed)")},
        "source": src,
        "environment": resolved,
        "results": {"outcome": "pass" if ok else "fail", "install_seconds": round(install_seconds, 1),
                    "total_seconds": round(time.perf_counter() - start, 1), "unit_tests": tests,
                    "chapters": ran},
    }
    print(f"wrote {write_json(args.out, payload)}; outcome {payload['results']['outcome']}; logs in {work}")
    return 0 if ok else 1


def report_from(args: argparse.Namespace) -> int:
    """``--report-from WORK``: the versions of the run's venv and the outcomes it reached."""
    work = args.report_from
    interpreter = args.python if os.sep in args.python else find_python(args.python)
    venv = args.venv or Path.home() / ".cache" / "pulse_lib" / "compat" / f"{Path(interpreter).name}-{args.which}"
    py = str(venv / "bin" / "python")
    env = {**os.environ, "PULSE_BOOK_ROOT": str(work / "rl-marketing-book")}
    env.pop("PYTHONPATH", None)
    resolved = probe(py, work / "report.log", work, env)
    src = source_info()
    if args.source_commit:
        full = git("rev-parse", args.source_commit)
        src = {"commit": full, "branch": src["branch"], "commit_date": git("log", "-1", "--format=%cI", full),
               "uncommitted_changes": False}
    junit = work / "junit.xml"
    if junit.is_file():
        tests = unit_tests_from_junit(junit)
    else:
        tests = {"status": "not finished", "detail": "stopped before the unit tests finished (time limit)"}
    ran = harvest(work, list(args.chapters))
    finished = tests.get("status") != "not finished" and all(o["status"] != "not finished" for o in ran.values())
    ok = tests.get("status") == "ok" and all(o["status"] == "ok" for o in ran.values())
    payload = {
        "benchmark": "compat",
        "machine": machine_info(),
        "settings": {"python": args.python, "set": args.which, "profile": "ci", "chapters": " ".join(args.chapters),
                     "install": "non-editable `pip install <copy>[book,test,serve,scale]` of `git archive HEAD`, obp without its pins",
                     "reported_from_a_stopped_run": not finished},
        "source": src,
        "environment": resolved,
        "results": {"outcome": ("pass" if ok else "fail") if finished else "incomplete",
                    "unit_tests": tests, "chapters": ran},
    }
    print(f"wrote {write_json(args.out, payload)}; outcome {payload['results']['outcome']}")
    return 0


def unit_tests_from_junit(junit: Path) -> dict[str, Any]:
    """Counts and failures from a pytest JUnit XML file."""
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}"
              for case in suite.iter("testcase") if case.find("failure") is not None or case.find("error") is not None]
    bad = counts["failures"] + counts["errors"]
    return {"status": "ok" if bad == 0 else "failed", "passed": counts["tests"] - bad - counts["skipped"],
            "failed": bad, "skipped": counts["skipped"], "failures": failed[:30],
            "seconds": round(float(suite.get("time", 0)), 1)}


if __name__ == "__main__":
    raise SystemExit(main())
