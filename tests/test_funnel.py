"""The funnel schema, loader, generator, simulator and reward."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from pulse_lib import funnel
from pulse_lib.errors import DataFormatError, SchemaError


def test_shipped_dataset_matches_its_data_card_and_the_generator(repo_root, shipped_funnel):
    logs, truth = shipped_funnel
    card = (repo_root / "datasets" / "funnel" / "DATACARD.md").read_text()
    digest = hashlib.sha256((repo_root / "datasets/funnel/v2/funnel.csv").read_bytes()).hexdigest()
    assert digest in card, "the data card's sha256 does not match funnel.csv; update the card"
    assert truth.allclose(funnel.TRUE_PARAMS)
    pd.testing.assert_frame_equal(funnel.generate_funnel(), logs)
    assert len(logs) == 730 * 4 and set(logs["channel"]) == set(funnel.TRUE_PARAMS.channels)


def test_generator_depends_on_seed():
    a = funnel.generate_funnel(n_days=30, seed=1)
    b = funnel.generate_funnel(n_days=30, seed=2)
    assert not a["impressions"].equals(b["impressions"])
    pd.testing.assert_frame_equal(a, funnel.generate_funnel(n_days=30, seed=1))


def _good(shipped_funnel) -> pd.DataFrame:
    return shipped_funnel[0].head(40).copy()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.drop(columns="clicks"), r"missing column\(s\) \['clicks'\]"),
        (lambda d: d.assign(spend=d["spend"].where(d.index != 3, -1.0)), r"'spend' is negative at row\(s\) 3"),
        (lambda d: d.assign(impressions=d["impressions"].astype(float).where(d.index != 5)),
         r"'impressions' has missing values \(NaN\) at row\(s\) 5"),
        (lambda d: d.astype({"clicks": object}).assign(clicks=lambda x: x["clicks"].where(x.index != 2, "many")),
         r"'clicks' has non-numeric values at row\(s\) 2"),
        (lambda d: d.assign(date=d["date"].astype(str).where(d.index != 4, "yesterday")),
         r"'date': row 4 is 'yesterday', not a date in format '%Y-%m-%d'"),
        (lambda d: d.assign(holiday=d["holiday"].where(d.index != 6, 2)), r"'holiday' must be 0 or 1"),
        (lambda d: d.assign(clicks=d["clicks"].astype(float).where(d.index != 7, 1.5)), r"whole counts.*row\(s\) 7"),
        (lambda d: d.assign(clicks=d["clicks"].where(d.index != 8, 10**9)), r"'clicks' exceeds 'impressions' at row\(s\) 8"),
        (lambda d: d.assign(acquisitions=d["acquisitions"].where(d.index != 9, 10**6)), r"'acquisitions' exceeds 'clicks'"),
        (lambda d: pd.concat([d, d.head(1)], ignore_index=True), r"\(date, channel\) pairs repeat"),
        (lambda d: d.assign(spend=d["spend"].where(d.index != 1, np.inf)), r"'spend' has infinite values at row\(s\) 1"),
        (lambda d: d.head(0), r"no rows"),
    ],
)
def test_validate_names_the_problem(shipped_funnel, mutate, message):
    with pytest.raises(SchemaError, match=message):
        funnel.validate_funnel(mutate(_good(shipped_funnel)))


def test_validate_accepts_a_real_table_without_acquisitions_and_with_extra_columns(shipped_funnel):
    table = _good(shipped_funnel).drop(columns="acquisitions").assign(campaign="x")
    table["date"] = table["date"].dt.strftime("%Y-%m-%d")  # dates as text, as in a CSV export
    out = funnel.validate_funnel(table.sample(frac=1, random_state=0))
    assert list(out.columns) == list(funnel.REQUIRED_COLUMNS)
    assert out["date"].is_monotonic_increasing and out["impressions"].dtype == np.int64


def test_load_funnel_round_trips_csv_and_parquet_and_rejects_bad_files(tmp_path, shipped_funnel):
    logs = _good(shipped_funnel)
    logs.to_csv(tmp_path / "t.csv", index=False)
    logs.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(funnel.load_funnel(tmp_path / "t.csv"), logs)
    pd.testing.assert_frame_equal(funnel.load_funnel(tmp_path / "t.parquet"), logs)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataFormatError, match="cannot be read"):
        funnel.load_funnel(tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError, match="unknown table format"):
        (tmp_path / "t.json").write_text("[]")
        funnel.load_funnel(tmp_path / "t.json")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        funnel.load_funnel(tmp_path / "missing.csv")


def test_channel_params_validation_and_draw_axis():
    truth = funnel.TRUE_PARAMS
    with pytest.raises(SchemaError, match=r"imp_spend has shape \(3,\)"):
        funnel.ChannelParams(**{**{n: getattr(truth, n) for n in truth.ARRAY_FIELDS},
                                "channels": truth.channels, "imp_spend": np.ones(3)})
    with pytest.raises(SchemaError, match="non-finite"):
        funnel.ChannelParams(**{**{n: getattr(truth, n) for n in truth.ARRAY_FIELDS},
                                "channels": truth.channels, "clk_phi": np.array([1, np.nan, 1, 1])})
    draws = funnel.ChannelParams(channels=truth.channels,
                                 **{n: np.stack([getattr(truth, n)] * 5) for n in truth.ARRAY_FIELDS})
    assert draws.n_draws == 5 and draws.draw(2).n_draws is None
    assert draws.mean().allclose(truth)
    assert funnel.ChannelParams.from_dict(truth.to_dict()).allclose(truth)


def test_simulate_broadcasts_over_batch_and_posterior_draws():
    truth = funnel.TRUE_PARAMS
    rng = np.random.default_rng(0)
    out = funnel.simulate_funnel(truth, np.full((3, 5, 4), 10.0), np.zeros((3, 5)), rng)
    assert out["clicks"].shape == (3, 5, 4)
    assert np.all(out["clicks"] <= out["impressions"]) and np.all(out["acquisitions"] <= out["clicks"])
    draws = funnel.ChannelParams(channels=truth.channels,
                                 **{n: np.stack([getattr(truth, n)] * 7) for n in truth.ARRAY_FIELDS})
    assert funnel.simulate_funnel(draws, np.full((7, 4), 10.0), np.zeros(7), rng)["impressions"].shape == (7, 4)
    with pytest.raises(SchemaError, match=r"spend must have shape \(\.\.\., 4\)"):
        funnel.simulate_funnel(truth, np.ones(3), 0, rng)
    with pytest.raises(SchemaError, match="finite and >= 0"):
        funnel.simulate_funnel(truth, np.array([1.0, -1.0, 1.0, 1.0]), 0, rng)


def test_simulated_means_and_dispersion_match_the_model():
    truth = funnel.TRUE_PARAMS
    n = 40_000
    rng = np.random.default_rng(1)
    spend = np.full((n, 4), 20.0)
    out = funnel.simulate_funnel(truth, spend, np.zeros(n), rng)
    mu = funnel.expected_impressions(truth, spend[0], np.array(0.0))
    sample_mean = out["impressions"].mean(axis=0)
    standard_error = np.sqrt((mu + mu**2 / truth.imp_phi) / n)
    assert np.all(np.abs(sample_mean - mu) < 5 * standard_error)
    variance = out["impressions"].var(axis=0)
    assert np.allclose(variance, mu + mu**2 / truth.imp_phi, rtol=0.1)


def test_reward_is_click_value_net_of_spend():
    clicks = np.array([[0, 9, 99, 999]])
    spend = np.array([[1.0, 2.0, 3.0, 4.0]])
    v, w = funnel.VALUE_PER_CLICK, funnel.DEFAULT_COST_WEIGHT
    assert funnel.reward(clicks, spend) == pytest.approx([v * 1107 / 1000 - w * 10])
    with_organic = funnel.reward(clicks, spend, organic=500.0)
    assert with_organic == pytest.approx([v * 1607 / 1000 - w * 10])
    with pytest.raises(SchemaError, match="same shape"):
        funnel.reward(clicks, spend[:, :2])
    with pytest.raises(SchemaError, match=">= 0"):
        funnel.reward(-clicks, spend)


def test_zero_spend_buys_zero_paid_impressions_and_clicks():
    truth = funnel.TRUE_PARAMS
    spend = np.array([[0.0, 10.0, 0.0, 5.0]] * 200)
    out = funnel.simulate_funnel(truth, spend, np.zeros(200), np.random.default_rng(0))
    assert np.all(out["impressions"][:, [0, 2]] == 0) and np.all(out["clicks"][:, [0, 2]] == 0)
    assert np.all(out["impressions"][:, [1, 3]] > 0)
    assert np.all(funnel.expected_clicks(truth, spend[0], 0.0)[[0, 2]] == 0)
    # organic clicks do not depend on spend, and holidays lift them
    assert funnel.organic_clicks(1) > funnel.organic_clicks(0) > 0


def test_expected_clicks_matches_simulated_clicks():
    truth = funnel.TRUE_PARAMS
    n = 40_000
    spend = np.tile([20.0, 15.0, 10.0, 5.0], (n, 1))
    for holiday in (0.0, 1.0):
        out = funnel.simulate_funnel(truth, spend, np.full(n, holiday), np.random.default_rng(3))
        exact = funnel.expected_clicks(truth, spend[0], holiday)
        np.testing.assert_allclose(out["clicks"].mean(axis=0), exact, rtol=0.01)
    # diminishing returns: doubling spend less than doubles expected clicks
    ratio = funnel.expected_clicks(truth, 2 * spend[0], 0.0) / funnel.expected_clicks(
        truth, spend[0], 0.0)
    np.testing.assert_allclose(ratio, 2 ** (truth.imp_spend * truth.clk_impressions))
    assert np.all(ratio < 2)


def test_spend_in_raw_currency_does_not_pass_as_thousands(shipped_funnel):
    logs = shipped_funnel[0]
    raw = logs.assign(spend=logs["spend"] * 1000)
    with pytest.raises(SchemaError, match=r"raw currency.*spend_unit='currency'"):
        funnel.validate_funnel(raw)
    converted = funnel.validate_funnel(raw, spend_unit="currency")
    np.testing.assert_allclose(converted["spend"], logs["spend"])
    with pytest.raises(SchemaError, match="too small"):
        funnel.validate_funnel(logs.assign(spend=logs["spend"] / 1e6))
    with pytest.raises(SchemaError, match="spend_unit"):
        funnel.validate_funnel(logs, spend_unit="euros")
    # a currency whose CPMs really are that high may widen the range explicitly
    assert len(funnel.validate_funnel(raw, cpm_range=(0.01, 1e5))) == len(logs)


def test_shipped_version_1_is_not_silently_loaded():
    with pytest.raises(DataFormatError, match="version 1"):
        funnel.load_shipped_funnel(version=1)


def test_holiday_calendar_and_human_policy():
    dates = pd.date_range("2017-01-01", "2017-12-31")
    flags = funnel.holiday_flags(dates)
    assert flags.sum() == len(funnel.HOLIDAYS_MONTH_DAY) and flags[0] == 1
    spend = funnel.human_spend(dates, np.random.default_rng(0))
    assert spend.shape == (365, 4) and np.all(spend > 0)
    shares = spend.sum(axis=0) / spend.sum()
    assert np.allclose(shares, funnel.HUMAN_SHARES, atol=0.02)
    assert re.match(r"\d", f"{spend.sum():.0f}")
