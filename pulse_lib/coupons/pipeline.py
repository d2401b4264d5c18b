"""The two routes to a budget-satisfying policy, with their compute counted.

* **λ-generalized** (BCORLE(λ)): train one λ-conditioned learner and one REME evaluator on the
  λ-generalized data, then scan the grid with REME's cost estimate -- no further training.
* **Per-λ retraining** (what the paper replaces): bisection on λ where every probe trains a new
  learner at that λ and a new evaluator for it.

Both report gradient updates and seconds spent, so the chapter and the benchmark compare compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pulse_lib.coupons.budget import LambdaSearch, search_bisection, search_grid
from pulse_lib.coupons.dataset import CouponDataset, LambdaSampler
from pulse_lib.coupons.rbcq import RBCQ, RBCQConfig
from pulse_lib.coupons.reme import REME, REMEConfig, initial_states
from pulse_lib.coupons.simulator import COUPON_VALUES
from pulse_lib.errors import SchemaError


@dataclass
class BudgetRun:
    """A learner, its evaluator, the λ chosen for the budget, and the compute it took."""

    learner: Any
    evaluator: REME
    search: LambdaSearch
    updates: int
    seconds: float


def _check_dataset(dataset: CouponDataset) -> None:
    if not np.any(dataset.observations[:, 0] == 0):
        raise SchemaError("the dataset has no day-0 states: REME estimates values from where episodes start")


def lambda_generalized(dataset: CouponDataset, grid: np.ndarray, budget: float, *, n_steps: int,
                       n_eval_steps: int, seed: int, rbcq: RBCQConfig = RBCQConfig(),
                       reme: REMEConfig = REMEConfig(), device: str = "cpu", progress: bool = False,
                       learner: Any | None = None) -> BudgetRun:
    """Train once over the whole grid, evaluate once, pick λ* by a grid scan of REME's cost estimate.

    ``learner``: an already trained λ-conditioned learner (anything with ``greedy``), e.g. CQL; then
    only REME is trained here and only its updates are counted.
    """
    _check_dataset(dataset)
    rng = np.random.default_rng(seed)
    sampler = LambdaSampler(dataset, grid)
    start = time.perf_counter()
    updates = 0
    if learner is None:
        cfg = replace(rbcq, lambda_low=float(np.min(grid)), lambda_high=float(np.max(grid)))
        learner = RBCQ(cfg, device=device, seed=seed)
        learner.fit(sampler, n_steps, rng, progress=progress)
        updates += n_steps
    evaluator = REME(learner.greedy, reme, device=device, seed=seed)
    evaluator.fit(sampler, n_eval_steps, rng, progress=progress)
    updates += n_eval_steps
    starts = initial_states(dataset.observations)
    search = search_grid(lambda lam: evaluator.estimate(starts, lam).cost, budget, grid,
                         min_cost=float(COUPON_VALUES.min()))
    return BudgetRun(learner, evaluator, search, updates, time.perf_counter() - start)


def per_lambda_retraining(dataset: CouponDataset, budget: float, *, n_steps: int, n_eval_steps: int,
                          seed: int, low: float = 0.0, high: float = 1.0, tol: float = 0.05,
                          rbcq: RBCQConfig = RBCQConfig(), reme: REMEConfig = REMEConfig(),
                          device: str = "cpu", on_probe: Callable[[float], None] | None = None) -> BudgetRun:
    """Bisection on λ; each probe trains an R-BCQ at that single λ and a REME for it."""
    _check_dataset(dataset)
    starts = initial_states(dataset.observations)
    trained: dict[float, tuple[RBCQ, REME]] = {}
    start = time.perf_counter()

    def cost_of(lam: float) -> float:
        if on_probe is not None:
            on_probe(lam)
        rng = np.random.default_rng(seed)
        sampler = LambdaSampler(dataset, np.array([lam], dtype=np.float32))
        learner = RBCQ(replace(rbcq, lambda_low=lam, lambda_high=lam), device=device, seed=seed)
        learner.fit(sampler, n_steps, rng)
        evaluator = REME(learner.greedy, reme, device=device, seed=seed)
        evaluator.fit(sampler, n_eval_steps, rng)
        trained[lam] = (learner, evaluator)
        return evaluator.estimate(starts, lam).cost

    search = search_bisection(cost_of, budget, low, high, tol, min_cost=float(COUPON_VALUES.min()))
    learner, evaluator = trained[search.lam]
    return BudgetRun(learner, evaluator, search, len(trained) * (n_steps + n_eval_steps),
                     time.perf_counter() - start)
