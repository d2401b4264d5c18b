"""The coupon simulator: state layout, logging propensities, and the ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from pulse_lib.coupons.simulator import (
    COUPON_VALUES,
    N_ACTIONS,
    STATE_DIM,
    CouponSimConfig,
    evaluate_policy,
    exact_retention_by_type,
    logging_policy,
    simulate,
)
from pulse_lib.errors import ConfigError, SchemaError

SMALL = CouponSimConfig(n_users=300, horizon=30)


def test_published_setting() -> None:
    assert N_ACTIONS == 21 and STATE_DIM == 44
    np.testing.assert_allclose(COUPON_VALUES, np.arange(1, 22) / 10)
    cfg = CouponSimConfig()
    assert cfg.n_users == 10_000 and cfg.horizon == 30


def test_state_counts_are_consistent() -> None:
    eps = simulate(SMALL, rng=np.random.default_rng(0), stochastic_policy=logging_policy())
    obs, nxt = eps.observations, eps.next_observations
    assert obs.shape == (300 * 30, 44) and eps.behaviour_probs.shape == (300 * 30, 21)
    # day t has t coupons received; returns never exceed coupons of the same value
    np.testing.assert_array_equal(obs[:, 2:23].sum(axis=1), obs[:, 0])
    assert np.all(obs[:, 23:] <= obs[:, 2:23])
    # the next state adds exactly the logged coupon and the observed return
    delta_c = nxt[:, 2:23] - obs[:, 2:23]
    delta_r = nxt[:, 23:] - obs[:, 23:]
    rows = np.arange(len(eps))
    np.testing.assert_array_equal(delta_c[rows, eps.actions], 1)
    np.testing.assert_array_equal(delta_r[rows, eps.actions], eps.rewards)
    assert delta_c.sum() == len(eps) and delta_r.sum() == eps.rewards.sum()
    np.testing.assert_allclose(eps.costs, COUPON_VALUES[eps.actions], rtol=1e-6)
    assert eps.terminals.sum() == 300 and np.all(eps.terminals.reshape(300, 30)[:, -1] == 1)


def test_propensities_are_the_logged_action_probabilities() -> None:
    eps = simulate(SMALL, rng=np.random.default_rng(1), stochastic_policy=logging_policy(epsilon=0.3))
    rows = np.arange(len(eps))
    np.testing.assert_allclose(eps.propensities, eps.behaviour_probs[rows, eps.actions])
    assert eps.propensities.min() >= 0.3 / 21 - 1e-7
    np.testing.assert_allclose(eps.behaviour_probs.sum(axis=1), 1, atol=1e-5)
    # the sampled actions follow the recorded probabilities (chi-square-free check on the mean)
    low = eps.user_type == 0
    expected_mean = (eps.behaviour_probs[low] @ np.arange(21)).mean()
    assert abs(eps.actions[low].mean() - expected_mean) < 0.5


@pytest.mark.parametrize("actions", [(0, 0, 0), (20, 20, 20), (15, 8, 0)])
def test_monte_carlo_ground_truth_matches_the_exact_value(actions: tuple[int, int, int]) -> None:
    cfg = CouponSimConfig()
    table = np.array(actions)
    mc = evaluate_policy(cfg, lambda s: table[s[:, 1].astype(int)], n_users=20_000, seed=3)
    exact = exact_retention_by_type(cfg, actions)
    assert abs(mc.retention - exact) < 4 * mc.retention_se
    expected_cost = float(np.dot(cfg.type_shares, COUPON_VALUES[table]))
    assert abs(mc.cost - expected_cost) < 4 * mc.cost_se + 0.02


def test_exact_value_without_habit_is_the_closed_form() -> None:
    cfg = CouponSimConfig(habit=0.0)
    v = COUPON_VALUES[4]
    lift = np.array(cfg.sensitivity) * (1 - np.exp(-v / cfg.v_scale))
    mean_p0 = np.array([0.1, 0.5, 0.9])
    closed = float(np.dot(cfg.type_shares, mean_p0 + (1 - mean_p0) * lift))
    assert exact_retention_by_type(cfg, (4, 4, 4)) == pytest.approx(closed, abs=1e-9)


def test_bigger_coupons_retain_more() -> None:
    cfg = CouponSimConfig()
    values = [exact_retention_by_type(cfg, (a, a, a)) for a in (0, 5, 10, 20)]
    assert np.all(np.diff(values) > 0)


def test_bad_policies_and_settings_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(SchemaError, match="coupon indices"):
        simulate(SMALL, lambda s: np.full(len(s), 21), rng=rng)
    with pytest.raises(SchemaError, match="shape"):
        simulate(SMALL, lambda s: np.zeros((len(s), 2), dtype=int), rng=rng)
    with pytest.raises(SchemaError, match="sum to"):
        simulate(SMALL, rng=rng, stochastic_policy=lambda s: np.full((len(s), 21), 0.5))
    with pytest.raises(ConfigError):
        CouponSimConfig(type_shares=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError):
        CouponSimConfig(p0_ranges=((0.0, 1.2), (0, 1), (0, 1)))
    with pytest.raises(ConfigError):
        simulate(SMALL, rng=rng)


def test_retention_table_rows_are_types_and_columns_coupons() -> None:
    from pulse_lib.coupons.simulator import exact_retention_table

    cfg = CouponSimConfig()
    table = exact_retention_table(cfg)
    assert table.shape == (3, 21)
    assert np.all(np.diff(table, axis=1) > 0)  # more value, more retention, for every type
    assert table[0, 0] < table[1, 0] < table[2, 0]  # low < uniform < high without much coupon
    assert exact_retention_by_type(cfg, (3, 7, 1)) == pytest.approx(
        float(np.dot(cfg.type_shares, [table[0, 3], table[1, 7], table[2, 1]])))
