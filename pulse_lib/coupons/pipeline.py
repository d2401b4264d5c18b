"""The two routes to a budget-satisfying policy, with their compute counted.

* **λ-generalized** (BCORLE(λ)): train one λ-conditioned learner and one REME evaluator
  on the λ-generalized data, then search λ *continuously* by bisection on REME's cost
  estimate (a probe is a forward pass, so the tolerance can be tiny) -- no further
  training.
* **Per-λ retraining** (what the paper replaces): bisection on λ where every probe
  trains a new learner at that λ and a new evaluator for it.

Both finish the same way: the two policies of the final bracket are mixed at random, per
user, so that the expected estimated spend equals the budget
(:func:`~pulse_lib.coupons.budget.randomise`). Both report gradient updates, λ probes
and seconds, so the chapter and the benchmark compare compute.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pulse_lib.coupons import simulator as sim
from pulse_lib.coupons.budget import (
    BudgetInfeasibleError,
    BudgetNotBindingWarning,
    LambdaSearch,
    PolicyMix,
    randomise,
    search_bisection,
)
from pulse_lib.coupons.dataset import CouponDataset, LambdaSampler
from pulse_lib.coupons.rbcq import RBCQ, RBCQConfig
from pulse_lib.coupons.reme import REME, REMEConfig, initial_states
from pulse_lib.coupons.response_model import ResponseModel
from pulse_lib.coupons.simulator import COUPON_VALUES
from pulse_lib.errors import SchemaError

#: The least and the most any policy can spend per user-day (cheapest and dearest
#: coupon).
COST_RANGE: tuple[float, float] = (
    float(COUPON_VALUES.min()),
    float(COUPON_VALUES.max()),
)


@dataclass
class BudgetRun:
    """A learner, its evaluator, the λ chosen for the budget, and the compute it
    took."""

    learner: Any  # the learner of the selected λ (λ-generalized: the only one)
    evaluator: REME  # the evaluator of the selected λ
    search: LambdaSearch
    mix: PolicyMix  # the randomisation between the final bracket's two policies
    updates: int  # gradient updates, learner and evaluator, every probe included
    seconds: float  # wall time of training and search
    probes: int  # λ values evaluated by the search
    # λ -> learner that acts at that λ
    learners: dict[float, Any] = field(default_factory=dict)

    def policy(self, lam: float) -> sim.Policy:
        """The simulator policy at ``λ`` (a probed λ for retraining; any trained λ
        when generalized)."""
        learner = self.learners.get(float(lam), self.learner)
        return learner.policy(float(lam))

    def true_value(
        self, config: sim.CouponSimConfig, n_users: int, seed: int
    ) -> sim.PolicyValue:
        """Ground truth of the randomised policy: each user follows one of the two
        bracket policies.

        Per-user randomisation makes the mix's expected retention and cost the
        ``p``-weighted averages of the two policies' values, so each policy is simulated
        on its own (same seed) and combined; the standard errors combine likewise
        (independent runs).
        """
        return true_value_of_mix(config, self.policy, self.mix, n_users, seed)


def true_value_of_mix(
    config: sim.CouponSimConfig,
    policy_of: Callable[[float], sim.Policy],
    mix: PolicyMix,
    n_users: int,
    seed: int,
) -> sim.PolicyValue:
    """Ground truth of a per-user mix of ``policy_of(mix.lam_low)`` and
    ``policy_of(mix.lam_high)``.

    Per-user randomisation makes the mix's expected retention and cost the
    ``p``-weighted averages of the two policies' values, so each policy is simulated on
    its own (same seed) and combined; the standard errors combine likewise (independent
    runs).
    """
    high = sim.evaluate_policy(
        config, policy_of(mix.lam_high), n_users=n_users, seed=seed
    )
    if mix.p_low == 0.0:
        return high
    low = sim.evaluate_policy(
        config, policy_of(mix.lam_low), n_users=n_users, seed=seed
    )
    p = mix.p_low
    se = lambda a, b: float(np.hypot(p * a, (1 - p) * b))
    return sim.PolicyValue(
        mix.combine(low.retention, high.retention),
        mix.combine(low.cost, high.cost),
        se(low.retention_se, high.retention_se),
        se(low.cost_se, high.cost_se),
        n_users,
    )


def _check_dataset(dataset: CouponDataset) -> None:
    if not np.any(dataset.observations[:, 0] == 0):
        raise SchemaError(
            "the dataset has no day-0 states: REME estimates values from "
            "where episodes start"
        )


def lambda_generalized(
    dataset: CouponDataset,
    grid: np.ndarray,
    budget: float,
    *,
    n_steps: int,
    n_eval_steps: int,
    seed: int,
    rbcq: RBCQConfig = RBCQConfig(),
    reme: REMEConfig = REMEConfig(),
    device: str = "cpu",
    progress: bool = False,
    learner: Any | None = None,
    search_tol: float = 1e-3,
) -> BudgetRun:
    """Train once over the whole grid, evaluate once, bisect λ on REME's cost estimate,
    mix the bracket.

    ``learner``: an already trained λ-conditioned learner (anything with ``greedy`` and
    ``policy``), e.g. CQL; then only REME is trained here and only its updates are
    counted. The search runs on ``[min(grid), max(grid)]`` to ``search_tol``, between
    the grid points as well.
    """
    _check_dataset(dataset)
    rng = np.random.default_rng(seed)
    sampler = LambdaSampler(dataset, grid)
    start = time.perf_counter()
    updates = 0
    if learner is None:
        cfg = replace(
            rbcq, lambda_low=float(np.min(grid)), lambda_high=float(np.max(grid))
        )
        learner = RBCQ(cfg, device=device, seed=seed)
        learner.fit(sampler, n_steps, rng, progress=progress)
        updates += n_steps
    evaluator = REME(learner.greedy, reme, device=device, seed=seed)
    evaluator.fit(sampler, n_eval_steps, rng, progress=progress)
    updates += n_eval_steps
    starts = initial_states(dataset.observations)
    search = search_bisection(
        lambda lam: evaluator.estimate(starts, lam).cost,
        budget,
        float(np.min(grid)),
        float(np.max(grid)),
        search_tol,
        *COST_RANGE,
    )
    return BudgetRun(
        learner,
        evaluator,
        search,
        randomise(search, budget),
        updates,
        time.perf_counter() - start,
        len(search.evaluations),
    )


def search_and_mix(
    cost_of: Callable[[float], float],
    aim: float,
    tol: float = 1e-3,
    low: float = 0.0,
    high: float = 1.0,
) -> tuple[LambdaSearch, PolicyMix]:
    """Bisection on λ in ``[low, high]`` towards the spend ``aim``, then the randomised
    mix of the final bracket -- the search every route of the book uses.

    Estimates outside :data:`COST_RANGE` are flagged and never selected. If no λ is
    estimated within ``aim`` (even λ = ``high`` spends more), the cheapest policy
    (λ = ``high``) is returned with a NaN cost and flagged, so a caller can report the
    failure instead of crashing; a budget that does not bind returns λ = ``low``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetNotBindingWarning)
        try:
            search = search_bisection(cost_of, aim, low, high, tol, *COST_RANGE)
        except BudgetInfeasibleError:
            nan = math.nan
            failed = LambdaSearch(high, nan, [(high, nan)], flagged=[(high, nan)])
            return failed, PolicyMix(high, high, 0.0, nan, nan)
    return search, randomise(search, aim)


def rollout_cost_of(
    model: ResponseModel,
    policy_of: Callable[[float], sim.Policy],
    starts: np.ndarray,
    seed: int,
) -> Callable[[float], float]:
    """``λ -> estimated spend`` of ``policy_of(λ)``, by rollouts through ``model`` from
    the day-0 states ``starts`` (the same ``seed`` at every λ: common random numbers,
    so two nearby λ differ only through their policies)."""
    return lambda lam: model.rollout(policy_of(lam), starts, seed=seed).cost


def per_lambda_retraining(
    dataset: CouponDataset,
    budget: float,
    *,
    n_steps: int,
    n_eval_steps: int,
    seed: int,
    low: float = 0.0,
    high: float = 1.0,
    tol: float = 0.0625,
    rbcq: RBCQConfig = RBCQConfig(),
    reme: REMEConfig = REMEConfig(),
    device: str = "cpu",
    on_probe: Callable[[float], None] | None = None,
) -> BudgetRun:
    """Bisection on λ; each probe trains an R-BCQ at that single λ and a REME for it;
    mix the bracket."""
    _check_dataset(dataset)
    starts = initial_states(dataset.observations)
    trained: dict[float, tuple[RBCQ, REME]] = {}
    start = time.perf_counter()

    def cost_of(lam: float) -> float:
        if on_probe is not None:
            on_probe(lam)
        rng = np.random.default_rng(seed)
        sampler = LambdaSampler(dataset, np.array([lam], dtype=np.float32))
        learner = RBCQ(
            replace(rbcq, lambda_low=lam, lambda_high=lam), device=device, seed=seed
        )
        learner.fit(sampler, n_steps, rng)
        evaluator = REME(learner.greedy, reme, device=device, seed=seed)
        evaluator.fit(sampler, n_eval_steps, rng)
        trained[lam] = (learner, evaluator)
        return evaluator.estimate(starts, lam).cost

    search = search_bisection(cost_of, budget, low, high, tol, *COST_RANGE)
    learner, evaluator = trained[search.lam]
    return BudgetRun(
        learner,
        evaluator,
        search,
        randomise(search, budget),
        len(trained) * (n_steps + n_eval_steps),
        time.perf_counter() - start,
        len(search.evaluations),
        {lam: pair[0] for lam, pair in trained.items()},
    )
