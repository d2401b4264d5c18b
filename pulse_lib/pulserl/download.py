"""Download the released PulseRL logs: resumable, verified, renamed into place
atomically.

Never called in CI (nothing is downloaded there); the chapters use it only when a reader
asks.
"""

from __future__ import annotations

import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pulse_lib.errors import DataFormatError
from pulse_lib.io import sha256_of

__all__ = [
    "DATASET_URL",
    "RELEASE_FOLDERS",
    "archive_opens",
    "download",
    "extract_release",
    "sha256_of",  # re-exported from pulse_lib.io, where it lives
]

#: The dataset link on the authors' project page (a short link to a file host). Change
#: it if
#: the authors move the file. Its size and checksum are not published, so they are
#: optional.
DATASET_URL = "https://bit.ly/ac-dataset"

Opener = Callable[[urllib.request.Request], Any]


def _default_opener(request: urllib.request.Request) -> Any:
    # the URL is a constant the reader sets (S310 warns of file:// and custom schemes)
    return urllib.request.urlopen(request, timeout=60)


def archive_opens(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a zip or tar archive whose member list can be read."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    try:
        with tarfile.open(path) as archive:
            archive.getmembers()
        return True
    except (tarfile.TarError, OSError, EOFError):
        return False


def _http_status(response: Any) -> int | None:
    status = getattr(response, "status", None)
    if status is None and hasattr(response, "getcode"):
        status = response.getcode()
    return int(status) if status is not None else None


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    expected_size: int | None = None,
    opener: Opener | None = None,
    chunk_size: int = 1 << 20,
) -> Path:
    """Fetch ``url`` into ``dest``; resume a partial ``dest.part`` with an HTTP Range
    request.

    After the transfer the file is checked (size and sha256 when given, and that it
    opens as an archive) and only then renamed to ``dest``, so ``dest`` is complete or
    absent. A failed check removes the ``.part`` file and raises
    :class:`DataFormatError`. An existing ``dest`` is checked the same way (against
    ``sha256``/``expected_size`` when given) before it is returned; a mismatch is an
    error, never trusted. An HTTP error status is an error naming the status; 416 (range
    not satisfiable) on a ``.part`` means it is already complete, and it goes on to the
    checks. Without a network the error says so in one line.
    """
    dest = Path(dest)
    if dest.exists():
        problem = _problem(dest, sha256, expected_size)
        if problem:
            raise DataFormatError(
                f"{dest} exists but {problem}; delete it (or fix the "
                "checksum) to download again"
            )
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(
        url, headers={"Range": f"bytes={have}-"} if have else {}
    )
    complete = False
    try:
        response = (opener or _default_opener)(request)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            complete, response = True, None
        else:
            raise DataFormatError(
                f"download of {url}: HTTP {exc.code} {exc.reason}"
            ) from exc
    except urllib.error.URLError as exc:
        raise DataFormatError(
            f"cannot reach {url} (offline?): {exc.reason}. Fetch the "
            "file on a machine with "
            f"a network and place it at {dest}"
        ) from exc
    if response is not None:
        status = _http_status(response)
        if status == 416 and have:
            complete = True
        elif status is not None and status >= 400:
            raise DataFormatError(f"download of {url}: HTTP {status}")
    try:
        if not complete:
            # the server ignored the range: start over
            if have and _http_status(response) != 206:
                have = 0
            with open(part, "ab" if have else "wb") as handle:
                handle.writelines(iter(lambda: response.read(chunk_size), b""))
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        close = getattr(response, "close", None)
        if close:
            close()
    problem = _problem(part, sha256, expected_size)
    if problem:
        part.unlink()
        raise DataFormatError(
            f"download of {url} into {dest}: {problem}; the partial file was removed"
        )
    os.replace(part, dest)
    return dest


def _problem(path: Path, sha256: str | None, expected_size: int | None) -> str | None:
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"size {size} bytes, expected {expected_size}"
    if sha256 is not None and sha256_of(path) != sha256.lower():
        return "sha256 does not match"
    if not archive_opens(path):
        return "not a readable zip or tar archive"
    return None


#: The released datasets' folder names, as the loader expects them under
#: ``datasets/pulserl/raw``.
RELEASE_FOLDERS: tuple[str, ...] = ("500k_dataset", "10k_uniform_dataset_users")


def extract_release(
    archive: str | os.PathLike[str], raw_dir: str | os.PathLike[str]
) -> list[Path]:
    """Extract a downloaded archive so that ``raw_dir/<name>/<day>/*.json`` exists.

    Finds the folders named like the released datasets (:data:`RELEASE_FOLDERS`)
    wherever they sit inside the archive and moves each to ``raw_dir/<name>``. Members
    that would land outside the extraction folder (absolute paths, ``..``) are refused.
    Returns the folders.
    """
    import shutil
    import tempfile

    archive, raw_dir = Path(archive), Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=raw_dir) as tmp:
        root = Path(tmp).resolve()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                names = handle.namelist()
                _refuse_escapes(names, root, archive)
                handle.extractall(root)
        else:
            try:
                with tarfile.open(archive) as handle:
                    members = handle.getmembers()
                    _refuse_escapes([m.name for m in members], root, archive)
                    if any(m.issym() or m.islnk() for m in members):
                        raise DataFormatError(
                            f"{archive}: holds links; refusing to extract"
                        )
                    handle.extractall(root)
            except tarfile.TarError as exc:
                raise DataFormatError(
                    f"{archive}: not a readable zip or tar archive ({exc})"
                ) from exc
        found = {}
        for name in RELEASE_FOLDERS:
            hits = sorted(p for p in root.rglob(name) if p.is_dir())
            if hits:
                found[name] = hits[0]
        if not found:
            raise DataFormatError(
                f"{archive}: no folder named {' or '.join(RELEASE_FOLDERS)} inside"
            )
        out = []
        for name, folder in found.items():
            target = raw_dir / name
            if target.exists():
                raise DataFormatError(
                    f"{target} already exists; move it away to extract again"
                )
            shutil.move(str(folder), str(target))
            out.append(target)
    return out


def _refuse_escapes(names: list[str], root: Path, archive: Path) -> None:
    for name in names:
        target = (root / name).resolve()
        if root != target and root not in target.parents:
            raise DataFormatError(
                f"{archive}: member {name!r} would be written "
                "outside the extraction folder"
            )
