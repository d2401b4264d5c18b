"""Atomic file writes (a reader never sees a half-written file, even after a crash),
file locks, and the sha256 of a file.

The new content goes to a temporary file beside the target
(``.<name>.<random>.part<suffix>``), which is renamed over the target only when the
writer finished without an exception. The file ends with the permissions a plain
``open(path, "w")`` would give it: the mode of the file it replaces, or ``0o666`` minus
the umask for a new file. Temporary files a killed process left behind are removed by
the next write to the same target once they are older than :data:`STALE_AFTER_SECONDS`
(a temporary file still being written is younger than that).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from pulse_lib.errors import ConfigError, PathError, PulseError
from pulse_lib.validation import check_non_negative, check_output_path

__all__ = [
    "HASH_CHUNK",
    "STALE_AFTER_SECONDS",
    "atomic_path",
    "atomic_write",
    "clean_stale_temp_files",
    "file_lock",
    "sha256_and_size",
    "sha256_of",
]

#: A temporary file of an atomic write untouched for this long belongs to a dead
#: process.
STALE_AFTER_SECONDS: float = 3600.0

#: Bytes read at a time by :func:`sha256_of`: memory stays flat for any file size.
HASH_CHUNK: int = 1 << 20

# mkstemp's random part: 8 characters from this alphabet.
_RANDOM = r"[a-z0-9_]{8}"


def _temp_affixes(target: Path) -> tuple[str, str]:
    """Prefix and suffix of the temporary file. The suffix ends with the target's own
    suffix so writers that add one unless present (``np.save`` adds ``.npy``) write
    where asked."""
    return f".{target.name}.", f".part{target.suffix}"


def _temp_pattern(target: Path) -> re.Pattern[str]:
    prefix = _temp_affixes(target)[0]
    # Also matches what a suffix-adding writer made of a temp name (".x.abc.part.npy").
    return re.compile(re.escape(prefix) + _RANDOM + r"\.part(\.[^/]*)?")


def clean_stale_temp_files(
    path: str | os.PathLike[str], older_than: float = STALE_AFTER_SECONDS
) -> list[Path]:
    """Remove the temporary files atomic writes to ``path`` left behind (a killed
    process), if untouched for ``older_than`` seconds; return the removed paths.

    Only regular files whose name matches this module's temporary-file pattern for this
    target are touched, so nothing else in the folder is at risk.
    """
    target = Path(path)
    age = check_non_negative("older_than", older_than)
    pattern = _temp_pattern(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    now = time.time()
    for entry in target.parent.iterdir():
        if not pattern.fullmatch(entry.name):
            continue
        try:
            info = entry.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and now - info.st_mtime >= age:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def _final_mode(target: Path) -> int:
    """The mode ``open(target, "w")`` would leave: the existing file's, else 0o666 &
    ~umask."""
    with contextlib.suppress(FileNotFoundError):
        return stat.S_IMODE(target.stat().st_mode)
    return 0o666 & ~_umask()


def _prepare(path: str | os.PathLike[str]) -> tuple[Path, str]:
    target = check_output_path("path", path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise PathError(
            f"cannot write {target}: a parent folder is a file ({exc})"
        ) from exc
    clean_stale_temp_files(target)
    prefix, suffix = _temp_affixes(target)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    os.close(fd)
    return target, tmp_name


def _commit(tmp_name: str, target: Path) -> None:
    os.chmod(tmp_name, _final_mode(target))
    os.replace(tmp_name, target)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block
    succeeds.

    The rename is atomic on POSIX file systems, so ``path`` either keeps its old content
    or holds the complete new content. On an exception the temporary file is removed.
    ``mode`` is ``"w"`` (text, UTF-8) or ``"wb"``.

    >>> with atomic_write("out.txt", "w") as f:  # doctest: +SKIP
    ...     f.write("complete or nothing")
    """
    if mode not in {"w", "wb"}:
        raise ConfigError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    target, tmp_name = _prepare(path)
    try:
        encoding = "utf-8" if mode == "w" else None
        with open(tmp_name, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _commit(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_path(
    path: str | os.PathLike[str],
) -> contextlib.AbstractContextManager[Path]:
    """Like :func:`atomic_write`, for writers that want a path
    (``DataFrame.to_parquet``, ``np.save``).

    The temporary path ends with ``path``'s suffix, so ``np.save`` writes to it as
    given. If the writer wrote somewhere else instead (a suffix it added itself, or
    nowhere), that is an error naming both paths, and the target keeps its old content:
    it is never replaced by the empty placeholder.
    """
    return _atomic_path(path)


@contextlib.contextmanager
def _atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    target, tmp_name = _prepare(path)
    placeholder_mtime = os.stat(tmp_name).st_mtime_ns
    tmp = Path(tmp_name)
    strays: list[Path] = []
    try:
        yield tmp
        strays = [
            p for p in tmp.parent.iterdir() if p.name.startswith(tmp.name) and p != tmp
        ]
        if not tmp.is_file():
            raise PulseError(
                f"atomic_path: the writer left no file at {tmp} for "
                f"{target}" + (f"; it wrote {strays[0].name} instead" if strays else "")
            )
        info = tmp.stat()
        if strays and info.st_size == 0 and info.st_mtime_ns == placeholder_mtime:
            raise PulseError(
                f"atomic_path: the writer wrote {strays[0].name} instead of the path "
                "it was given "
                f"({tmp.name}), probably by adding a suffix; give the target {target} "
                "the suffix "
                "the writer uses (e.g. '.npy' for np.save)"
            )
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        _commit(tmp_name, target)
        for stray in strays:  # named after our temporary file, so ours to remove
            stray.unlink(missing_ok=True)
    except BaseException:
        for leftover in (tmp, *strays):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike[str],
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created, with its folder, if
    needed) while the block runs; yields the lock file's path.

    Another process or thread asking for the same lock blocks until the holder
    releases it; if it has to wait, ``on_wait`` is called first with a message saying
    so. The lock is released when its holder exits, even if killed, so a crashed
    holder never blocks the next one. The lock file itself is left in place (removing
    it would let two holders lock two different files).

    POSIX ``flock`` locks; on a platform without them (Windows) the block runs
    unlocked, so at worst two processes repeat the same work.
    """
    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the work may be repeated
        yield lock_path
        return
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"another process holds {lock_path}; waiting for it ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield lock_path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_and_size(path: str | os.PathLike[str]) -> tuple[str, int]:
    """The sha256 (64 lower-case hex digits) of the file ``path`` and the number of
    bytes hashed, reading :data:`HASH_CHUNK` bytes at a time.

    A missing file raises :class:`FileNotFoundError` naming it; a directory or another
    non-regular path raises :class:`~pulse_lib.errors.PathError`.
    """
    target = Path(path)
    if not target.exists():
        raise FileNotFoundError(f"cannot hash {target}: no such file")
    if not target.is_file():
        raise PathError(f"cannot hash {target}: not a regular file")
    digest = hashlib.sha256()
    size = 0
    with open(target, "rb") as handle:
        while block := handle.read(HASH_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 of the file ``path`` as 64 lower-case hex digits (read in chunks;
    errors as :func:`sha256_and_size`).

    >>> sha256_of("datasets/funnel/v2/funnel.csv")  # doctest: +SKIP
    '9f2c...'
    """
    return sha256_and_size(path)[0]
