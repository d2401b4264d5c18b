"""The logged dataset's validation and the λ-generalized sampler."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pulse_lib.coupons.dataset import (
    STATE_SCALE,
    CouponDataset,
    LambdaSampler,
    lambda_grid,
    materialize,
)
from pulse_lib.coupons.simulator import CouponSimConfig, logging_policy, simulate
from pulse_lib.errors import ConfigError, SchemaError


def small_dataset(n_users: int = 4, horizon: int = 3, seed: int = 0) -> CouponDataset:
    cfg = CouponSimConfig(n_users=n_users, horizon=horizon)
    eps = simulate(cfg, rng=np.random.default_rng(seed), stochastic_policy=logging_policy())
    return CouponDataset.from_episodes(eps)


def test_lambda_grid_is_the_papers() -> None:
    grid = lambda_grid()
    assert grid.size == 21 and grid[0] == 0 and grid[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(np.diff(grid), 0.05, atol=1e-6)
    with pytest.raises(ConfigError):
        lambda_grid(step=0.3, high=1.0)


@settings(max_examples=25, deadline=None)
@given(n_users=st.integers(1, 5), horizon=st.integers(1, 4), n_lam=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_sampler_rows_equal_materialized_rows(n_users: int, horizon: int, n_lam: int, seed: int) -> None:
    """Row (i, j) drawn by the sampler is row i*L + j of the explicit L-fold copy."""
    ds = small_dataset(n_users, horizon, seed)
    grid = np.linspace(0, 1, n_lam).astype(np.float32)
    big = materialize(ds, grid)
    assert big["obs"].shape[0] == len(ds) * n_lam
    sampler = LambdaSampler(ds, grid)
    idx, lam_idx = sampler.sample_indices(64, np.random.default_rng(seed))
    batch = sampler.gather(idx, lam_idx)
    rows = idx * n_lam + lam_idx
    np.testing.assert_allclose(batch.lagrangian_rewards, big["reward"][rows], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(batch.lam, big["lam"][rows])
    np.testing.assert_array_equal(batch.actions, big["actions"][rows])
    np.testing.assert_allclose(batch.obs, big["obs"][rows] * STATE_SCALE)
    np.testing.assert_allclose(batch.next_obs, big["next_obs"][rows] * STATE_SCALE)


def test_sampler_draws_every_materialized_row_uniformly() -> None:
    """Chi-square: the (transition, λ) cells are hit uniformly, as uniform sampling of the copy would."""
    ds = small_dataset(2, 3)  # 6 transitions
    grid = lambda_grid(step=0.25)  # 5 values -> 30 cells
    idx, lam_idx = LambdaSampler(ds, grid).sample_indices(60_000, np.random.default_rng(7))
    counts = np.bincount(idx * grid.size + lam_idx, minlength=len(ds) * grid.size)
    assert counts.size == 30
    assert stats.chisquare(counts).pvalue > 1e-3
    # and the Lagrangian rewards have the distribution of the materialized column
    big = materialize(ds, grid)
    sampled = LambdaSampler(ds, grid).gather(idx, lam_idx).lagrangian_rewards
    assert stats.ks_2samp(sampled, big["reward"]).pvalue > 1e-3


def test_sampler_adds_memory_per_batch_not_per_lambda() -> None:
    ds = small_dataset(20, 30)
    grid = lambda_grid()
    sampler = LambdaSampler(ds, grid)
    big = materialize(ds, grid)
    big_bytes = sum(a.nbytes for a in big.values())
    assert sampler.extra_bytes(256) == 1024
    assert big_bytes > 15 * ds.nbytes() - 1  # the explicit copy costs ~L times the data


def test_dataset_validation_names_the_problem() -> None:
    ds = small_dataset()
    with pytest.raises(SchemaError, match="no costs"):
        CouponDataset(ds.observations, ds.actions, ds.rewards, None, ds.next_observations, ds.terminals)
    bad = ds.rewards.copy()
    bad[3] = np.nan
    with pytest.raises(SchemaError, match="'rewards' has NaN or inf at row 3"):
        CouponDataset(ds.observations, ds.actions, bad, ds.costs, ds.next_observations, ds.terminals)
    with pytest.raises(SchemaError, match="'observations' has shape"):
        CouponDataset(ds.observations[:, :40], ds.actions, ds.rewards, ds.costs, ds.next_observations, ds.terminals)
    with pytest.raises(SchemaError, match="'actions' must lie"):
        CouponDataset(ds.observations, ds.actions + 21, ds.rewards, ds.costs, ds.next_observations, ds.terminals)
    zero = ds.propensities.copy()
    zero[5] = 0
    with pytest.raises(SchemaError, match="row 5"):
        CouponDataset(ds.observations, ds.actions, ds.rewards, ds.costs, ds.next_observations, ds.terminals, zero)
    no_props = CouponDataset(ds.observations, ds.actions, ds.rewards, ds.costs, ds.next_observations, ds.terminals)
    with pytest.raises(SchemaError, match="no 'propensities'"):
        no_props.require_propensities()
    with pytest.raises(ConfigError):
        LambdaSampler(ds, np.array([]))
    with pytest.raises(ConfigError):
        LambdaSampler(ds, np.array([-0.1, 0.2]))
