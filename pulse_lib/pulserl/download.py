"""Download the released PulseRL logs: resumable, verified, renamed into place atomically.

Never called in CI (nothing is downloaded there); the chapters use it only when a reader asks.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pulse_lib.errors import DataFormatError

#: The dataset link on the authors' project page (a short link to a file host). Change it if
#: the authors move the file. Its size and checksum are not published, so they are optional.
DATASET_URL = "https://bit.ly/ac-dataset"

Opener = Callable[[urllib.request.Request], Any]


def _default_opener(request: urllib.request.Request) -> Any:
    return urllib.request.urlopen(request, timeout=60)  # noqa: S310 (the URL is a constant the reader sets)


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


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    expected_size: int | None = None,
    opener: Opener | None = None,
    chunk_size: int = 1 << 20,
) -> Path:
    """Fetch ``url`` into ``dest``; resume a partial ``dest.part`` with an HTTP Range request.

    After the transfer the file is checked (size and sha256 when given, and that it opens as an
    archive) and only then renamed to ``dest``, so ``dest`` is complete or absent. A failed check
    removes the ``.part`` file and raises :class:`DataFormatError`. An existing ``dest`` is
    returned as is.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    response = (opener or _default_opener)(request)
    status = getattr(response, "status", None) or response.getcode()
    if have and status != 206:  # the server ignored the range: start over
        have = 0
    if status == 416 and have:  # nothing left to fetch: the part file is complete
        mode = "ab"
    else:
        mode = "ab" if have else "wb"
    try:
        with open(part, mode) as handle:
            if status != 416:
                for block in iter(lambda: response.read(chunk_size), b""):
                    handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        close = getattr(response, "close", None)
        if close:
            close()
    size = part.stat().st_size
    problem = None
    if expected_size is not None and size != expected_size:
        problem = f"size {size} bytes, expected {expected_size}"
    elif sha256 is not None and sha256_of(part) != sha256.lower():
        problem = "sha256 does not match"
    elif not archive_opens(part):
        problem = "not a readable zip or tar archive"
    if problem:
        part.unlink()
        raise DataFormatError(f"download of {url} into {dest}: {problem}; the partial file was removed")
    os.replace(part, dest)
    return dest
