"""Tests of the journey simulator, logging policy and online loop (pulse_lib.nba.simulator/experiments)."""

from __future__ import annotations

import numpy as np
import pytest

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.nba.experiments import STRATEGIES, make_learner, run_online, run_strategy
from pulse_lib.nba.simulator import (
    STAGES,
    Action,
    ActionCatalog,
    JourneySimulator,
    LoggedData,
    LoggingPolicy,
    ObjectiveWeights,
    Outcomes,
    bandit_logs,
    default_catalog,
    epsilon_greedy,
    simulate_logs,
)


@pytest.fixture()
def world() -> tuple[ActionCatalog, JourneySimulator]:
    catalog = default_catalog(new_action_round=5, retire_round=8)
    return catalog, JourneySimulator(catalog, n_users=500, seed=1)


def test_contexts_have_bias_features_and_one_hot_stage(world) -> None:
    _, sim = world
    x = sim.contexts()
    assert x.shape == (500, sim.context_width)
    np.testing.assert_array_equal(x[:, 0], 1.0)
    stage_block = x[:, 1 + sim.n_features:]
    np.testing.assert_array_equal(stage_block.sum(axis=1), 1.0)
    np.testing.assert_array_equal(stage_block.argmax(axis=1), sim.stage)


def test_expected_outcomes_are_probabilities_and_loyal_cannot_progress(world) -> None:
    catalog, sim = world
    p = sim.expected_outcomes(sim.contexts())
    for name in ("target", "progress"):
        assert p[name].shape == (500, len(catalog))
        assert np.all((p[name] >= 0) & (p[name] <= 1))
    loyal = sim.stage == STAGES.index("loyal")
    assert loyal.any()
    np.testing.assert_array_equal(p["progress"][loyal], 0.0)
    with pytest.raises(SchemaError, match="shape"):
        sim.expected_outcomes(np.zeros((3, 4)))


def test_sampled_outcomes_follow_the_true_probabilities(world) -> None:
    catalog, sim = world
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(20), 2000)
    stage_before = sim.stage.copy()
    p = sim.expected_outcomes(sim.contexts(users))
    action = np.full(users.shape[0], catalog.index("promo_email"))
    sim.lapse = 0.0
    out = sim.step(users, action, rng)
    sim.stage = stage_before  # step moved them; the probabilities above are the pre-step ones
    target_rate = out.target.reshape(20, 2000).mean(axis=1)
    want = p["target"][::2000, action[0]]
    assert np.max(np.abs(target_rate - want)) < 4 * np.sqrt(0.25 / 2000)


def test_step_moves_users_along_the_journey(world) -> None:
    _catalog, sim = world
    sim.lapse = 0.0
    rng = np.random.default_rng(3)
    users = np.arange(500)
    before = sim.stage.copy()
    out = sim.step(users, np.zeros(500, dtype=int), rng)
    np.testing.assert_array_equal(sim.stage, np.minimum(before + out.progress.astype(int), 3))
    sim.reset()
    assert sim.stage.tolist() != [] and np.array_equal(sim.stage, sim._initial_stage)
    with pytest.raises(SchemaError, match="unknown action id 99"):
        sim.step(users[:2], np.array([0, 99]), rng)


def test_policy_value_is_the_mean_expected_reward(world) -> None:
    catalog, sim = world
    w = ObjectiveWeights(target=1.0, progress=0.5, cost=2.0)
    x = sim.contexts()
    r = sim.expected_reward(x, w)
    one_hot = np.zeros_like(r)
    one_hot[:, 3] = 1.0
    assert sim.policy_value(one_hot, x, w) == pytest.approx(r[:, 3].mean())
    p = sim.expected_outcomes(x)
    np.testing.assert_allclose(r, p["target"] + 0.5 * p["progress"] - 2.0 * catalog.costs)
    with pytest.raises(SchemaError, match="sums to"):
        sim.policy_value(one_hot * 0.5, x, w)


def test_logging_policy_favours_few_actions_and_respects_schedule(world) -> None:
    catalog, sim = world
    policy = LoggingPolicy(catalog)
    x = sim.contexts()
    live = catalog.live_mask(0)
    probs = policy.probabilities(x, live)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert np.all(probs[:, live] > 0)
    assert np.all(probs[:, ~live] == 0)
    favoured = [catalog.index(n) for n in ("newsletter", "promo_email", "web_banner")]
    assert probs[:, favoured].sum(axis=1).min() > 0.8
    assert not catalog.live_mask(0)[catalog.index("app_points")] and catalog.live_mask(5)[catalog.index("app_points")]
    assert catalog.live_mask(7)[catalog.index("summer_sms")] and not catalog.live_mask(8)[catalog.index("summer_sms")]
    with pytest.raises(ConfigError, match="eps"):
        LoggingPolicy(catalog, eps=0.0)


def test_logs_record_matching_propensities(world) -> None:
    catalog, sim = world
    policy = LoggingPolicy(catalog)
    logs = simulate_logs(sim, policy, n_rounds=10, batch=50, rng=np.random.default_rng(0))
    assert len(logs) == 500
    assert np.all(logs.propensities > 0)
    late = logs.rounds >= 8
    assert not np.any(logs.actions[late] == catalog.index("summer_sms"))
    iid = bandit_logs(sim, policy, 300, np.random.default_rng(1))
    recomputed = policy.probabilities(iid.contexts, catalog.live_mask(0))[np.arange(300), iid.actions]
    np.testing.assert_allclose(iid.propensities, recomputed)


def test_logged_data_rejects_bad_rows() -> None:
    x = np.ones((4, 3))
    out = Outcomes(np.zeros(4), np.zeros(4), np.zeros(4))
    with pytest.raises(SchemaError, match="row 2"):
        LoggedData(x, np.zeros(4, dtype=int), np.array([0.5, 0.5, 0.0, 0.5]), out)
    with pytest.raises(SchemaError, match="row 1"):
        LoggedData(x, np.zeros(4, dtype=int), np.array([0.5, np.nan, 0.5, 0.5]), out)
    with pytest.raises(SchemaError, match="integer"):
        LoggedData(x, np.zeros(4), np.full(4, 0.5), out)
    bad_x = x.copy()
    bad_x[3, 0] = np.inf
    with pytest.raises(SchemaError, match="row 3"):
        LoggedData(bad_x, np.zeros(4, dtype=int), np.full(4, 0.5), out)


def test_catalog_validation() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        ActionCatalog([Action("a", "email", "content", 0.0), Action("a", "sms", "content", 0.0)])
    with pytest.raises(ConfigError, match="channel"):
        Action("x", "fax", "content", 0.0)
    with pytest.raises(ConfigError, match="end"):
        Action("x", "email", "content", 0.0, start=5, end=5)
    with pytest.raises(ConfigError, match="no action named"):
        default_catalog().index("nope")
    assert default_catalog(3, 7).events() == [(3, "add", 11), (7, "retire", 10)]


def test_objective_weights_combine_signals() -> None:
    out = Outcomes(np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array([0.1, 0.2]))
    np.testing.assert_allclose(out.reward(ObjectiveWeights(2.0, 0.5, 1.0)), [2.4, 0.3])
    with pytest.raises(ConfigError, match="finite"):
        ObjectiveWeights(target=np.nan)


def test_epsilon_greedy_probabilities() -> None:
    probs = epsilon_greedy(np.array([[0.1, 0.9, 0.5]]), eps=0.3, live=np.array([True, False, True]))
    np.testing.assert_allclose(probs, [[0.15, 0.0, 0.85]])


def test_online_run_handles_schedule_and_learns(world) -> None:
    catalog, sim = world
    w = ObjectiveWeights()
    policy = LoggingPolicy(catalog)
    logs = simulate_logs(sim, policy, 20, 50, np.random.default_rng(0))
    results = {s: run_strategy(s, sim, logs, policy, w, n_rounds=12, batch=40, seed=2, start_round=0) for s in STRATEGIES}
    for s, res in results.items():
        assert res.reward.shape == (12,) and np.all(res.regret >= -1e-12), s
        # the retired action is never chosen from its retirement on, the new one never before launch
        assert res.action_counts[8:, catalog.index("summer_sms")].sum() == 0, s
        assert res.action_counts[:5, catalog.index("app_points")].sum() == 0, s
    learner = make_learner(sim, w, "ucb")
    with pytest.raises(ConfigError, match="n_rounds"):
        run_online(sim, learner, w, 0, 10, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="strategy"):
        run_strategy("magic", sim, logs, policy, w, 1, 1, 0, 0)


def test_hybrid_beats_offline_only_and_logging_on_skewed_logs() -> None:
    """The chapter's central effect at a small size: warm start + exploration has the lowest regret.

    Seeded and deterministic. When written, the same ordering held for seeds 0-4 (hybrid regret
    1.6-1.8x below offline-only and 1.1-1.5x below online-only), so the test checks the effect,
    not a lucky draw.
    """
    catalog = default_catalog(new_action_round=60, retire_round=80)
    sim = JourneySimulator(catalog, n_users=1000, seed=0)
    w = ObjectiveWeights()
    policy = LoggingPolicy(catalog)
    logs = simulate_logs(sim, policy, 40, 50, np.random.default_rng(1000))
    regret = {s: run_strategy(s, sim, logs, policy, w, 60, 50, seed=3, start_round=40, alpha=0.25).regret.sum()
              for s in STRATEGIES}
    assert regret["hybrid"] < regret["offline-only"] < regret["logging"]
    assert regret["hybrid"] < regret["online-only"]
