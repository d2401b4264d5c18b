"""The budget environment of Part II: gymnasium contract, invariants, agreement of both front ends."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pulse_lib import budget_env as be
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.funnel import HUMAN_SHARES, TRUE_PARAMS, organic_clicks, reward

K = TRUE_PARAMS.n_channels


@pytest.fixture(scope="module")
def posterior():
    """Synthetic draws: the truth plus small Gaussian noise (Part I's posterior has this shape)."""
    return be.synthetic_posterior(TRUE_PARAMS, n_draws=50, scale=0.05, rng=np.random.default_rng(0))


def test_passes_gymnasium_env_checker(posterior):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite Box bounds and the missing spec only warn
        check_env(be.BudgetEnv(posterior))


def test_batched_env_of_one_reproduces_the_gymnasium_env_exactly(posterior):
    gym_env = be.BudgetEnv(posterior)
    batched = be.BatchedBudgetEnv(posterior, n_envs=1)
    obs_gym, info = gym_env.reset(seed=11)
    obs_batch = batched.reset(seed=11)
    np.testing.assert_array_equal(obs_gym, obs_batch[0])
    assert info["draw"] == batched.state.draw_index[0] >= 0
    actions = np.random.default_rng(5).uniform(size=(30, K + 1))
    for action in actions:
        obs_gym, r_gym, terminated, truncated, day = gym_env.step(action)
        obs_batch, r_batch, done, day_batch = batched.step(action[None, :])
        np.testing.assert_array_equal(obs_gym, obs_batch[0])
        assert r_gym == r_batch[0]
        np.testing.assert_array_equal(day["clicks"], day_batch["clicks"][0])
        assert terminated == done and not truncated
    assert terminated


def test_reward_is_the_funnel_reward(posterior):
    env = be.BatchedBudgetEnv(posterior, n_envs=8)
    env.reset(seed=2)
    _, rewards, _, day = env.step(np.full((8, K + 1), 0.3))
    organic = organic_clicks(env.state.holidays[:, 0])
    np.testing.assert_allclose(rewards, reward(day["clicks"], day["spend"], env.config.cost_weight,
                                               env.config.value_per_click, organic))


def test_each_episode_gets_its_own_posterior_draw(posterior):
    env = be.BatchedBudgetEnv(posterior, n_envs=200)
    env.reset(seed=0)
    draws = env.state.draw_index
    assert len(np.unique(draws)) > 30  # 200 episodes over 50 draws
    np.testing.assert_array_equal(env.state.params.imp_spend, posterior.imp_spend[draws])


def test_single_parameter_set_is_used_by_every_episode():
    env = be.BatchedBudgetEnv(TRUE_PARAMS, n_envs=5)
    env.reset(seed=0)
    assert np.all(env.state.draw_index == -1)
    np.testing.assert_array_equal(env.state.params.clk_impressions, np.tile(TRUE_PARAMS.clk_impressions, (5, 1)))


def test_fixed_episodes_for_common_evaluation(posterior):
    env = be.BatchedBudgetEnv(posterior, n_envs=3)
    env.reset(seed=1, budgets=[1000.0, 2000.0, 3000.0], starts=[0, 5, 10], draws=[0, 1, 2])
    np.testing.assert_array_equal(env.state.budget, [1000.0, 2000.0, 3000.0])
    np.testing.assert_array_equal(env.state.draw_index, [0, 1, 2])
    with pytest.raises(ConfigError, match="one value per episode"):
        env.reset(seed=1, budgets=[1.0, 2.0])
    with pytest.raises(ConfigError, match="draw indices"):
        env.reset(seed=1, draws=[0, 1, 999])


@settings(max_examples=40, deadline=None)
@given(
    actions=arrays(np.float64, (30, 4, K + 1), elements=st.floats(0.0, 1.0)),
    seed=st.integers(0, 2**16),
)
def test_budget_never_exceeded_and_spend_never_negative(actions, seed):
    env = be.BatchedBudgetEnv(TRUE_PARAMS, n_envs=4)
    env.reset(seed=seed)
    spent = np.zeros(4)
    for day_actions in actions:
        _, rewards, _, day = env.step(day_actions)
        assert np.all(day["spend"] >= 0)
        assert np.all(np.isfinite(rewards))
        spent += day["spend"].sum(axis=1)
        assert np.all(env.state.remaining >= 0)
    assert np.all(spent <= env.state.budget * (1 + 1e-12))
    np.testing.assert_allclose(env.state.remaining, env.state.budget - spent, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    spend=arrays(np.float64, (3, K), elements=st.floats(0.0, 500.0)),
    remaining=arrays(np.float64, (3,), elements=st.floats(1.0, 3000.0)),
)
def test_spend_to_actions_round_trips_when_affordable(spend, remaining):
    actions = be.spend_to_actions(spend, remaining)
    assert np.all((actions >= 0) & (actions <= 1))
    back = be.actions_to_spend(actions, remaining)
    affordable = spend.sum(axis=1) <= remaining
    np.testing.assert_allclose(back[affordable], spend[affordable], rtol=1e-9, atol=1e-9)
    assert np.all(back.sum(axis=1) <= remaining * (1 + 1e-12))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([np.nan, 0.2, 0.2, 0.2, 0.2]), "must be finite"),
        (np.array([0.5, 1.5, 0.2, 0.2, 0.2]), r"entry 1 is 1.5.*\[0, 1\]"),
        (np.array([-0.1, 0.2, 0.2, 0.2, 0.2]), r"entry 0 is -0.1"),
        (np.array([0.5, 0.5]), "shape"),
    ],
)
def test_bad_actions_raise_clear_errors(bad, message):
    env = be.BudgetEnv(TRUE_PARAMS)
    env.reset(seed=0)
    with pytest.raises(SchemaError, match=message):
        env.step(bad)


def test_step_after_the_end_and_before_reset_are_errors():
    env = be.BatchedBudgetEnv(TRUE_PARAMS, n_envs=2)
    with pytest.raises(ConfigError, match="reset"):
        env.step(np.zeros((2, K + 1)))
    env.reset(seed=0)
    for _ in range(env.config.horizon_days):
        *_, done, _ = env.step(np.full((2, K + 1), 0.1))
    assert done
    with pytest.raises(ConfigError, match="episode is over"):
        env.step(np.full((2, K + 1), 0.1))


def test_config_rejects_bad_settings():
    with pytest.raises(ConfigError, match="budget_range"):
        be.BudgetEnvConfig(budget_range=(100.0, 50.0))
    with pytest.raises(ConfigError, match="horizon_days"):
        be.BudgetEnvConfig(horizon_days=0)
    with pytest.raises(ConfigError, match="reset option"):
        be.BudgetEnv(TRUE_PARAMS).reset(seed=0, options={"budgett": 3})


def test_zero_split_weights_mean_an_even_split():
    spend = be.actions_to_spend(np.array([[0.5, 0.0, 0.0, 0.0, 0.0]]), np.array([400.0]))
    np.testing.assert_allclose(spend, [[50.0, 50.0, 50.0, 50.0]])


def test_even_policy_spends_the_whole_budget_evenly():
    env = be.BatchedBudgetEnv(TRUE_PARAMS, n_envs=6)
    result = be.run_policy(env, be.even_policy, seed=3)
    np.testing.assert_allclose(result["spend"], result["budget"], rtol=1e-9)
    np.testing.assert_allclose(env.state.last_spend, np.tile(result["budget"][:, None] / 30 / K, (1, K)), rtol=1e-9)


def test_human_policy_keeps_its_shares_on_average():
    env = be.BatchedBudgetEnv(TRUE_PARAMS, n_envs=400)
    env.reset(seed=0)
    policy = be.human_policy(np.random.default_rng(0))
    spend = be.actions_to_spend(policy(None, env.state, env.config), env.state.remaining)
    np.testing.assert_allclose(spend.sum(0) / spend.sum(), HUMAN_SHARES, atol=0.02)


def test_planner_with_the_truth_beats_the_human_split():
    truth_plan = be.plan_shares(TRUE_PARAMS, 2000 / 30)
    assert truth_plan.sum() == pytest.approx(1.0) and np.all(truth_plan >= 0)
    value = lambda shares: be.expected_daily_value(TRUE_PARAMS, 2000 / 30 * shares)
    assert value(truth_plan) > value(HUMAN_SHARES)
    assert value(truth_plan) >= value(np.full(K, 0.25)) - 1e-9
    with pytest.raises(ConfigError, match="daily_budget"):
        be.plan_shares(TRUE_PARAMS, 0.0)


def test_robust_plan_averages_over_draws(posterior):
    robust = be.plan_shares(posterior, 2000 / 30)
    values = lambda shares: be.expected_daily_value(posterior, 2000 / 30 * shares).mean()
    assert values(robust) >= values(be.plan_shares(TRUE_PARAMS, 2000 / 30)) - 1e-9


def test_synthetic_posterior_shape_and_errors():
    draws = be.synthetic_posterior(TRUE_PARAMS, 20, 0.1, np.random.default_rng(1))
    assert draws.n_draws == 20 and draws.imp_spend.shape == (20, K)
    assert np.all(draws.imp_spend > 0)
    with pytest.raises(SchemaError):
        be.synthetic_posterior(draws, 5, 0.1, np.random.default_rng(1))
    with pytest.raises(ConfigError):
        be.synthetic_posterior(TRUE_PARAMS, 0, 0.1, np.random.default_rng(1))


def test_observation_names_match_the_observation():
    env = be.BatchedBudgetEnv(TRUE_PARAMS, n_envs=1)
    obs = env.reset(seed=0)
    assert len(be.observation_names(TRUE_PARAMS.channels)) == obs.shape[1] == be.obs_dim(K)


def test_throughput_benchmark_quick_mode_writes_valid_json(tmp_path, repo_root):
    out = tmp_path / "budget_throughput.json"
    subprocess.run(
        [sys.executable, str(repo_root / "benchmarks" / "budget_throughput.py"), "--quick", "--out", str(out)],
        check=True, capture_output=True, timeout=120,
    )
    result = json.loads(out.read_text())
    assert {"machine", "measurements", "speedup"} <= set(result)
    assert {"cores", "cpu_model", "torch_threads", "date"} <= set(result["machine"])
    assert result["speedup"] > 0
    assert {"n_envs", "batched_steps_per_s", "sync_vector_steps_per_s"} <= set(result["measurements"]["n_envs_16"])
