"""Part II's budget problem (issue 12): channel-checked policies, ranges from the fitted table,
the extrapolation warning, the oracle's plan, and a problem where allocation matters."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from pulse_lib import budget_env as be
from pulse_lib.errors import SchemaError
from pulse_lib.funnel import HUMAN_SHARES, TRUE_PARAMS


def test_human_shares_follow_channel_names_not_positions():
    """A posterior's channels are sorted by name; the human's shares must follow the names."""
    from pulse_lib.channel_model import reorder_params

    sorted_params = reorder_params(TRUE_PARAMS, tuple(sorted(TRUE_PARAMS.channels)))
    env = be.BatchedBudgetEnv(sorted_params, n_envs=400)
    env.reset(seed=0)
    policy = be.human_policy(np.random.default_rng(0))
    spend = be.actions_to_spend(policy(None, env.state, env.config), env.state.remaining)
    expected = [be.HUMAN_SHARES_BY_CHANNEL[c] for c in sorted_params.channels]
    np.testing.assert_allclose(spend.sum(0) / spend.sum(), expected, atol=0.02)


def _five_channels() -> be.ChannelParams:
    five = be.synthetic_posterior(TRUE_PARAMS, 5, 0.0, np.random.default_rng(0))
    return dataclasses.replace(
        five, channels=(*five.channels, "email"),
        **{f: np.concatenate([getattr(five, f), getattr(five, f)[:, :1]], axis=1)
           for f in five.ARRAY_FIELDS})


def test_share_vectors_are_checked_against_the_channels_by_name():
    env = be.BatchedBudgetEnv(_five_channels(), n_envs=2)
    env.reset(seed=0)
    human = be.human_policy(np.random.default_rng(0), shares=HUMAN_SHARES)
    with pytest.raises(SchemaError, match=r"4 shares \[0.4, 0.3, 0.2, 0.1\] for the 5 channels"):
        human(None, env.state, env.config)
    with pytest.raises(SchemaError, match=r"missing \['email'\]"):
        be.human_policy(np.random.default_rng(0))(None, env.state, env.config)
    with pytest.raises(SchemaError, match=r"unknown \['tv'\]"):
        be.static_plan_policy({"tv": 1.0})(None, env.state, env.config)
    with pytest.raises(SchemaError, match="sum to 1"):
        be.static_plan_policy({c: 0.5 for c in env.params.channels})(None, env.state, env.config)


def test_budget_range_and_logged_spend_come_from_the_table(shipped_funnel):
    logs, truth = shipped_funnel
    config = be.BudgetEnvConfig.from_table(logs, channels=truth.channels)
    daily = logs.groupby("date")["spend"].sum()
    windows = daily.rolling(30).sum().dropna()
    assert config.budget_range == pytest.approx(tuple(np.quantile(windows, [0.1, 0.9])))
    lows, highs = config.spend_bounds(truth.channels)
    for k, ch in enumerate(truth.channels):
        assert lows[k] == logs.loc[logs.channel == ch, "spend"].min()
        assert highs[k] == logs.loc[logs.channel == ch, "spend"].max()
    with pytest.raises(SchemaError, match="not in the table"):
        be.BudgetEnvConfig.from_table(logs, channels=("search", "tv"))
    renamed = dataclasses.replace(TRUE_PARAMS, channels=("a", "b", "c", "d"))
    with pytest.raises(SchemaError, match="lack"):
        be.BatchedBudgetEnv(renamed, 2, config)


def test_env_warns_once_when_spend_leaves_the_logged_range(shipped_funnel):
    logs, truth = shipped_funnel
    config = be.BudgetEnvConfig.from_table(logs, channels=truth.channels)
    env = be.BatchedBudgetEnv(truth, n_envs=4, config=config)
    env.reset(seed=0, budgets=2000.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.step(np.tile([1 / 30, 0.4, 0.3, 0.2, 0.1], (4, 1)))  # inside the logged range
        assert not caught
        env.step(np.tile([0.5, 0.0, 0.0, 0.0, 1.0], (4, 1)))  # half the budget on video
        env.step(np.tile([0.5, 0.0, 0.0, 0.0, 1.0], (4, 1)))
    messages = [str(w.message) for w in caught if issubclass(w.category, be.SpendRangeWarning)]
    assert len(messages) == 1 and "'video' is outside the logged range" in messages[0]


def test_oracle_plan_is_optimal_and_spends_the_budget():
    env = be.BatchedBudgetEnv(TRUE_PARAMS, n_envs=3)
    env.reset(seed=0, budgets=2000.0, starts=[0, 170, 350])  # 350: the year-end season
    days = env.state.holidays[:, :30]
    plan = be.plan_remaining(TRUE_PARAMS, days, env.state.remaining)
    np.testing.assert_allclose(plan.sum(axis=(1, 2)), 2000.0, rtol=1e-9)

    def value(spend: np.ndarray) -> np.ndarray:
        return sum(be.expected_daily_value(TRUE_PARAMS, spend[:, t], holiday=days[:, t])
                   for t in range(30))

    best = value(plan)
    gen = np.random.default_rng(1)
    for _ in range(20):  # budget-preserving perturbations never do better
        other = plan * np.exp(0.2 * gen.standard_normal(plan.shape))
        other *= 2000.0 / other.sum(axis=(1, 2), keepdims=True)
        assert np.all(value(other) <= best + 1e-9)
    assert np.all(best > value(np.full_like(plan, 2000.0 / 120)))
    held = days[2] == 1  # holidays lift the response: they get more spend than normal days
    assert held.any() and plan[2][held].sum(1).mean() > plan[2][~held].sum(1).mean()


def test_allocation_matters_on_the_default_problem():
    """Zero spend < even split < static planner < oracle; an even split earns <= 80 % of the
    oracle's lift over spending nothing (issue 12's bar for a problem worth learning)."""
    env = be.BatchedBudgetEnv(TRUE_PARAMS, n_envs=512)
    policies = {"zero": be.zero_policy, "even": be.even_policy,
                "human": be.human_policy(np.random.default_rng(0)),
                "static": be.planner_policy(TRUE_PARAMS), "oracle": be.oracle_policy}
    returns = {name: be.run_policy(env, p, seed=4)["returns"].mean() for name, p in policies.items()}
    lift = {k: (v - returns["zero"]) / (returns["oracle"] - returns["zero"])
            for k, v in returns.items()}
    assert 0 < lift["even"] < lift["static"] < 1.0
    assert lift["even"] <= 0.80 and lift["human"] <= 0.90, lift


def test_budget_problem_benchmark_quick_mode_writes_valid_json(tmp_path, repo_root):
    out = tmp_path / "budget_problem.json"
    proc = subprocess.run(
        [sys.executable, str(repo_root / "benchmarks" / "budget_problem.py"), "--quick",
         "--out", str(out)], capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {"machine", "truth", "posterior_worlds", "targets", "ppo_history"} <= set(result)
    for name in ("zero spend", "even split", "human rule", "static planner", "PPO", "oracle"):
        entry = result["truth"][name]
        assert entry["ci95_low"] <= entry["mean"] <= entry["ci95_high"]
        assert entry["n"] >= 2
    assert result["truth"]["zero spend"]["mean"] == 0.0
    assert result["truth"]["oracle"]["mean"] == 1.0
    history = result["ppo_history"]["seed_0"]
    assert {"approx_kl", "clip_fraction", "value_loss", "mean_return"} <= set(history[0])
