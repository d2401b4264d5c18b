"""Tests of pulse_lib.ope: hand-computed cases, unbiasedness on a synthetic bandit, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse_lib import ope
from pulse_lib.errors import SchemaError

# ----------------------------------------------------------------------------- hand-computed cases

R = np.array([1.0, 0.0, 2.0])
PI = np.array([0.5, 1.0, 0.0])
MU = np.array([0.25, 0.5, 0.5])  # weights 2, 2, 0


def test_ips_hand_computed() -> None:
    est = ope.ips(R, PI, MU)
    assert est.name == "IPS"
    np.testing.assert_allclose(est.terms, [2.0, 0.0, 0.0])
    assert est.value == pytest.approx(2.0 / 3.0)


def test_snips_hand_computed_and_terms_mean_is_value() -> None:
    est = ope.snips(R, PI, MU)
    # sum(w r) / sum(w) = 2 / 4
    assert est.value == pytest.approx(0.5)
    assert est.terms.mean() == pytest.approx(est.value)
    np.testing.assert_allclose(est.terms, [2.0 / (4 / 3), 0.0, 0.0])


def test_dm_and_dr_hand_computed() -> None:
    v_hat = np.array([0.5, 0.5, 1.0])
    q_hat = np.array([0.0, 1.0, 2.0])
    assert ope.direct_method(v_hat).value == pytest.approx(2.0 / 3.0)
    dr = ope.doubly_robust(R, PI, MU, q_hat, v_hat)
    # v + w (r - q): 0.5 + 2*1, 0.5 + 2*(-1), 1 + 0
    np.testing.assert_allclose(dr.terms, [2.5, -1.5, 1.0])
    assert dr.value == pytest.approx(2.0 / 3.0)


def test_dr_equals_dm_when_model_is_exact_on_logged_actions() -> None:
    dr = ope.doubly_robust(R, PI, MU, q_hat_logged_action=R, v_hat_target=[0.3, 0.2, 0.1])
    assert dr.value == pytest.approx(0.2)


# Two episodes: A (3 steps) and B (2 steps), rows shuffled to check the sorting.
EPISODES = np.array(["B", "A", "A", "B", "A"])
STEPS = np.array([1, 0, 2, 0, 1])
REWARDS = np.array([3.0, 1.0, 1.0, 0.0, 0.0])
TARGET = np.array([1.0, 0.5, 1.0, 0.5, 1.0])
BEHAVIOUR = np.array([0.5, 0.5, 0.5, 0.25, 0.5])
# A: w = 1, 2, 2 -> cum 1, 2, 4; r = 1, 0, 1. B: w = 2, 2 -> cum 2, 4; r = 0, 3.
GAMMA = 0.5


def test_trajectory_is_hand_computed() -> None:
    est = ope.trajectory_is(EPISODES, STEPS, REWARDS, TARGET, BEHAVIOUR, GAMMA)
    g_a, g_b = 1 + 0.25 * 1, 0.5 * 3
    np.testing.assert_allclose(est.terms, [4 * g_a, 4 * g_b])
    assert est.value == pytest.approx((4 * g_a + 4 * g_b) / 2)


def test_trajectory_wis_hand_computed() -> None:
    est = ope.trajectory_wis(EPISODES, STEPS, REWARDS, TARGET, BEHAVIOUR, GAMMA)
    g_a, g_b = 1.25, 1.5
    assert est.value == pytest.approx((4 * g_a + 4 * g_b) / 8)
    assert est.terms.mean() == pytest.approx(est.value)


def test_per_decision_is_hand_computed() -> None:
    est = ope.per_decision_is(EPISODES, STEPS, REWARDS, TARGET, BEHAVIOUR, GAMMA)
    a = 1 * 1 + 0.5 * 2 * 0 + 0.25 * 4 * 1
    b = 1 * 2 * 0 + 0.5 * 4 * 3
    np.testing.assert_allclose(est.terms, [a, b])


def test_weighted_per_decision_is_hand_computed() -> None:
    est = ope.weighted_per_decision_is(EPISODES, STEPS, REWARDS, TARGET, BEHAVIOUR, GAMMA)
    # step 0: weights (1, 2), rewards (1, 0); step 1: (2, 4), (0, 3); step 2: (4, 4 carried), (1, 0)
    want = 1 * (1 * 1) / 3 + 0.5 * (4 * 3) / 6 + 0.25 * (4 * 1) / 8
    assert est.value == pytest.approx(want)
    assert est.terms.mean() == pytest.approx(est.value)


def test_on_policy_data_gives_the_plain_mean_return() -> None:
    same = np.full(5, 0.5)
    returns = {"A": 1.0 + 0.25, "B": 0.5 * 3}
    for name, estimator in ope.TRAJECTORY_ESTIMATORS.items():
        est = estimator(EPISODES, STEPS, REWARDS, same, same, GAMMA)
        assert est.value == pytest.approx(np.mean(list(returns.values()))), name


def test_ci_contains_value_and_shrinks_with_more_samples() -> None:
    rng = np.random.default_rng(0)
    small = ope.ips(rng.normal(size=100), np.full(100, 0.5), np.full(100, 0.5))
    large = ope.ips(rng.normal(size=10_000), np.full(10_000, 0.5), np.full(10_000, 0.5))
    lo, hi = small.ci()
    assert lo < small.value < hi
    assert (large.ci()[1] - large.ci()[0]) < (hi - lo)


def test_estimate_is_frozen() -> None:
    est = ope.ips(R, PI, MU)
    with pytest.raises(AttributeError):
        est.value = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        est.terms[0] = 5.0


# ----------------------------------------------------------------------------- unbiasedness


def _synthetic_bandit(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Contexts x in {0,1}, two actions, Bernoulli rewards; logging and target policies known."""
    x = rng.integers(0, 2, n)
    p_reward = np.array([[0.2, 0.6], [0.7, 0.1]])  # [context, action]
    mu1 = np.where(x == 0, 0.2, 0.7)  # P(action 1 | x) under logging
    pi1 = np.where(x == 0, 0.9, 0.3)  # under the target
    a = (rng.random(n) < mu1).astype(int)
    r = (rng.random(n) < p_reward[x, a]).astype(float)
    mu = np.where(a == 1, mu1, 1 - mu1)
    pi = np.where(a == 1, pi1, 1 - pi1)
    return x, a, r, pi, mu


TRUE_BANDIT_VALUE = 0.5 * (0.1 * 0.2 + 0.9 * 0.6) + 0.5 * (0.7 * 0.7 + 0.3 * 0.1)


def test_ips_and_dr_are_unbiased_on_a_synthetic_bandit() -> None:
    rng = np.random.default_rng(123)
    wrong_q = np.array([[0.9, 0.9], [0.9, 0.9]])  # a deliberately wrong reward model
    ips_values, dr_values, snips_values = [], [], []
    for _ in range(400):
        x, a, r, pi, mu = _synthetic_bandit(rng, 200)
        ips_values.append(ope.ips(r, pi, mu).value)
        snips_values.append(ope.snips(r, pi, mu).value)
        pi1 = np.where(x == 0, 0.9, 0.3)
        v_hat = (1 - pi1) * wrong_q[x, 0] + pi1 * wrong_q[x, 1]
        dr_values.append(ope.doubly_robust(r, pi, mu, wrong_q[x, a], v_hat).value)
    for name, values in {"IPS": ips_values, "DR": dr_values, "SNIPS": snips_values}.items():
        se = np.std(values, ddof=1) / np.sqrt(len(values))
        assert abs(np.mean(values) - TRUE_BANDIT_VALUE) < 4 * se + 0.005, name
    # a wrong model alone is biased: DM with it gives 0.9, far from the truth
    assert abs(0.9 - TRUE_BANDIT_VALUE) > 0.3


def test_trajectory_is_and_pdis_are_unbiased_on_a_synthetic_chain() -> None:
    """Two-step episodes; reward 1 at each step when the action matches a hidden bit."""
    rng = np.random.default_rng(7)
    horizon, n_episodes, gamma = 2, 300, 0.9
    mu1, pi1 = 0.3, 0.8  # P(action 1) under logging and target, state-independent
    # true value: each step pays 1 with probability pi1 (hidden bit is 1 with prob. 1)
    truth = pi1 * (1 + gamma)
    results: dict[str, list[float]] = {name: [] for name in ope.TRAJECTORY_ESTIMATORS}
    for _ in range(300):
        a = (rng.random((n_episodes, horizon)) < mu1).astype(int)
        r = a.astype(float).ravel()
        mu = np.where(a == 1, mu1, 1 - mu1).ravel()
        pi = np.where(a == 1, pi1, 1 - pi1).ravel()
        ids = np.repeat(np.arange(n_episodes), horizon)
        steps = np.tile(np.arange(horizon), n_episodes)
        for name, estimator in ope.TRAJECTORY_ESTIMATORS.items():
            results[name].append(estimator(ids, steps, r, pi, mu, gamma).value)
    for name in ("IS", "PDIS"):
        values = results[name]
        se = np.std(values, ddof=1) / np.sqrt(len(values))
        assert abs(np.mean(values) - truth) < 4 * se, name
    # the weighted variants are consistent: close at this sample size
    for name in ("WIS", "WPDIS"):
        assert abs(np.mean(results[name]) - truth) < 0.05, name
    # and per-decision IS has no more variance than trajectory IS
    assert np.var(results["PDIS"]) <= np.var(results["IS"])


@settings(max_examples=50, deadline=None)
@given(
    rewards=st.lists(st.floats(-10, 10), min_size=1, max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
def test_terms_always_average_to_the_value(rewards: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(rewards)
    mu = rng.uniform(0.05, 1.0, n)
    pi = rng.uniform(0.01, 1.0, n)
    for est in (ope.ips(rewards, pi, mu), ope.snips(rewards, pi, mu),
                ope.doubly_robust(rewards, pi, mu, np.zeros(n), np.ones(n))):
        assert est.terms.shape == (n,)
        assert est.value == pytest.approx(est.terms.mean(), rel=1e-9, abs=1e-9)
    ids = rng.integers(0, 4, n)
    steps = np.zeros(n, dtype=int)
    for e in np.unique(ids):
        steps[ids == e] = np.arange((ids == e).sum())
    for estimator in ope.TRAJECTORY_ESTIMATORS.values():
        est = estimator(ids, steps, rewards, pi, mu, 0.95)
        assert est.terms.shape == (len(np.unique(ids)),)
        assert est.value == pytest.approx(est.terms.mean(), rel=1e-9, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(rewards=st.lists(st.floats(0, 1), min_size=2, max_size=40), seed=st.integers(0, 1000))
def test_snips_stays_within_the_reward_range(rewards: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(rewards)
    est = ope.snips(rewards, rng.uniform(0.1, 1, n), rng.uniform(0.1, 1, n))
    assert min(rewards) - 1e-9 <= est.value <= max(rewards) + 1e-9


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rewards": [1.0, np.nan], "target_prob": [1, 1], "behaviour_prob": [1, 1]}, "rewards.*row 1"),
        ({"rewards": [1.0, 1.0], "target_prob": [1, 1], "behaviour_prob": [1, 0.0]}, "behaviour_prob.*row 1"),
        ({"rewards": [1.0, 1.0], "target_prob": [1, 1.5], "behaviour_prob": [1, 1]}, "target_prob.*row 1"),
        ({"rewards": [1.0, 1.0], "target_prob": [1], "behaviour_prob": [1, 1]}, "target_prob has 1 rows"),
        ({"rewards": [[1.0, 1.0]], "target_prob": [1], "behaviour_prob": [1]}, "rewards must be 1-D"),
        ({"rewards": [], "target_prob": [], "behaviour_prob": []}, "empty"),
        ({"rewards": [1.0], "target_prob": [None], "behaviour_prob": [1]}, "target_prob"),
    ],
)
def test_bad_bandit_input_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        ope.ips(**kwargs)


def test_snips_with_all_zero_target_prob_is_an_error() -> None:
    with pytest.raises(SchemaError, match="zero on every"):
        ope.snips([1.0, 2.0], [0.0, 0.0], [0.5, 0.5])


def test_bad_trajectory_input_is_named() -> None:
    ok = {"rewards": [1.0, 1.0], "target_prob": [1, 1], "behaviour_prob": [1, 1]}
    with pytest.raises(SchemaError, match="episode 0.*step"):
        ope.trajectory_is([0, 0], [0, 2], **ok)
    with pytest.raises(SchemaError, match="episode 0.*step"):
        ope.per_decision_is([0, 0], [0, 0], **ok)
    with pytest.raises(SchemaError, match="gamma"):
        ope.trajectory_wis([0, 0], [0, 1], gamma=0.0, **ok)
    with pytest.raises(SchemaError, match="steps must be integers"):
        ope.trajectory_is([0, 0], [0.0, 1.0], **ok)
    with pytest.raises(SchemaError, match="episode_ids"):
        ope.trajectory_is([0], [0, 1], **ok)
    with pytest.raises(SchemaError, match="confidence level"):
        ope.ips([1.0], [1.0], [1.0]).ci(1.5)
