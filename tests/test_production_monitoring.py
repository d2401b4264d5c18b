"""Daily monitoring: PSI drift, action rates, reward, OPE and alerts
(pulse_lib.production.monitoring)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from pulse_lib import ope
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.production import monitoring as M
from pulse_lib.production.versioning import FeatureSchema

matplotlib.use("Agg")

SCHEMA = FeatureSchema(("age", "flag", "score", "value"), "1")


def _users(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Features of four kinds: integer-valued, binary, continuous, skewed."""
    return pd.DataFrame(
        {
            "age": rng.integers(1, 7, n).astype(float),
            "flag": (rng.random(n) < 0.3).astype(float),
            "score": rng.normal(0.0, 1.0, n),
            "value": rng.lognormal(3.0, 1.0, n),
        }
    )


def _log(days: int, n: int, seed: int, shift: dict | None = None) -> pd.DataFrame:
    """A decision log from a logging policy sending with probability 0.5; the reward
    is 1 for a send to a user with score > 0, else 0. ``shift`` maps day -> (feature,
    added amount)."""
    rng = np.random.default_rng(seed)
    parts = []
    for day in range(days):
        users = _users(n, rng)
        if shift and day in shift:
            feature, amount = shift[day]
            users[feature] = users[feature] + amount
        action = (rng.random(n) < 0.5).astype(int)
        users["day"] = day
        users["action"] = action
        users["action_prob"] = 0.5
        users["reward"] = ((action == 1) & (users["score"] > 0)).astype(float)
        parts.append(users)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def reference():
    return M.DriftReference(_users(20_000, np.random.default_rng(99)), SCHEMA)


def test_psi_equals_a_hand_computation():
    p, q = [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]
    by_hand = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.4 - 0.3) * math.log(0.4 / 0.3)
    assert M.psi(p, q) == pytest.approx(by_hand, rel=1e-12)
    assert M.psi([5, 3, 2], [4, 4, 2]) == pytest.approx(by_hand, rel=1e-12)  # counts
    assert M.psi(p, p) == 0.0
    # an empty bin: floored at PSI_FLOOR, stated in the docs
    floor = M.PSI_FLOOR
    empty = (floor - 0.5) * math.log(floor / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert M.psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx(empty, rel=1e-12)
    with pytest.raises(SchemaError, match="3 bins, current has 2"):
        M.psi(p, [0.5, 0.5])
    with pytest.raises(SchemaError, match="sum to 0"):
        M.psi(p, [0, 0, 0])


def test_reference_bins_and_psi_on_a_tiny_table():
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 0.0, 1.0, 1.0]})
    schema = FeatureSchema(("x", "b"), "1")
    drift = M.DriftReference(ref, schema, n_bins=2)
    # median of x is 2.5: bins (-inf, 2.5], (2.5, inf); b gets one bin per value
    np.testing.assert_array_equal(drift.edges[0], [2.5])
    np.testing.assert_array_equal(drift.proportions[0], [0.5, 0.5])
    np.testing.assert_array_equal(drift.edges[1], [0.5])
    cur = pd.DataFrame({"x": [1.0, 1.0, 1.0, 5.0], "b": [1.0, 1.0, 1.0, 1.0]})
    got = drift.psi(cur)
    x_hand = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    f = M.PSI_FLOOR
    b_hand = (f - 0.5) * math.log(f / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert got["x"] == pytest.approx(x_hand, rel=1e-12)
    assert got["b"] == pytest.approx(b_hand, rel=1e-12)


def test_no_drift_no_alert(reference):
    log = _log(days=3, n=4_000, seed=1)
    report = M.daily_report(log, reference, schema=SCHEMA)
    assert list(report.columns) == list(M.REPORT_COLUMNS)
    psi = report[report["metric"] == "psi"]["value"]
    assert len(psi) == 3 * SCHEMA.width
    assert psi.max() < M.PSI_WARN
    found = M.alerts(report)
    assert found.empty, found["message"].tolist()


def test_injected_drift_in_one_feature_gives_exactly_that_alert(reference):
    log = _log(days=3, n=4_000, seed=2, shift={2: ("score", 1.0)})
    report = M.daily_report(log, reference, schema=SCHEMA)
    found = M.alerts(report)
    assert len(found) == 1, found["message"].tolist()
    alert = found.iloc[0]
    assert (alert["day"], alert["metric"], alert["feature"]) == (2, "psi", "score")
    assert alert["level"] == "alert" and alert["value"] >= M.PSI_ALERT
    assert "day 2: psi of score" in alert["message"]
    # a smaller shift: a warning, not an alert
    log = _log(days=1, n=20_000, seed=3, shift={0: ("score", 0.45)})
    found = M.alerts(M.daily_report(log, reference, schema=SCHEMA))
    assert found[["level", "feature"]].values.tolist() == [["warn", "score"]]


def _aging_log(days: int, n: int, seed: int, shift: dict | None = None) -> pd.DataFrame:
    """Like :func:`_log`, but ``age`` grows with the day by construction (as the
    recency features of a cohort do): day ``d`` draws ages ``d+1 .. d+6``."""
    log = _log(days, n, seed, shift)
    log["age"] = log["age"] + log["day"]
    return log


def test_per_day_reference_is_quiet_where_a_pooled_one_pages(tmp_path):
    training = _aging_log(days=5, n=4_000, seed=11).rename(columns={"day": "t"})
    pooled = M.DriftReference(training, SCHEMA)
    per_day = M.DriftReference(training, SCHEMA, by="t")
    assert sorted(per_day.days) == [0, 1, 2, 3, 4]
    assert per_day.for_day(np.int64(3)).n_rows == 4_000
    assert pooled.for_day(3) is pooled
    live = _aging_log(days=5, n=4_000, seed=12)  # the same process: no drift
    loud = M.alerts(M.daily_report(live, pooled, schema=SCHEMA))
    assert set(loud["feature"]) == {"age"} and len(loud) >= 4  # every day but the middle
    quiet = M.alerts(M.daily_report(live, per_day, schema=SCHEMA))
    assert quiet.empty, quiet["message"].tolist()
    # an injected drift still raises exactly its alert
    drifted = _aging_log(days=5, n=4_000, seed=13, shift={3: ("score", 1.0)})
    found = M.alerts(M.daily_report(drifted, per_day, schema=SCHEMA))
    assert found[["day", "level", "feature"]].values.tolist() == [[3, "alert", "score"]]
    # a log day the reference never saw, and a bad day column, are named
    with pytest.raises(SchemaError, match=r"no rows for day 5 .*0 to 4"):
        M.daily_report(_aging_log(days=6, n=100, seed=14), per_day, schema=SCHEMA)
    with pytest.raises(SchemaError, match="no day column 'day'"):
        M.DriftReference(training, SCHEMA, by="day")
    gaps = training.astype({"t": float})
    gaps.loc[7, "t"] = np.nan
    with pytest.raises(SchemaError, match="'t' is missing at row 7"):
        M.DriftReference(gaps, SCHEMA, by="t")


def test_per_day_reference_matches_dates():
    dates = pd.to_datetime(["2024-01-01", "2024-01-02"])
    training = _log(days=2, n=2_000, seed=21)
    training["day"] = dates[training["day"]]
    per_day = M.DriftReference(training, SCHEMA, by="day")
    live = _log(days=2, n=2_000, seed=22)
    live["day"] = dates[live["day"]]
    report = M.daily_report(live, per_day, schema=SCHEMA)
    assert report["day"].nunique() == 2 and M.alerts(report).empty


def test_rates_reward_and_ope_equal_direct_computations(reference):
    log = _log(days=2, n=3_000, seed=4)

    def policy(obs):  # send only to users with a positive score
        return (obs[:, 2] > 0).astype(float)

    report = M.daily_report(log, reference, policy=policy, schema=SCHEMA)
    day1 = log[log["day"] == 1]
    wide = report[report["day"] == 1].set_index("metric")
    assert wide.loc["n_decisions", "value"] == 3_000
    assert wide.loc["send_rate", "value"] == pytest.approx(day1["action"].mean())
    assert wide.loc["mean_reward", "value"] == pytest.approx(day1["reward"].mean())
    p_send = policy(day1[list(SCHEMA.names)].to_numpy())
    pi = np.where(day1["action"] == 1, p_send, 1 - p_send)
    expected = ope.snips(day1["reward"], pi, day1["action_prob"])
    assert wide.loc["ope_snips", "value"] == pytest.approx(expected.value)
    assert (
        wide.loc["ope_snips", "low"],
        wide.loc["ope_snips", "high"],
    ) == pytest.approx(expected.ci())
    # truth: the target sends to every score > 0 user and earns 1 from each
    truth = float((day1["score"] > 0).mean())
    assert abs(wide.loc["ope_snips", "value"] - truth) < 3 * expected.stderr + 1e-9
    # the logging policy earns about half of that: a floor above it raises an alert
    found = M.alerts(report, M.Thresholds(min_mean_reward=0.4, send_rate_high=0.45))
    assert set(found["metric"]) == {"mean_reward", "send_rate"}
    assert (found["level"] == "alert").all() and len(found) == 4


def test_bad_input_is_named(reference):
    log = _log(days=1, n=50, seed=5)
    with pytest.raises(SchemaError, match=r"lacks column\(s\) \['reward'\]"):
        M.daily_report(log.drop(columns="reward"), reference, schema=SCHEMA)
    with pytest.raises(SchemaError, match=r"lacks 1 feature column\(s\): \['value'\]"):
        M.daily_report(log.drop(columns="value"), reference, schema=SCHEMA)
    bad = log.copy()
    bad.loc[7, "score"] = np.nan
    with pytest.raises(
        SchemaError, match=r"column 'score' has a non-finite value at row 7"
    ):
        M.daily_report(bad, reference, schema=SCHEMA)
    bad = log.copy()
    bad.loc[3, "action"] = 2
    with pytest.raises(SchemaError, match=r"'action' must be 0 or 1; row 3 is 2"):
        M.daily_report(bad, reference, schema=SCHEMA)
    bad = log.copy()
    bad.loc[4, "action_prob"] = 0.0
    with pytest.raises(SchemaError, match=r"'action_prob' must be in \(0, 1\]; row 4"):
        M.daily_report(bad, reference, schema=SCHEMA)
    bad = log.copy()
    bad.loc[5, "reward"] = np.inf
    with pytest.raises(SchemaError, match=r"'reward' must be finite; row 5 is inf"):
        M.daily_report(bad, reference, schema=SCHEMA)
    with pytest.raises(SchemaError, match="reference has no rows"):
        M.DriftReference(log.iloc[:0], SCHEMA)
    other = FeatureSchema(SCHEMA.names, "2")
    with pytest.raises(SchemaError, match="feature version '1' here but '2' there"):
        M.daily_report(log, reference, schema=other)
    with pytest.raises(ConfigError, match="psi_alert"):
        M.Thresholds(psi_warn=0.3, psi_alert=0.2)
    with pytest.raises(ConfigError, match="send_rate_low"):
        M.Thresholds(send_rate_low=1.5)
    with pytest.raises(SchemaError, match="report lacks"):
        M.alerts(pd.DataFrame({"day": [0]}))


def test_plot_report_draws_three_panels(reference):
    log = _log(days=3, n=500, seed=6, shift={2: ("value", 50.0)})
    report = M.daily_report(
        log, reference, policy=lambda o: np.full(len(o), 0.5), schema=SCHEMA
    )
    fig = M.plot_report(report, top=2)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == [
        "send rate",
        "reward per decision",
        "feature drift (PSI)",
    ]
    labels = [line.get_label() for line in axes[2].get_lines()]
    assert labels[0] == "value"  # the drifted feature leads the top list
    import matplotlib.pyplot as plt

    plt.close(fig)
