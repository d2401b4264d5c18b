"""Tests of the Open Bandit Dataset loader (pulse_lib.nba.obd); skipped pieces need obp."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pulse_lib.errors import ConfigError, SchemaError, SetupError
from pulse_lib.nba import obd

HAS_OBP = importlib.util.find_spec("obp") is not None


@pytest.mark.skipif(not HAS_OBP, reason="obp not installed")
def test_loads_the_bundled_random_sample() -> None:
    df = obd.load_obd("random", "all")
    assert len(df) == 10_000
    assert set(df["position"].unique()) == {0, 1, 2}
    assert df["item_id"].between(0, 79).all()
    np.testing.assert_allclose(df["propensity_score"], 1 / 80)
    assert df["timestamp"].is_monotonic_increasing


@pytest.mark.skipif(not HAS_OBP, reason="obp not installed")
def test_bts_action_distribution_sums_to_one_per_position() -> None:
    dist = obd.bts_action_dist("all", n_sim=2_000)
    assert dist.shape == (80, 3)
    np.testing.assert_allclose(dist.sum(axis=0), 1.0, atol=1e-9)


def _write(tmp_path: Path, df: pd.DataFrame) -> Path:
    path = tmp_path / "all.csv"
    df.to_csv(path)
    return path


def _good() -> pd.DataFrame:
    return pd.DataFrame({"timestamp": ["2019-11-24 00:00:00+00:00"] * 3, "item_id": [0, 5, 79],
                         "position": [1, 2, 3], "click": [0, 1, 0], "propensity_score": [0.0125] * 3})


def test_broken_files_raise_clear_errors(tmp_path: Path) -> None:
    assert len(obd.load_obd(path=_write(tmp_path, _good()))) == 3
    with pytest.raises(SchemaError, match="missing column"):
        obd.load_obd(path=_write(tmp_path, _good().drop(columns="click")))
    bad = _good()
    bad.loc[1, "propensity_score"] = 0.0
    with pytest.raises(SchemaError, match="'propensity_score' row 1"):
        obd.load_obd(path=_write(tmp_path, bad))
    bad = _good()
    bad["item_id"] = bad["item_id"].astype(object)
    bad.loc[2, "item_id"] = "x"
    with pytest.raises(SchemaError, match="'item_id' row 2"):
        obd.load_obd(path=_write(tmp_path, bad))
    bad = _good()
    bad.loc[0, "position"] = 4
    with pytest.raises(SchemaError, match="'position' row 0"):
        obd.load_obd(path=_write(tmp_path, bad))
    with pytest.raises(ConfigError, match="campaign"):
        obd.load_obd("random", "kids")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        obd.load_obd(path=tmp_path / "nope.csv")


def test_a_bundled_file_missing_from_obp_is_a_setup_error_naming_it(tmp_path, monkeypatch) -> None:
    (tmp_path / "random" / "all").mkdir(parents=True)
    monkeypatch.setattr(obd, "obd_dir", lambda: tmp_path)
    with pytest.raises(SetupError, match=r"not found: .*random/all/all\.csv.*pip install"):
        obd.load_obd("random", "all")


def test_missing_obp_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "obp" else real(name, *a))
    with pytest.raises(SetupError, match="pip install"):
        obd.obd_dir()
