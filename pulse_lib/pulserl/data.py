"""The released PulseRL logs: RLlib JSON SampleBatch lines in day folders, read and
validated.

The authors published their logs as RLlib's offline JSON: one JSON object per line, each
a ``SampleBatch`` with columns ``obs, actions, rewards, dones, eps_id, action_prob,
new_obs`` (RLlib adds others, e.g. ``t`` or ``infos``, which are ignored here), in one
folder per day (``YYYY-MM-DD``). RLlib may *pack* ``obs``/``new_obs``:
``base64(lz4.frame(pickle(array)))`` (``ray.rllib.utils.compression.pack``). This module
reads both forms, validates everything, and converts once to a columnar transition table
(Parquet) and to a d3rlpy ``MDPDataset``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pulse_lib.errors import ConfigError, DataFormatError, SchemaError
from pulse_lib.io import atomic_path, atomic_write
from pulse_lib.pulserl.features import FEATURE_NAMES, N_FEATURES, NEXT_FEATURE_NAMES
from pulse_lib.validation import check_file, check_integer_array

#: Columns every SampleBatch line must carry (``action_prob`` may be given as
#: ``action_logp``).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "obs",
    "actions",
    "rewards",
    "dones",
    "eps_id",
    "action_prob",
    "new_obs",
)
#: The largest magnitude a float32 holds: a reward beyond it cannot be stored or trained
#: on.
FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Columns of the transition table, before the 63 features and the 63 next features.
TABLE_COLUMNS: tuple[str, ...] = (
    "eps_id",
    "t",
    "action",
    "reward",
    "done",
    "action_prob",
)
#: The first bytes of an LZ4 frame (what RLlib's ``pack`` writes before base64).
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"


def _lz4_decompress(data: bytes) -> bytes:
    try:
        import lz4.frame
    except ImportError as exc:
        raise ImportError("lz4") from exc
    return lz4.frame.decompress(data)


def decode_column(
    value: Any, *, where: str, column: str, decompress: Any = None
) -> np.ndarray:
    """Decode one ``obs``/``new_obs`` value: a list of rows, or RLlib's packed string.

    A packed value is ``base64(lz4.frame.compress(pickle.dumps(array)))``. Decoding
    needs the ``lz4`` package; without it a :class:`DataFormatError` names the encoding
    and the package. Unpickling runs code from the file: read packed files only from a
    source you trust.
    """
    if isinstance(value, list):
        try:
            return np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(
                f"{where}: column {column!r} is not a numeric list of rows ({exc})"
            ) from exc
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataFormatError(
                f"{where}: column {column!r} is a string but not "
                f"base64 ({exc}); "
                "expected a list or RLlib's packed encoding"
            ) from exc
        if not raw.startswith(LZ4_FRAME_MAGIC):
            raise DataFormatError(
                f"{where}: column {column!r} has an unknown encoding "
                "(base64, but not an "
                "LZ4 frame as RLlib's pack writes)"
            )
        try:
            data = (decompress or _lz4_decompress)(raw)
        except ImportError as exc:
            raise DataFormatError(
                f"{where}: column {column!r} is packed by RLlib (base64 + LZ4 frame + "
                "pickle); decoding it "
                "needs the 'lz4' package, which is not installed (pip install lz4)"
            ) from exc
        except Exception as exc:  # a corrupt frame: say where
            raise DataFormatError(
                f"{where}: column {column!r}: cannot decompress the LZ4 frame ({exc})"
            ) from exc
        try:
            # unpickling runs code from the file: documented in the docstring above
            return np.asarray(pickle.loads(data), dtype=np.float32)
        except Exception as exc:
            raise DataFormatError(
                f"{where}: column {column!r}: decompressed data is "
                f"not a pickled array ({exc})"
            ) from exc
    raise DataFormatError(
        f"{where}: column {column!r} has an unknown encoding ({type(value).__name__})"
    )


def parse_sample_batch_line(
    line: str, *, where: str, decompress: Any = None
) -> dict[str, np.ndarray]:
    """Parse and validate one line; ``where`` (``file:line``) is named in every
    error."""
    try:
        batch = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{where}: not a complete JSON object (truncated line?): {exc}"
        ) from exc
    if not isinstance(batch, dict):
        raise DataFormatError(
            f"{where}: expected a JSON object, got {type(batch).__name__}"
        )
    if batch.get("type", "SampleBatch") != "SampleBatch":
        raise DataFormatError(
            f"{where}: type is {batch.get('type')!r}, expected 'SampleBatch'"
        )
    if "action_prob" not in batch and "action_logp" in batch:
        # RLlib stores the log-probability of the logged action; the probability is its
        # exp
        try:
            batch["action_prob"] = np.exp(
                np.asarray(batch["action_logp"], dtype=np.float64)
            ).tolist()
        except (TypeError, ValueError) as exc:
            raise DataFormatError(
                f"{where}: column 'action_logp' is not numeric ({exc})"
            ) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in batch]
    if missing:
        raise DataFormatError(f"{where}: missing column(s) {missing}")
    obs = decode_column(batch["obs"], where=where, column="obs", decompress=decompress)
    new_obs = decode_column(
        batch["new_obs"], where=where, column="new_obs", decompress=decompress
    )
    n = obs.shape[0] if obs.ndim >= 1 else 0
    for name, arr in (("obs", obs), ("new_obs", new_obs)):
        if arr.ndim != 2 or arr.shape[1] != N_FEATURES:
            raise DataFormatError(
                f"{where}: column {name!r} has shape {arr.shape}; "
                f"expected (rows, {N_FEATURES})"
            )
        if arr.shape[0] != n:
            raise DataFormatError(
                f"{where}: column {name!r} has {arr.shape[0]} rows, 'obs' has {n}"
            )
        bad = np.argwhere(~np.isfinite(arr))
        if bad.size:
            raise DataFormatError(
                f"{where}: column {name!r} row {bad[0][0]} feature "
                f"{FEATURE_NAMES[bad[0][1]]!r} is not finite"
            )
    out: dict[str, np.ndarray] = {"obs": obs, "new_obs": new_obs}
    # RLlib's episode ids are random integers up to ~2e18: parse them as int64, never
    # via float
    eps = batch["eps_id"]
    if (
        not isinstance(eps, list)
        or len(eps) != n
        or not all(isinstance(e, int) and not isinstance(e, bool) for e in eps)
    ):
        raise DataFormatError(
            f"{where}: column 'eps_id' must be a list of {n} integers"
        )
    too_big = [i for i, e in enumerate(eps) if not _INT64_MIN <= e <= _INT64_MAX]
    if too_big:
        raise DataFormatError(
            f"{where}: column 'eps_id' row {too_big[0]} is "
            f"{eps[too_big[0]]}, beyond the "
            "64-bit integer range the table stores episode ids in"
        )
    out["eps_id"] = np.asarray(eps, dtype=np.int64)
    for name in ("actions", "rewards", "dones", "action_prob"):
        value = batch[name]
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(
                f"{where}: column {name!r} is not numeric ({exc})"
            ) from exc
        if arr.shape != (n,):
            raise DataFormatError(
                f"{where}: column {name!r} has shape {arr.shape}; expected ({n},)"
            )
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise DataFormatError(
                f"{where}: column {name!r} row {int(bad[0])} is "
                f"{arr[bad[0]].item()!r}, not finite"
            )
        out[name] = arr
    bad = np.flatnonzero(np.abs(out["rewards"]) > FLOAT32_MAX)
    if bad.size:
        raise DataFormatError(
            f"{where}: column 'rewards' row {int(bad[0])} is "
            f"{out['rewards'][bad[0]].item()!r}, "
            "beyond the float32 range learners train in (it would "
            "become inf)"
        )
    bad = np.flatnonzero(~np.isin(out["actions"], (0.0, 1.0)))
    if bad.size:
        raise DataFormatError(
            f"{where}: column 'actions' row {int(bad[0])} is "
            f"{out['actions'][bad[0]].item()!r}; "
            "actions are binary (0 = no message, 1 = send)"
        )
    bad = np.flatnonzero((out["action_prob"] <= 0.0) | (out["action_prob"] > 1.0))
    if bad.size:
        raise DataFormatError(
            f"{where}: column 'action_prob' row {int(bad[0])} is "
            f"{out['action_prob'][bad[0]].item()!r}; must be in (0, "
            "1]"
        )
    bad = np.flatnonzero(~np.isin(out["dones"], (0.0, 1.0)))
    if bad.size:
        raise DataFormatError(
            f"{where}: column 'dones' row {int(bad[0])} is not a boolean"
        )
    return out


def _text_lines(path: Path) -> Iterable[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file; an encoding problem names the file
    and line."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        if head[:2] == b"\x1f\x8b":
            raise DataFormatError(
                f"{path}:1: the file is gzip-compressed, not JSON "
                "text; decompress it "
                "first (gunzip), keeping one SampleBatch JSON object "
                "per line"
            )
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise DataFormatError(
                f"{path}:1: the file is UTF-16 text; RLlib writes "
                "UTF-8: re-save it as UTF-8"
            )
        handle.seek(0)
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(
                    f"{path}:{number}: not UTF-8 text (byte "
                    f"{exc.start} of the line is "
                    f"{raw[exc.start : exc.start + 1]!r})"
                ) from exc


def sample_batch_files(root: str | os.PathLike[str]) -> list[Path]:
    """The JSON files of a release folder: ``root/<YYYY-MM-DD>/*`` in day order, then
    name."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder of day folders")
    files = sorted(
        p
        for day in sorted(root.iterdir())
        if day.is_dir()
        for p in day.iterdir()
        if p.is_file() and p.suffix == ".json"
    )
    if not files:
        raise DataFormatError(f"{root}: no day folder holds a .json SampleBatch file")
    return files


def read_sample_batches(
    paths: Iterable[str | os.PathLike[str]],
    *,
    decompress: Any = None,
    check_continuity: bool = True,
) -> pd.DataFrame:
    """Read SampleBatch JSON files into one transition table (see
    :data:`TABLE_COLUMNS`).

    Rows keep the order of the files and lines; the step ``t`` counts rows within an
    episode in that order. Checks episode consistency: nothing after an episode's
    ``done``, and (with ``check_continuity``) each ``new_obs`` equals the next ``obs``
    of the same episode. ``paths`` is a list of files (one path alone is refused, not
    read character by character); a missing file is a :class:`FileNotFoundError`, a
    folder a :class:`~pulse_lib.errors.PathError`.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise ConfigError(
            "paths must be a list of SampleBatch files, got the single "
            f"path {paths!r}: "
            "pass [path], or read_release(folder) for a release's day "
            "folders"
        )
    pieces: list[dict[str, np.ndarray]] = []
    # file, line, rows: to name the line of an error
    origins: list[tuple[str, int, int]] = []
    for path in paths:
        path = check_file("SampleBatch file", path)
        for number, line in _text_lines(path):
            if not line.strip():
                continue
            batch = parse_sample_batch_line(
                line, where=f"{path}:{number}", decompress=decompress
            )
            pieces.append(batch)
            origins.append((str(path), number, batch["obs"].shape[0]))
    if not pieces:
        raise DataFormatError("no SampleBatch lines found")
    obs = np.concatenate([p["obs"] for p in pieces])
    new_obs = np.concatenate([p["new_obs"] for p in pieces])
    cols = {
        k: np.concatenate([p[k] for p in pieces])
        for k in ("actions", "rewards", "dones", "eps_id", "action_prob")
    }
    line_of_row = np.repeat(np.arange(len(origins)), [o[2] for o in origins])

    def where(row: int) -> str:
        file, line, _ = origins[line_of_row[row]]
        return f"{file}:{line}"

    eps = cols["eps_id"]
    frame = pd.DataFrame({"eps_id": eps})
    t = frame.groupby("eps_id", sort=False).cumcount().to_numpy().astype(np.int32)
    dones = cols["dones"].astype(bool)
    # an episode's done must be its last row
    last_row = frame.groupby("eps_id", sort=False).tail(1).index.to_numpy()
    is_last = np.zeros(len(eps), bool)
    is_last[last_row] = True
    bad = np.flatnonzero(dones & ~is_last)
    if bad.size:
        r = int(bad[0])
        raise DataFormatError(
            f"{where(r)}: episode {eps[r]} continues after its "
            "'dones' row (inconsistent episode)"
        )
    if check_continuity:
        order = np.lexsort((t, eps))
        same_next = eps[order][1:] == eps[order][:-1]
        gaps = np.abs(new_obs[order][:-1] - obs[order][1:]).max(axis=1) > 1e-5
        bad = np.flatnonzero(same_next & gaps)
        if bad.size:
            r = int(order[bad[0] + 1])
            raise DataFormatError(
                f"{where(r)}: episode {eps[r]} step {t[r]}: 'obs' "
                "differs from the previous "
                "row's 'new_obs' (inconsistent episode)"
            )
    table = pd.DataFrame(
        {
            "eps_id": eps,
            "t": t,
            "action": cols["actions"].astype(np.int8),
            "reward": cols["rewards"],
            "done": dones,  # float64: as read, no rounding
            "action_prob": cols["action_prob"],
        }
    )
    features = pd.DataFrame(obs, columns=list(FEATURE_NAMES))
    next_features = pd.DataFrame(new_obs, columns=list(NEXT_FEATURE_NAMES))
    return pd.concat([table, features, next_features], axis=1)


def read_release(root: str | os.PathLike[str], **kwargs: Any) -> pd.DataFrame:
    """Read every day folder of one released dataset (e.g. ``.../500k_dataset``)."""
    return read_sample_batches(sample_batch_files(root), **kwargs)


def validate_table(table: pd.DataFrame) -> None:
    """Check a transition table's schema; raise :class:`SchemaError` naming the
    column/row.

    Every column of :data:`TABLE_COLUMNS`, the features and the next features must be
    there; rewards, propensities, features and next features numeric and finite (rewards
    within float32); ``eps_id`` and ``t`` integers (``t >= 0``); ``action`` and ``done``
    0/1; ``action_prob`` in (0, 1]; no (``eps_id``, ``t``) step twice.
    """
    if not isinstance(table, pd.DataFrame):
        raise SchemaError(
            f"a transition table is a pandas DataFrame, got {type(table).__name__}"
        )
    expected = (*TABLE_COLUMNS, *FEATURE_NAMES, *NEXT_FEATURE_NAMES)
    missing = [c for c in expected if c not in table.columns]
    if missing:
        raise SchemaError(
            "transition table lacks column(s) "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    if table.empty:
        raise SchemaError("transition table has no rows")
    for column in (
        "eps_id",
        "t",
        "reward",
        "action_prob",
        *FEATURE_NAMES,
        *NEXT_FEATURE_NAMES,
    ):
        # text such as "1" is not silently a number
        if table[column].dtype.kind not in "biuf":
            bad = [
                i
                for i, v in enumerate(table[column])
                if not isinstance(v, (int, float, np.number))
            ]
            where = f"; row {bad[0]} is {table[column].iloc[bad[0]]!r}" if bad else ""
            raise SchemaError(
                f"column {column!r} must hold numbers, has dtype "
                f"{table[column].dtype}{where}"
            )
        values = table[column].to_numpy(dtype=np.float64)
        if column in ("eps_id", "t"):
            continue  # checked as integers below
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise SchemaError(f"column {column!r} row {int(bad[0])} is not finite")
    reward = table["reward"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.abs(reward) > FLOAT32_MAX)
    if bad.size:
        raise SchemaError(
            f"column 'reward' row {int(bad[0])} is {reward[bad[0]]!r}, "
            "beyond the float32 "
            "range learners train in"
        )
    eps = check_integer_array("column 'eps_id'", table["eps_id"].to_numpy())
    steps = check_integer_array("column 't'", table["t"].to_numpy(), low=0)
    bad = np.flatnonzero(~table["done"].isin([0, 1]).to_numpy())
    if bad.size:
        raise SchemaError(
            f"column 'done' row {int(bad[0])} is "
            f"{table['done'].iloc[bad[0]]!r}; must be a boolean"
        )
    repeated = (
        pd.DataFrame({"eps_id": eps, "t": steps}).duplicated(keep="first").to_numpy()
    )
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise SchemaError(
            f"columns ('eps_id', 't'): row {row} repeats episode "
            f"{eps[row]} step {steps[row]}"
        )
    bad = np.flatnonzero(~table["action"].isin([0, 1]).to_numpy())
    if bad.size:
        raise SchemaError(
            f"column 'action' row {int(bad[0])} is "
            f"{table['action'].iloc[bad[0]]!r}; must be 0 or 1"
        )
    prob = table["action_prob"].to_numpy()
    bad = np.flatnonzero((prob <= 0) | (prob > 1))
    if bad.size:
        raise SchemaError(
            f"column 'action_prob' row {int(bad[0])} is "
            f"{prob[bad[0]]!r}; must be in (0, 1]"
        )


def write_parquet(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Validate and write the transition table atomically (columnar, compressed)."""
    validate_table(table)
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False, compression="zstd")
    return path


def read_parquet(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a transition table written by :func:`write_parquet`."""
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataFormatError(f"{path}: not a readable Parquet file ({exc})") from exc
    validate_table(table)
    return table


def write_sample_batches(
    table: pd.DataFrame, path: str | os.PathLike[str], rows_per_line: int = 50
) -> Path:
    """Write a transition table as RLlib JSON SampleBatch lines (uncompressed),
    atomically."""
    validate_table(table)
    obs = table[list(FEATURE_NAMES)].to_numpy(np.float32)
    new_obs = table[list(NEXT_FEATURE_NAMES)].to_numpy(np.float32)
    with atomic_write(path, "w") as handle:
        for start in range(0, len(table), rows_per_line):
            rows = slice(start, start + rows_per_line)
            part = table.iloc[rows]
            batch = {
                "type": "SampleBatch",
                "obs": obs[rows].round(6).tolist(),
                "new_obs": new_obs[rows].round(6).tolist(),
                "actions": part["action"].astype(int).tolist(),
                "rewards": part["reward"].astype(float).round(6).tolist(),
                "dones": part["done"].astype(bool).tolist(),
                "eps_id": part["eps_id"].astype(int).tolist(),
                "action_prob": part["action_prob"].astype(float).round(6).tolist(),
                "t": part["t"].astype(int).tolist(),
            }
            handle.write(json.dumps(batch) + "\n")
    return Path(path)


def write_release(
    table: pd.DataFrame,
    root: str | os.PathLike[str],
    start_date: str = "2020-10-27",
    rows_per_line: int = 50,
) -> list[Path]:
    """Write a table in the release's layout: one folder per day (``start_date +
    t``)."""
    day0 = pd.Timestamp(start_date)
    paths = []
    for t, part in table.groupby("t", sort=True):
        day = (day0 + pd.Timedelta(days=int(t))).strftime("%Y-%m-%d")
        paths.append(
            write_sample_batches(
                part, Path(root) / day / "output-0.json", rows_per_line
            )
        )
    return paths


def to_mdp_dataset(table: pd.DataFrame) -> Any:
    """A d3rlpy ``MDPDataset`` (discrete actions) from a transition table.

    Rows are sorted by episode and step; ``done`` becomes the terminal flag, as the
    release marks the end of each user's logging window (no bootstrapping past it).
    """
    from pulse_lib.book import quiet_imports

    quiet_imports()  # d3rlpy imports legacy gym, which prints an 'unmaintained' notice
    import d3rlpy

    validate_table(table)
    ordered = table.sort_values(["eps_id", "t"], kind="stable")
    last = ordered["eps_id"].to_numpy()
    terminals = np.zeros(len(ordered), np.float32)
    ends = np.flatnonzero(np.r_[last[1:] != last[:-1], True])
    terminals[ends] = 1.0  # every episode ends at its last logged row
    return d3rlpy.dataset.MDPDataset(
        observations=ordered[list(FEATURE_NAMES)].to_numpy(np.float32),
        actions=ordered["action"].to_numpy(np.int64),
        rewards=ordered["reward"].to_numpy(np.float32),
        terminals=terminals,
        action_space=d3rlpy.constants.ActionSpace.DISCRETE,
        action_size=2,
    )


def observations(table: pd.DataFrame, *, next_: bool = False) -> np.ndarray:
    """The ``(rows, 63)`` float32 observation matrix of a table (or its next
    observations)."""
    return table[list(NEXT_FEATURE_NAMES if next_ else FEATURE_NAMES)].to_numpy(
        np.float32
    )
