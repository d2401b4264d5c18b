"""The PulseRL surrogate and the plain-PyTorch CQL: schema, determinism, dynamics, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.pulserl import agents as A
from pulse_lib.pulserl import data as D
from pulse_lib.pulserl import simulator as S
from pulse_lib.pulserl.features import FEATURE_INDEX, FEATURE_NAMES

SMALL = S.SimulatorConfig(horizon=7)


def test_logged_dataset_has_the_release_schema_and_is_deterministic() -> None:
    a = S.generate_logged_dataset(50, seed=1, config=SMALL)
    b = S.generate_logged_dataset(50, seed=1, config=SMALL)
    D.validate_table(a)
    assert a.equals(b)
    assert a["eps_id"].nunique() == 50
    assert a.groupby("eps_id")["done"].sum().eq(1).all()
    obs = D.observations(a)
    assert obs.shape[1] == 63 and obs.dtype == np.float32
    # one-hot blocks are one-hot
    address = obs[:, FEATURE_INDEX["user_obs_add_0_RO"]:FEATURE_INDEX["user_obs_add_31_NF"] + 1]
    np.testing.assert_array_equal(address.sum(axis=1), 1.0)
    gender = obs[:, FEATURE_INDEX["user_obs_gen_0_FEMALE"]:FEATURE_INDEX["user_obs_gen_2_OTHER"] + 1]
    np.testing.assert_array_equal(gender.sum(axis=1), 1.0)
    assert obs.min() >= 0.0 and obs.max() <= 1.0


def test_logged_propensities_match_the_logging_policy() -> None:
    table = S.generate_logged_dataset(200, seed=2, config=SMALL)
    p_send = S.heuristic_policy(D.observations(table))
    want = np.where(table["action"] == 1, p_send, 1 - p_send)
    np.testing.assert_allclose(table["action_prob"], want, rtol=1e-6)
    uniform = S.generate_logged_dataset(100, seed=2, logging_policy="uniform", config=SMALL)
    np.testing.assert_allclose(uniform["action_prob"], 0.5)
    assert 0.4 < uniform["action"].mean() < 0.6


def test_next_observation_of_a_step_is_the_observation_of_the_next() -> None:
    table = S.generate_logged_dataset(30, seed=3, config=SMALL)
    for _, episode in table.groupby("eps_id"):
        nxt = D.observations(episode, next_=True)[:-1]
        np.testing.assert_array_equal(nxt, D.observations(episode)[1:])


def test_fatigue_makes_always_sending_worse_than_a_targeted_policy() -> None:
    sim = S.PulseSimulator()
    young = lambda o: (o[:, FEATURE_INDEX["user_obs_age_group"]] <= 0.5).astype(float)
    v_young = sim.evaluate(young, 4000, seed=0)
    v_always = sim.evaluate(S.always_send, 4000, seed=0)
    v_never = sim.evaluate(S.never_send, 4000, seed=0)
    assert v_young.low > v_always.high  # messaging the tired hurts
    assert v_young.low > v_never.high  # messaging the responsive helps


def test_logging_policy_is_good_but_improvable_and_hides_a_trap() -> None:
    """The premise of chapter 07: the logger beats never / always / uniform, an observable
    change improves on it, and sending to the segment it avoids is a trap."""
    sim = S.PulseSimulator()
    age = lambda o: o[:, FEATURE_INDEX["user_obs_age_group"]] * 5
    value = {name: sim.evaluate(policy, 6000, seed=1) for name, policy in {
        "logger": S.heuristic_policy, "never": S.never_send, "always": S.always_send, "uniform": S.uniform_policy,
        "better": lambda o: (age(o) < 3.5).astype(float),
        "trap": lambda o: np.maximum(S.marketer_rule(o), (age(o) > 3.5).astype(float)),
    }.items()}
    for other in ("never", "always", "uniform", "trap"):
        assert value["logger"].low > value[other].high, (other, value["logger"], value[other])
    assert value["better"].low > value["logger"].high


def test_exploration_sets_the_logged_propensities() -> None:
    for eps in (1.0, 0.3, 0.01):
        table = S.generate_logged_dataset(60, seed=3, config=SMALL, epsilon=eps)
        rule = S.marketer_rule(D.observations(table))
        p_send = (1 - eps) * rule + eps / 2
        np.testing.assert_allclose(table["action_prob"], np.where(table["action"] == 1, p_send, 1 - p_send))
    with pytest.raises(ConfigError, match="epsilon"):
        S.logging_policy(0.0)
    with pytest.raises(ConfigError, match="epsilon applies"):
        S.generate_logged_dataset(5, 0, logging_policy="uniform", epsilon=0.1)


def test_cql_config_defaults_are_the_released_ones() -> None:
    c = A.CQLConfig()
    assert (c.gamma, c.learning_rate, c.adam_epsilon, c.batch_size, c.target_update_interval, c.alpha) == (
        0.99, 5e-5, 3.125e-4, 256, 2_000, 4.0)
    assert A.CQLConfig.paper().n_quantiles == 200 and S.SimulatorConfig().gamma == 0.99
    agent = A.TorchCQL(A.CQLConfig(hidden=(4,)))
    assert agent.optim.param_groups[0]["eps"] == 3.125e-4


def test_users_who_opted_out_stay_out_and_earn_nothing() -> None:
    sim = S.PulseSimulator(S.SimulatorConfig(opt_out_base=5.0))  # almost everyone opts out at once
    rng = np.random.default_rng(0)
    users = sim.sample_users(500, rng)
    _, out = sim.step(users, np.ones(500, int), rng)
    assert out.mean() > 0.9
    rewards, out2 = sim.step(users, np.ones(500, int), rng)
    assert not out2[out].any()
    np.testing.assert_array_equal(rewards[out], 0.0)


def test_forced_first_action_changes_only_day_zero() -> None:
    sim = S.PulseSimulator(SMALL)
    r = sim.rollout(S.never_send, 100, seed=4, first_action=1, record=True).transitions
    assert r is not None
    assert (r.loc[r["t"] == 0, "action"] == 1).all() and (r.loc[r["t"] > 0, "action"] == 0).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40))
def test_rollout_returns_are_finite_and_reproducible(seed: int, n: int) -> None:
    sim = S.PulseSimulator(SMALL)
    a = sim.rollout(S.uniform_policy, n, seed).returns
    b = sim.rollout(S.uniform_policy, n, seed).returns
    assert a.shape == (n,) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_bad_policy_output_and_settings_are_named() -> None:
    sim = S.PulseSimulator(SMALL)
    with pytest.raises(SchemaError, match="shape"):
        sim.rollout(lambda o: np.ones(3), 10, 0)
    with pytest.raises(SchemaError, match="probability"):
        sim.rollout(lambda o: np.full(o.shape[0], 1.5), 10, 0)
    with pytest.raises(ConfigError, match="logging policy"):
        S.generate_logged_dataset(5, 0, logging_policy="greedy")
    with pytest.raises(ConfigError, match="gamma"):
        S.SimulatorConfig(gamma=1.5)
    with pytest.raises(ConfigError, match="n_quantiles"):
        A.CQLConfig(n_quantiles=0)


def test_quantile_huber_loss_with_one_quantile_is_half_huber() -> None:
    pred = torch.tensor([[0.0], [1.0]])
    target = torch.tensor([[0.5], [4.0]])
    # tau = 0.5 weight; huber(0.5) = 0.125, huber(3) = 2.5
    assert float(A.quantile_huber_loss(pred, target)) == pytest.approx(0.5 * (0.125 + 2.5) / 2)


def test_quantiles_learn_a_distribution() -> None:
    torch.manual_seed(0)
    pred = torch.zeros(1, 5, requires_grad=True)
    opt = torch.optim.Adam([pred], lr=0.05)
    samples = torch.linspace(0, 1, 101).view(1, -1)
    for _ in range(600):
        opt.zero_grad()
        A.quantile_huber_loss(pred, samples, kappa=0.01).backward()
        opt.step()
    np.testing.assert_allclose(pred.detach().numpy().ravel(), [0.1, 0.3, 0.5, 0.7, 0.9], atol=0.03)


def test_cql_penalty_pushes_unlogged_actions_down() -> None:
    table = S.generate_logged_dataset(100, seed=5, config=SMALL)
    args = (D.observations(table), table["action"].to_numpy(), table["reward"].to_numpy(),
            D.observations(table, next_=True), table["done"].to_numpy(float))
    gaps = {}
    for alpha in (0.0, 5.0):
        agent = A.TorchCQL(A.CQLConfig(alpha=alpha, learning_rate=1e-3, hidden=(32,), n_quantiles=3), seed=0)
        history = agent.fit(*args, n_steps=150)
        assert np.isfinite(history[-1]["loss"])
        q = agent.q_values(args[0])
        logged = q[np.arange(len(q)), args[1]]
        gaps[alpha] = float((logged - q[np.arange(len(q)), 1 - args[1]]).mean())
    assert gaps[5.0] > gaps[0.0] + 0.1
    with pytest.raises(SchemaError, match="obs must have shape"):
        agent.fit(args[0][:, :10], *args[1:], n_steps=1)
    assert agent.policy(args[0][:4]).shape == (4,)
    assert len(FEATURE_NAMES) == 63
