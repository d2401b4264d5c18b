"""The λ = 0 resolution of a logged dataset, its top sets, and the λ = 0 check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pulse_lib.coupons.convergence import (
    data_resolution,
    exact_next_day_probabilities,
    exact_next_day_table,
    lambda_zero_check,
)
from pulse_lib.coupons.dataset import CouponDataset
from pulse_lib.coupons.simulator import (
    COUPON_VALUES,
    N_ACTIONS,
    STATE_DIM,
    CouponSimConfig,
    exact_retention_table,
    logging_policy,
    return_probability,
    simulate,
)
from pulse_lib.errors import ConfigError, SchemaError

CONFIG = CouponSimConfig(n_users=3_000)


@pytest.fixture(scope="module")
def episodes():
    return simulate(
        CONFIG, rng=np.random.default_rng(0), stochastic_policy=logging_policy()
    )


@pytest.fixture(scope="module")
def retention() -> np.ndarray:
    return exact_retention_table(CONFIG)


def make_dataset(
    types: np.ndarray, actions: np.ndarray, rewards: np.ndarray
) -> CouponDataset:
    m = len(actions)
    obs = np.zeros((m, STATE_DIM), dtype=np.float32)
    obs[:, 1] = types
    nxt = obs.copy()
    nxt[:, 0] = 1
    return CouponDataset(
        obs,
        np.asarray(actions, dtype=np.int64),
        np.asarray(rewards, dtype=np.float32),
        COUPON_VALUES[actions].astype(np.float32),
        nxt,
        np.ones(m, dtype=np.float32),
    )


def test_exact_next_day_table_matches_the_logged_returns(episodes) -> None:
    table = exact_next_day_table(CONFIG, episodes)
    assert table.shape == (3, N_ACTIONS) and np.all(
        np.diff(table, axis=1) > 0
    )  # rises with the coupon
    # the logging choice depends on the type only, so the logged return rate of a coupon within a type
    # estimates the exact mean over that type's states without bias
    types = episodes.observations[:, 1].astype(int)
    z = []
    for k in range(3):
        for a in range(N_ACTIONS):
            rows = (types == k) & (episodes.actions == a)
            rate, n = episodes.rewards[rows].mean(), rows.sum()
            z.append(
                (rate - table[k, a])
                / np.sqrt(table[k, a] * (1 - table[k, a]) / n + 1e-12)
            )
    z = np.asarray(z)
    assert np.abs(z).max() < 4.5 and abs(z.mean()) < 0.6
    # with no habit, the next-day probability ignores the history: a mean over the users' p0
    still = CouponSimConfig(n_users=300, habit=0.0)
    eps = simulate(
        still, rng=np.random.default_rng(1), stochastic_policy=logging_policy()
    )
    low = eps.user_type == 0
    expected = return_probability(
        still, eps.p0[low], eps.user_type[low], None, np.full(low.sum(), 20)
    ).mean()
    assert exact_next_day_table(still, eps)[0, 20] == pytest.approx(expected)


def test_resolution_counts_rates_and_standard_errors() -> None:
    # type 0: coupon 20 logged 100 times (80 returns), coupon 19 logged 50 times (10 returns)
    types = np.zeros(150, dtype=int)
    actions = np.r_[np.full(100, 20), np.full(50, 19)]
    rewards = np.r_[np.ones(80), np.zeros(20), np.ones(10), np.zeros(40)]
    next_day = np.tile(np.linspace(0.1, 0.9, N_ACTIONS), (3, 1))
    res = data_resolution(
        make_dataset(types, actions, rewards), next_day, next_day, n_se=2.0
    )
    assert (
        res.counts[0, 20] == 100 and res.counts[0, 19] == 50 and res.counts.sum() == 150
    )
    assert res.rates[0, 20] == pytest.approx(0.8) and res.rates[0, 19] == pytest.approx(
        0.2
    )
    assert np.isnan(res.rates[1, 0])  # never logged
    p20, p19 = 81 / 102, 11 / 52  # (x + 1) / (n + 2)
    se = np.sqrt(p20 * (1 - p20) / 100 + p19 * (1 - p19) / 50)
    assert res.se[0, 20, 19] == pytest.approx(se) and res.se[
        0, 19, 20
    ] == pytest.approx(se)
    assert np.isinf(
        res.se[0, 20, 18]
    )  # coupon 18 never logged: nothing can be resolved against it
    assert res.gap[0, 20, 19] == pytest.approx(0.04)
    # gap 0.04 <= 2 SE, and every coupon below has an infinite SE: the whole range is the top set
    assert res.bottom[0, 20] == 0 and res.loss[0, 20] == pytest.approx(0.8)
    np.testing.assert_array_equal(res.top_set(0, 20), np.arange(21))


def test_top_set_stops_at_the_first_resolved_coupon() -> None:
    rng = np.random.default_rng(0)
    n = 20_000  # per coupon: SE of a difference about 0.003-0.005
    types = np.zeros(n * N_ACTIONS, dtype=int)
    actions = np.repeat(np.arange(N_ACTIONS), n)
    next_day = np.tile(0.5 + 0.02 * np.arange(N_ACTIONS), (3, 1)).clip(
        0, 1
    )  # gap 0.02 per step
    rewards = (rng.random(actions.size) < next_day[0, actions]).astype(float)
    res = data_resolution(
        make_dataset(types, actions, rewards), next_day, next_day, n_se=2.0
    )
    # one step (0.02) is more than 2 SE (~0.01): the top set of a ceiling is the ceiling alone
    assert res.bottom[0, 20] == 20 and res.loss[0, 20] == 0
    np.testing.assert_array_equal(res.top_set(0, 20), [20])
    # with a resolution of about 0.05 the top set reaches 2 steps (0.04) down, not 3 (0.06)
    n_se = 0.05 / res.se[0, 20, 18]
    wide = data_resolution(
        make_dataset(types, actions, rewards), next_day, next_day, n_se=n_se
    )
    assert wide.bottom[0, 20] == 18 and wide.loss[0, 20] == pytest.approx(0.04)
    assert np.all(
        wide.bottom <= np.arange(N_ACTIONS)
    )  # a ceiling is always in its own top set


def test_more_data_shrinks_the_top_set(retention) -> None:
    sizes = {}
    for n in (300, 3_000):
        eps = simulate(
            CouponSimConfig(n_users=n),
            rng=np.random.default_rng(2),
            stochastic_policy=logging_policy(),
        )
        res = data_resolution(
            CouponDataset.from_episodes(eps),
            exact_next_day_table(CONFIG, eps),
            retention,
        )
        sizes[n] = res.bottom[:, [20, 18, 13]]
    assert np.all(sizes[3_000] >= sizes[300]) and np.any(sizes[3_000] > sizes[300])


def test_lambda_zero_check_passes_the_ceiling_and_fails_the_floor(
    episodes, retention
) -> None:
    res = data_resolution(
        CouponDataset.from_episodes(episodes),
        exact_next_day_table(CONFIG, episodes),
        retention,
    )
    types = np.repeat(np.arange(3), 100)
    ceilings = np.repeat([20, 18, 13], 100)
    at_top = lambda_zero_check(
        res, types, ceilings, ceilings, COUPON_VALUES, 0.0, 0.002
    )
    assert at_top.holds and at_top.top_set_share == 1 and at_top.share_of_ceiling == 1
    assert at_top.tolerance == pytest.approx(res.loss[[0, 1, 2], [20, 18, 13]].mean())
    floor = np.zeros(300, dtype=int)
    at_floor = lambda_zero_check(res, types, ceilings, floor, COUPON_VALUES, 0.2, 0.002)
    assert not at_floor.holds_retention and not at_floor.holds
    # the high type's top set may reach the floor (its coupons barely differ); the others' do not
    assert at_floor.top_set_share <= 1 / 3 + 1e-12 and not at_floor.holds_top_set
    # within the top set but a retention gap beyond the tolerance: fails on retention alone
    far = lambda_zero_check(
        res, types, ceilings, ceilings, COUPON_VALUES, at_top.tolerance + 0.1, 0.001
    )
    assert far.holds_top_set and not far.holds_retention and not far.holds
    # a gap inside tolerance + 2 SE holds
    near = lambda_zero_check(
        res, types, ceilings, ceilings, COUPON_VALUES, at_top.tolerance + 0.003, 0.002
    )
    assert near.holds_retention


def test_bad_input_is_refused(episodes, retention) -> None:
    data = CouponDataset.from_episodes(episodes)
    table = exact_next_day_table(CONFIG, episodes)
    for n_se in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="n_se"):
            data_resolution(data, table, retention, n_se=n_se)
    with pytest.raises(SchemaError, match="next_day"):
        data_resolution(data, table[:2], retention)
    with pytest.raises(SchemaError, match="retention"):
        data_resolution(data, table, retention + 1.0)
    with pytest.raises(SchemaError, match="next_day"):
        data_resolution(data, np.full((3, N_ACTIONS), np.nan), retention)
    bad_type = make_dataset(np.array([3]), np.array([0]), np.array([1.0]))
    with pytest.raises(SchemaError, match="user type"):
        data_resolution(bad_type, table, retention)
    empty = make_dataset(np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros(0))
    with pytest.raises(SchemaError, match="empty"):
        data_resolution(empty, table, retention)
    res = data_resolution(data, table, retention)
    with pytest.raises(SchemaError, match="above its ceiling"):
        res.in_top_set(np.array([0]), np.array([5]), np.array([6]))
    with pytest.raises(SchemaError, match="one length"):
        res.in_top_set(np.array([0, 1]), np.array([5]), np.array([5]))
    with pytest.raises(SchemaError, match="user_types"):
        res.in_top_set(np.array([4]), np.array([5]), np.array([5]))
    with pytest.raises(SchemaError, match="whole numbers"):
        res.in_top_set(np.array([0]), np.array([5.5]), np.array([5]))
    with pytest.raises(SchemaError, match="non-empty"):
        res.in_top_set(np.array([]), np.array([]), np.array([]))
    with pytest.raises(SchemaError, match="ceiling"):
        res.top_set(0, 21)
    with pytest.raises(SchemaError, match="user_type"):
        res.top_set(True, 3)
    one = (np.array([0]), np.array([20]), np.array([20]))
    with pytest.raises(ConfigError, match="min_top_set_share"):
        lambda_zero_check(res, *one, COUPON_VALUES, 0.0, 0.01, min_top_set_share=0.0)
    with pytest.raises(SchemaError, match="retention_gap"):
        lambda_zero_check(res, *one, COUPON_VALUES, float("nan"), 0.01)
    with pytest.raises(SchemaError, match="retention_gap_se"):
        lambda_zero_check(res, *one, COUPON_VALUES, 0.0, -0.01)
    with pytest.raises(SchemaError, match="values"):
        lambda_zero_check(res, *one, COUPON_VALUES[:5], 0.0, 0.01)
    with pytest.raises(SchemaError, match="empty"):
        exact_next_day_table(
            CONFIG, dataclasses.replace(episodes, actions=episodes.actions[:0])
        )


def test_expected_rewards_are_the_mean_of_the_logged_returns(episodes) -> None:
    probs = exact_next_day_probabilities(CONFIG, episodes)
    assert probs.shape == (len(episodes),) and np.all((probs >= 0) & (probs <= 1))
    # the 0/1 rewards scatter around their probabilities: mean and a calibration slope
    assert abs(episodes.rewards.mean() - probs.mean()) < 4 * np.sqrt(probs.var() / len(probs) + 1e-6)
    resid = episodes.rewards - probs
    assert abs(np.mean(resid * (probs - probs.mean()))) < 1e-3
    # a bigger coupon never lowers the probability
    bigger = exact_next_day_probabilities(CONFIG, episodes, np.full(len(episodes), 20))
    assert np.all(bigger >= probs - 1e-12)
    with pytest.raises(SchemaError, match="shape"):
        exact_next_day_probabilities(CONFIG, episodes, np.zeros(3, dtype=int))
    with pytest.raises(SchemaError, match="lie in"):
        exact_next_day_probabilities(CONFIG, episodes, np.full(len(episodes), 21))
