"""PulseRL data: the RLlib JSON reader on fixtures in the release's format, Parquet, d3rlpy, download."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import pickle
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pulse_lib.errors import DataFormatError, SchemaError
from pulse_lib.pulserl import data as D
from pulse_lib.pulserl import download as DL
from pulse_lib.pulserl.features import FEATURE_NAMES, N_FEATURES

FIXTURES = Path(__file__).parent / "fixtures" / "pulserl"
RELEASE = FIXTURES / "tiny_release"
sys.path.insert(0, str(FIXTURES))
from lz4_frame import frame_uncompressed, unframe_uncompressed


def test_feature_names_follow_the_release() -> None:
    assert N_FEATURES == 63
    assert FEATURE_NAMES[0] == "user_obs_age_group"
    assert FEATURE_NAMES[1] == "user_obs_add_0_RO" and FEATURE_NAMES[32] == "user_obs_add_31_NF"
    assert FEATURE_NAMES[33:36] == ("user_obs_gen_0_FEMALE", "user_obs_gen_1_MALE", "user_obs_gen_2_OTHER")
    assert FEATURE_NAMES[-3:] == ("obs_total_original_value", "obs_total_current_value", "obs_max_days_of_delay")
    assert len(set(FEATURE_NAMES)) == 63


def test_reads_the_fixture_release() -> None:
    table = D.read_release(RELEASE)
    assert len(table) == 18  # 6 users x 3 days
    assert table["eps_id"].nunique() == 6
    assert set(table["t"]) == {0, 1, 2}
    assert table.groupby("eps_id")["done"].sum().eq(1).all()
    assert set(table["action"]) <= {0, 1}
    assert ((table["action_prob"] > 0) & (table["action_prob"] <= 1)).all()
    D.validate_table(table)


def test_round_trip_release_parquet_and_d3rlpy(tmp_path: Path) -> None:
    table = D.read_release(RELEASE)
    D.write_release(table, tmp_path / "again", rows_per_line=5)
    again = D.read_release(tmp_path / "again")
    np.testing.assert_allclose(D.observations(again), D.observations(table), atol=1e-6)
    path = D.write_parquet(table, tmp_path / "t.parquet")
    back = D.read_parquet(path)
    pd.testing.assert_frame_equal(back, table)
    dataset = D.to_mdp_dataset(table)
    assert dataset.transition_count == len(table)
    assert len(dataset.episodes) == 6


def _copy_release(tmp_path: Path) -> Path:
    root = tmp_path / "release"
    shutil.copytree(RELEASE, root)
    return root


def _rewrite_first_line(root: Path, change) -> Path:
    path = root / "2020-10-28" / "output-0.json"
    lines = path.read_text().splitlines()
    lines[0] = change(lines[0])
    path.write_text("\n".join(lines) + "\n")
    return path


def _edit(field: str, value):
    def change(line: str) -> str:
        batch = json.loads(line)
        batch[field] = value(batch[field]) if callable(value) else value
        return json.dumps(batch)

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda line: line[: len(line) // 2], "truncated"),
        (_edit("obs", lambda rows: [r[:-1] for r in rows]), r"shape \(4, 62\)"),
        (_edit("rewards", lambda r: [r[0], float("nan"), *r[2:]]), "'rewards' row 1"),
        (_edit("actions", lambda a: [2, *a[1:]]), "'actions' row 0"),
        (_edit("action_prob", lambda p: [0.0, *p[1:]]), "'action_prob' row 0"),
        (_edit("obs", {"codec": "zstd"}), "unknown encoding"),
        (_edit("new_obs", "bm90IGx6NA=="), "unknown encoding"),  # base64 of 'not lz4'
        (_edit("eps_id", None), "eps_id"),
        (_edit("eps_id", lambda e: [0.5, *e[1:]]), "'eps_id' must be a list"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, change, message: str) -> None:
    root = _copy_release(tmp_path)
    path = _rewrite_first_line(root, change)
    with pytest.raises(DataFormatError, match=message) as info:
        D.read_release(root)
    assert f"{path}:1" in str(info.value)


def test_large_rllib_episode_ids_are_kept_exactly(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)
    big = 2**62 + 1  # RLlib draws episode ids up to ~2e18; float64 would round this
    for path in sorted(root.rglob("*.json")):
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        for batch in lines:
            batch["eps_id"] = [big + e for e in batch["eps_id"]]
        path.write_text("\n".join(json.dumps(b) for b in lines) + "\n")
    table = D.read_release(root)
    assert table["eps_id"].nunique() == 6 and int(table["eps_id"].min()) == big


def test_missing_column_is_named(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)

    def drop(line: str) -> str:
        batch = json.loads(line)
        del batch["action_prob"]
        return json.dumps(batch)

    path = _rewrite_first_line(root, drop)
    with pytest.raises(DataFormatError, match=rf"{path}:1: missing column\(s\) \['action_prob'\]"):
        D.read_release(root)


def test_inconsistent_episode_is_caught(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)
    # mark day 1 rows as done: their episodes continue on day 2
    _rewrite_first_line(root, _edit("dones", lambda d: [True] * len(d)))
    with pytest.raises(DataFormatError, match="continues after its 'dones' row"):
        D.read_release(root)


def test_broken_continuity_is_caught(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)
    _rewrite_first_line(root, _edit("obs", lambda rows: [[v + 0.5 for v in r] for r in rows]))
    with pytest.raises(DataFormatError, match="differs from the previous row's 'new_obs'"):
        D.read_release(root)
    assert len(D.read_release(root, check_continuity=False)) == 18


def test_packed_columns_need_lz4_and_name_it() -> None:
    line = (FIXTURES / "packed_line.json").read_text()
    if importlib.util.find_spec("lz4") is None:
        with pytest.raises(DataFormatError, match="needs the 'lz4' package"):
            D.parse_sample_batch_line(line, where="packed_line.json:1")
    else:  # with lz4 installed the genuine frame decodes
        batch = D.parse_sample_batch_line(line, where="packed_line.json:1")
        assert batch["obs"].shape == (4, 63)


def test_packed_columns_decode_to_the_same_rows() -> None:
    packed = D.parse_sample_batch_line((FIXTURES / "packed_line.json").read_text(), where="p:1",
                                       decompress=unframe_uncompressed)
    plain_line = (RELEASE / "2020-10-27" / "output-0.json").read_text().splitlines()[0]
    plain = D.parse_sample_batch_line(plain_line, where="q:1")
    np.testing.assert_allclose(packed["obs"], plain["obs"])
    np.testing.assert_allclose(packed["new_obs"], plain["new_obs"])


def test_corrupt_packed_payload_is_named() -> None:
    frame = frame_uncompressed(b"this is not a pickle")
    value = base64.b64encode(frame).decode()
    with pytest.raises(DataFormatError, match="not a pickled array"):
        D.decode_column(value, where="f:3", column="obs", decompress=unframe_uncompressed)
    assert pickle  # the packed fixture was made with pickle.dumps (see lz4_frame.py)


def test_validate_table_names_column_and_row() -> None:
    table = D.read_release(RELEASE)
    broken = table.copy()
    broken.loc[3, "obs_score"] = np.nan
    with pytest.raises(SchemaError, match="'obs_score' row 3"):
        D.validate_table(broken)
    with pytest.raises(SchemaError, match="lacks column"):
        D.validate_table(table.drop(columns=["reward"]))


def test_corrupt_parquet_is_a_data_format_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataFormatError, match="bad.parquet"):
        D.read_parquet(path)


# ----------------------------------------------------------------------------- download


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("500k_dataset/2020-10-27/output-0.json", "{}\n" * 2000)
    return buffer.getvalue()


class FakeServer:
    """An opener serving bytes with HTTP Range support; can drop the connection once."""

    def __init__(self, payload: bytes, fail_after: int | None = None, honour_range: bool = True) -> None:
        self.payload, self.fail_after, self.honour_range = payload, fail_after, honour_range
        self.requests: list[str | None] = []

    def __call__(self, request: urllib.request.Request):
        header = request.get_header("Range")
        self.requests.append(header)
        start = int(header.split("=")[1].rstrip("-")) if header and self.honour_range else 0
        body = self.payload[start:]
        fail_after, self.fail_after = self.fail_after, None
        server = self

        class Response:
            status = 206 if start else 200

            def __init__(self) -> None:
                self.stream = io.BytesIO(body)
                self.sent = 0

            def read(self, n: int) -> bytes:
                if fail_after is not None and self.sent >= fail_after:
                    raise ConnectionResetError("connection dropped")
                block = self.stream.read(n)
                self.sent += len(block)
                return block

            def getcode(self) -> int:
                return self.status

        assert server
        return Response()


def test_download_resumes_with_range_and_verifies(tmp_path: Path) -> None:
    payload = _zip_bytes()
    server = FakeServer(payload, fail_after=1024)
    dest = tmp_path / "pulse.zip"
    with pytest.raises(ConnectionResetError):
        DL.download("https://example.invalid/x", dest, opener=server, chunk_size=512)
    part = tmp_path / "pulse.zip.part"
    assert part.exists() and not dest.exists() and part.stat().st_size == 1024
    import hashlib

    digest = hashlib.sha256(payload).hexdigest()
    DL.download("https://example.invalid/x", dest, opener=server, chunk_size=512, sha256=digest,
                expected_size=len(payload))
    assert server.requests == [None, "bytes=1024-"]
    assert dest.read_bytes() == payload and not part.exists()


def test_download_restarts_when_range_is_ignored(tmp_path: Path) -> None:
    payload = _zip_bytes()
    (tmp_path / "pulse.zip.part").write_bytes(payload[:100])
    server = FakeServer(payload, honour_range=False)
    DL.download("https://example.invalid/x", tmp_path / "pulse.zip", opener=server)
    assert (tmp_path / "pulse.zip").read_bytes() == payload


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"expected_size": 10}, "size"), ({"sha256": "0" * 64}, "sha256"), ({}, "not a readable")],
)
def test_download_rejects_a_bad_file(tmp_path: Path, kwargs: dict, message: str) -> None:
    payload = _zip_bytes() if kwargs else b"<html>a file host's landing page</html>"
    with pytest.raises(DataFormatError, match=message):
        DL.download("https://example.invalid/x", tmp_path / "pulse.zip", opener=FakeServer(payload), **kwargs)
    assert not (tmp_path / "pulse.zip").exists() and not (tmp_path / "pulse.zip.part").exists()


def test_download_works_on_a_file_url(tmp_path: Path) -> None:
    source = tmp_path / "source.zip"
    source.write_bytes(_zip_bytes())
    dest = DL.download(source.as_uri(), tmp_path / "out" / "pulse.zip")
    assert dest.read_bytes() == source.read_bytes()
    assert DL.DATASET_URL.startswith("https://")


def test_load_dataset_prefers_the_real_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pulse_lib.errors import ConfigError
    from pulse_lib.pulserl import datasets as pulse_data
    from pulse_lib.pulserl import simulator as S

    monkeypatch.setenv("PULSE_BOOK_ROOT", str(tmp_path))
    small = S.SimulatorConfig(horizon=3)
    table, source = pulse_data.load_dataset("eval", 20, seed=0, config=small)
    assert "surrogate" in source and "uniform" in source and table["eps_id"].nunique() == 20
    shutil.copytree(RELEASE, tmp_path / "datasets" / "pulserl" / "raw" / "500k_dataset")
    table, source = pulse_data.load_dataset("train", 20, seed=0)
    assert "release" in source and len(table) == 18
    cached, _ = pulse_data.load_dataset("train", 20, seed=0)  # second call reads the Parquet cache
    pd.testing.assert_frame_equal(cached, table)
    assert len(list((tmp_path / "datasets" / "generated").glob("pulserl_real_500k_dataset_*.parquet"))) == 1
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        pulse_data.load_dataset("test", 20, seed=0)


# ----------------------------------------------------------------------------- hostile files and servers


def _first_file(root: Path) -> Path:
    return min(root.rglob("*.json"))


@pytest.mark.parametrize(
    ("encode", "message"),
    [
        (lambda text: text.encode("utf-16"), "UTF-16"),
        (lambda text: __import__("gzip").compress(text.encode()), "gzip"),
        (lambda text: text.encode() + b"\n{\"obs\": \"\xff\xfe\"}\n", r":\d+: not UTF-8"),
    ],
)
def test_undecodable_files_name_file_and_line(tmp_path: Path, encode, message: str) -> None:
    root = _copy_release(tmp_path)
    path = _first_file(root)
    path.write_bytes(encode(path.read_text()))
    with pytest.raises(DataFormatError, match=message) as info:
        D.read_release(root)
    assert str(path) in str(info.value)


def test_reward_beyond_float32_is_an_error_and_rewards_keep_float64(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)
    table = D.read_release(root)
    assert table["reward"].dtype == np.float64 and table["action_prob"].dtype == np.float64
    path = _rewrite_first_line(root, _edit("rewards", lambda r: [1e39, *r[1:]]))
    with pytest.raises(DataFormatError, match="float32") as info:
        D.read_release(root)
    assert f"{path}:1" in str(info.value)


def test_action_logp_gives_action_prob(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)
    want = D.read_release(root)

    def to_logp(line: str) -> str:
        batch = json.loads(line)
        batch["action_logp"] = np.log(batch.pop("action_prob")).tolist()
        return json.dumps(batch)

    _rewrite_first_line(root, to_logp)
    got = D.read_release(root)
    np.testing.assert_allclose(got["action_prob"], want["action_prob"], rtol=1e-12)


def test_episode_id_beyond_int64_is_named(tmp_path: Path) -> None:
    root = _copy_release(tmp_path)
    _rewrite_first_line(root, _edit("eps_id", lambda e: [2**64, *e[1:]]))
    with pytest.raises(DataFormatError, match="'eps_id' row 0 .* 64-bit"):
        D.read_release(root)


class _Status:
    def __init__(self, status: int, body: bytes = b"") -> None:
        self.status, self.stream = status, io.BytesIO(body)

    def read(self, n: int) -> bytes:
        return self.stream.read(n)


def test_download_names_the_http_status(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="HTTP 404"):
        DL.download("https://example.invalid/x", tmp_path / "p.zip", opener=lambda r: _Status(404, b"nope"))

    def raises_404(request):
        raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)

    with pytest.raises(DataFormatError, match="HTTP 404 Not Found"):
        DL.download("https://example.invalid/x", tmp_path / "p.zip", opener=raises_404)
    assert not (tmp_path / "p.zip").exists()


def test_download_416_on_a_complete_part_finishes(tmp_path: Path) -> None:
    payload = _zip_bytes()
    (tmp_path / "p.zip.part").write_bytes(payload)

    def raises_416(request):
        assert request.get_header("Range") == f"bytes={len(payload)}-"
        raise urllib.error.HTTPError(request.full_url, 416, "Range Not Satisfiable", {}, None)

    import hashlib

    dest = DL.download("https://example.invalid/x", tmp_path / "p.zip", opener=raises_416,
                       sha256=hashlib.sha256(payload).hexdigest())
    assert dest.read_bytes() == payload


def test_existing_destination_is_checked_not_trusted(tmp_path: Path) -> None:
    dest = tmp_path / "p.zip"
    dest.write_bytes(_zip_bytes())
    with pytest.raises(DataFormatError, match="exists but sha256 does not match"):
        DL.download("https://example.invalid/x", dest, sha256="0" * 64, opener=lambda r: 1 / 0)
    assert DL.download("https://example.invalid/x", dest, opener=lambda r: 1 / 0) == dest


def test_offline_is_one_clear_line(tmp_path: Path) -> None:
    def offline(request):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(DataFormatError, match=r"cannot reach .* \(offline\?\)") as info:
        DL.download("https://example.invalid/x", tmp_path / "p.zip", opener=offline)
    assert "\n" not in str(info.value)


def test_extract_release_into_the_loader_layout(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(RELEASE.rglob("*.json")):
            handle.write(path, f"data/processed/v1/10k_uniform_dataset_users/{path.relative_to(RELEASE)}")
    raw = tmp_path / "raw"
    out = DL.extract_release(archive, raw)
    assert out == [raw / "10k_uniform_dataset_users"]
    assert len(D.read_release(out[0])) == len(D.read_release(RELEASE))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("../../escape/500k_dataset/x.json", "{}")
    with pytest.raises(DataFormatError, match="outside"):
        DL.extract_release(evil, tmp_path / "raw2")


def test_release_cache_is_keyed_on_the_raw_files_and_n_users_subsamples(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from pulse_lib.pulserl import datasets as pulse_data

    monkeypatch.setenv("PULSE_BOOK_ROOT", str(tmp_path))
    raw = tmp_path / "raw"
    shutil.copytree(RELEASE, raw / "500k_dataset")
    full, source = pulse_data.load_dataset("train", 100, seed=0, raw_dir=raw)
    assert pulse_data.is_real(source) and full["eps_id"].nunique() == 6
    part, source = pulse_data.load_dataset("train", 4, seed=0, raw_dir=raw)
    assert part["eps_id"].nunique() == 4 and "4 of 6 users" in source
    assert set(part["eps_id"]) <= set(full["eps_id"])
    # change one raw file: the cache must not serve the old table
    path = max((raw / "500k_dataset").rglob("*.json"))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[0]["rewards"] = [r + 100.0 for r in lines[0]["rewards"]]
    path.write_text("\n".join(json.dumps(b) for b in lines) + "\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed, _ = pulse_data.load_dataset("train", 100, seed=0, raw_dir=raw)
    assert changed["reward"].max() > full["reward"].max() + 50
    assert len(list((tmp_path / "datasets" / "generated").glob("pulserl_real_500k_dataset_*.parquet"))) == 2
    with pytest.raises(Exception, match="has no folder"):
        pulse_data.load_dataset("eval", 10, seed=0, raw_dir=raw)
