"""pulse_lib.io.sha256_of: the one chunked file digest the library uses."""

from __future__ import annotations

import hashlib

import pytest

from pulse_lib import io
from pulse_lib.errors import PathError


def test_sha256_of_reads_in_chunks_and_counts_bytes(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 41 + b"tail"  # not a multiple of the chunk
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)
    expected = hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(io, "HASH_CHUNK", 1000)  # many chunks, the last one short
    assert io.sha256_of(path) == expected
    assert io.sha256_of(str(path)) == expected
    assert io.sha256_and_size(path) == (expected, len(payload))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert io.sha256_and_size(empty) == (hashlib.sha256(b"").hexdigest(), 0)


def test_sha256_of_names_a_missing_file_or_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot hash .*nope.bin: no such file"):
        io.sha256_of(tmp_path / "nope.bin")
    with pytest.raises(PathError, match="not a regular file"):
        io.sha256_of(tmp_path)


def test_download_and_versioning_use_the_io_helper(tmp_path):
    from pulse_lib.production import versioning
    from pulse_lib.pulserl import download

    assert download.sha256_of is io.sha256_of  # the old import path still works
    assert versioning.sha256_and_size is io.sha256_and_size
    path = tmp_path / "a.csv"
    path.write_bytes(b"a,b\n1,2\n")
    record = versioning.content_hash(path)
    assert (record["sha256"], record["bytes"]) == io.sha256_and_size(path)
