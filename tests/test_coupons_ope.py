"""Episode estimators for coupon data: reshaping, target probabilities, sequential DR."""

from __future__ import annotations

import numpy as np
import pytest

from pulse_lib.coupons.dataset import CouponDataset
from pulse_lib.coupons.ope import (
    effective_sample_size,
    episode_view,
    sequential_doubly_robust,
    target_probability,
)
from pulse_lib.coupons.simulator import (
    CouponSimConfig,
    evaluate_policy,
    logging_policy,
    simulate,
)
from pulse_lib.errors import SchemaError


def test_episode_view_and_its_errors() -> None:
    eps = simulate(CouponSimConfig(n_users=5, horizon=4), rng=np.random.default_rng(0), stochastic_policy=logging_policy())
    ds = CouponDataset.from_episodes(eps)
    view = episode_view(ds, 4)
    assert view.shape == (5, 4)
    np.testing.assert_array_equal(view.rewards.reshape(-1), ds.rewards)
    with pytest.raises(SchemaError, match="whole episodes"):
        episode_view(ds, 3)
    shuffled = CouponDataset(ds.observations[::-1].copy(), ds.actions, ds.rewards, ds.costs, ds.next_observations,
                             ds.terminals, ds.propensities)
    with pytest.raises(SchemaError, match="row 0 is day 3"):
        episode_view(shuffled, 4)


def test_target_probability() -> None:
    p = target_probability(np.array([1, 2, 3]), np.array([1, 0, 3]), epsilon=0.21)
    np.testing.assert_allclose(p, [0.79 + 0.01, 0.01, 0.8])
    with pytest.raises(SchemaError):
        target_probability(np.array([1]), np.array([1, 2]))


def test_dr_on_policy_is_the_sample_mean_whatever_the_model() -> None:
    """For the logging policy itself (ρ = 1) the model terms cancel: DR is the sample mean, which is unbiased."""
    cfg = CouponSimConfig(n_users=4_000, horizon=30)
    behaviour = logging_policy()
    eps = simulate(cfg, rng=np.random.default_rng(1), stochastic_policy=behaviour)
    view = episode_view(CouponDataset.from_episodes(eps), 30)
    zeros = np.zeros(view.shape)
    on_policy = sequential_doubly_robust(view.rewards, view.behaviour_prob, view.behaviour_prob, zeros, zeros)
    assert on_policy.value == pytest.approx(view.rewards.mean())
    # a constant, wrong model: the corrections cancel it exactly when ρ = 1
    wrong = np.full(view.shape, 3.0)
    assert sequential_doubly_robust(view.rewards, view.behaviour_prob, view.behaviour_prob, wrong, wrong).value == \
        pytest.approx(view.rewards.mean())
    # and it estimates the logging policy's true value
    truth = evaluate_policy(cfg, stochastic_policy=behaviour, n_users=20_000, seed=2)
    lo, hi = on_policy.ci(0.999)
    assert lo < truth.retention < hi


def test_dr_validation_and_ess() -> None:
    ones = np.ones((2, 3))
    with pytest.raises(SchemaError, match=r"behaviour_prob must be in \(0, 1\].*index \(0, 0\) is 0.0"):
        sequential_doubly_robust(ones, ones, np.zeros((2, 3)), ones, ones)
    with pytest.raises(SchemaError, match=r"q_logged must have shape \(2, 3\), got \(2, 2\)"):
        sequential_doubly_robust(ones, ones, ones, np.ones((2, 2)), ones)
    ess = effective_sample_size(np.array([[1.0, 0.0], [1.0, 1.0]]), np.full((2, 2), 0.5))
    np.testing.assert_allclose(ess, [2.0, 1.0])
    with pytest.raises(SchemaError, match=r"target_prob must be a probability.*is 5.0"):
        sequential_doubly_robust(ones, np.full((2, 3), 5.0), ones, ones, ones)
    for bad in (np.nan, -0.5):
        with pytest.raises(SchemaError, match="target_prob"):
            effective_sample_size(np.full((2, 3), bad), ones)
