"""The two routes to λ*, and the d3rlpy CQL baseline's λ-per-episode dataset (tiny sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pulse_lib.coupons.budget import BudgetNotBindingWarning
from pulse_lib.coupons.dataset import STATE_SCALE, CouponDataset, lambda_grid
from pulse_lib.coupons.pipeline import lambda_generalized, per_lambda_retraining
from pulse_lib.coupons.rbcq import RBCQConfig
from pulse_lib.coupons.reme import REME, REMEConfig, ValueEstimate
from pulse_lib.coupons.simulator import CouponSimConfig, logging_policy, simulate
from pulse_lib.errors import ConfigError, SchemaError

torch.set_num_threads(1)
TINY_RBCQ, TINY_REME = RBCQConfig(hidden=8, n_heads=2, batch_size=32), REMEConfig(hidden=8, n_heads=2, batch_size=32)


@pytest.fixture(scope="module")
def dataset() -> CouponDataset:
    eps = simulate(CouponSimConfig(n_users=20, horizon=5), rng=np.random.default_rng(0), stochastic_policy=logging_policy())
    return CouponDataset.from_episodes(eps)


def test_lambda_generalized_counts_one_training(dataset: CouponDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    # a known decreasing cost estimate: the continuous search probes between the grid points
    monkeypatch.setattr(REME, "estimate", lambda self, starts, lam: ValueEstimate(lam, 0.5, 2.1 - 2.0 * lam))
    run = lambda_generalized(dataset, lambda_grid(0.25), 1.0, n_steps=7, n_eval_steps=5, seed=0,
                             rbcq=TINY_RBCQ, reme=TINY_REME, search_tol=1e-3)
    assert run.updates == 12 and run.probes == len(run.search.evaluations) == 2 + 10
    assert 0.55 <= run.search.lam <= 0.551 and run.search.cost <= 1.0
    assert run.mix.expected_cost == pytest.approx(1.0) and run.mix.lam_high == run.search.lam
    assert run.learner.n_updates == 7 and run.evaluator.n_updates == 5
    with pytest.warns(BudgetNotBindingWarning):
        free = lambda_generalized(dataset, lambda_grid(0.25), 2.5, n_steps=1, n_eval_steps=1, seed=0,
                                  rbcq=TINY_RBCQ, reme=TINY_REME)
    assert free.search.lam == 0.0 and free.mix.p_low == 0.0
    with pytest.raises(ConfigError):
        run.learner.policy(1.25)  # outside the trained grid [0, 1]


def test_per_lambda_retraining_counts_every_probe(dataset: CouponDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    # replace REME's estimate by a known decreasing cost, so the bisection path is deterministic
    monkeypatch.setattr(REME, "estimate", lambda self, starts, lam: ValueEstimate(lam, 0.5, 2.1 - 2.0 * lam))
    probes: list[float] = []
    run = per_lambda_retraining(dataset, 1.0, n_steps=4, n_eval_steps=3, seed=0, tol=0.3, rbcq=TINY_RBCQ,
                                reme=TINY_REME, on_probe=probes.append)
    assert probes == [1.0, 0.0, 0.5, 0.75]
    assert run.search.lam == 0.75 and run.updates == 4 * 7 and run.probes == 4
    # the bracket [0.5, 0.75] costs 1.1 and 0.6: the mix puts p = 0.8 on λ = 0.5
    assert run.mix.lam_low == 0.5 and run.mix.p_low == pytest.approx(0.8)
    assert run.mix.expected_cost == pytest.approx(1.0)
    assert set(run.learners) == {1.0, 0.0, 0.5, 0.75}
    run.policy(0.5)  # the bracket's other policy is kept
    assert run.learner.n_updates == 4 and run.evaluator.n_updates == 3
    run.learner.policy(0.75)  # the retrained learner accepts its own λ ...
    with pytest.raises(ConfigError):
        run.learner.policy(0.5)  # ... and no other


def test_missing_day_zero_is_refused(dataset: CouponDataset) -> None:
    later = dataset.observations[:, 0] > 0
    cut = CouponDataset(dataset.observations[later], dataset.actions[later], dataset.rewards[later],
                        dataset.costs[later], dataset.next_observations[later], dataset.terminals[later])
    with pytest.raises(SchemaError, match="day-0"):
        lambda_generalized(cut, lambda_grid(), 0.8, n_steps=1, n_eval_steps=1, seed=0)


def test_cql_dataset_has_one_lambda_per_episode(dataset: CouponDataset) -> None:
    from pulse_lib.coupons.baselines import LambdaCQL

    grid = lambda_grid(0.5)
    mdp = LambdaCQL.build_dataset(dataset, grid, horizon=5, seed=0)
    assert mdp.size() == 20
    for episode in mdp.episodes:
        lam = episode.observations[:, -1]
        assert np.all(lam == lam[0]) and lam[0] in grid
    first = mdp.episodes[0]
    np.testing.assert_allclose(first.observations[:, :-1], dataset.observations[:5] * STATE_SCALE, rtol=1e-6)
    np.testing.assert_allclose(first.rewards[:, 0], (dataset.rewards[:5] - first.observations[0, -1] * dataset.costs[:5]) / 5,
                               rtol=1e-6)
    with pytest.raises(SchemaError, match="whole episodes"):
        LambdaCQL.build_dataset(dataset, grid, horizon=3, seed=0)
