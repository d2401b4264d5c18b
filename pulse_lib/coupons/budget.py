"""Finding λ*: the smallest Lagrange multiplier whose policy spends no more than the budget.

Retention grows with spend, so among the policies that meet the budget we want the one that spends
the most: the smallest feasible λ. Two searches over a cost function ``λ -> cost per user-day``:
a grid scan (cheap once one λ-generalized training answers every λ) and bisection (what per-λ
retraining must use, each evaluation being a full training).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pulse_lib.errors import ConfigError, PulseError


class BudgetInfeasibleError(PulseError, ValueError):
    """No λ in the searched range gives a policy that meets the budget."""


class BudgetNotBindingWarning(UserWarning):
    """Even λ = low spends less than the budget: the constraint does not bind."""


@dataclass
class LambdaSearch:
    """Result of a search: the chosen λ, its estimated cost, and every (λ, cost) evaluated."""

    lam: float
    cost: float
    evaluations: list[tuple[float, float]] = field(default_factory=list)


def _check_budget(budget: float, min_cost: float) -> None:
    if not np.isfinite(budget) or budget <= 0:
        raise ConfigError(f"the budget must be a positive number (cost per user-day), got {budget}")
    if budget < min_cost:
        raise BudgetInfeasibleError(
            f"the budget {budget:.3f} per user-day is below {min_cost:.3f}, the cost of the cheapest coupon: "
            "no policy can meet it, whatever an estimator says")


def search_grid(cost_of: Callable[[float], float], budget: float, grid: Sequence[float],
                min_cost: float = 0.0) -> LambdaSearch:
    """Evaluate every λ of ``grid``; return the smallest whose cost is within the budget.

    ``min_cost``: the least any policy can spend (0.1 per user-day here: every user gets a coupon);
    a budget below it is refused before any estimate is consulted.
    """
    _check_budget(budget, min_cost)
    grid = sorted(float(x) for x in grid)
    if not grid:
        raise ConfigError("the λ grid is empty")
    evaluations = [(lam, float(cost_of(lam))) for lam in grid]
    feasible = [(lam, cost) for lam, cost in evaluations if cost <= budget]
    if not feasible:
        lowest = min(cost for _, cost in evaluations)
        raise BudgetInfeasibleError(
            f"no λ in [{grid[0]}, {grid[-1]}] meets the budget {budget:.3f}: the cheapest policy "
            f"found costs {lowest:.3f} per user-day (the smallest coupon alone costs 0.1)")
    lam, cost = feasible[0]
    if lam == grid[0]:
        warnings.warn(f"λ={lam} already spends {cost:.3f} <= budget {budget:.3f}: the budget does not bind",
                      BudgetNotBindingWarning, stacklevel=2)
    return LambdaSearch(lam, cost, evaluations)


def search_bisection(cost_of: Callable[[float], float], budget: float, low: float = 0.0, high: float = 1.0,
                     tol: float = 0.05, min_cost: float = 0.0) -> LambdaSearch:
    """Bisection on λ in ``[low, high]`` until the bracket is narrower than ``tol``.

    Assumes cost decreases with λ (it does in expectation; a learned policy may wobble).
    Returns the feasible end of the final bracket. ``min_cost`` as in :func:`search_grid`.
    """
    _check_budget(budget, min_cost)
    if not 0 <= low < high or tol <= 0:
        raise ConfigError(f"need 0 <= low < high and tol > 0, got low={low}, high={high}, tol={tol}")
    evaluations: list[tuple[float, float]] = []

    def cost(lam: float) -> float:
        value = float(cost_of(lam))
        evaluations.append((lam, value))
        return value

    cost_high = cost(high)
    if cost_high > budget:
        raise BudgetInfeasibleError(
            f"even λ={high} spends {cost_high:.3f} per user-day, above the budget {budget:.3f}")
    cost_low = cost(low)
    if cost_low <= budget:
        warnings.warn(f"λ={low} already spends {cost_low:.3f} <= budget {budget:.3f}: the budget does not bind",
                      BudgetNotBindingWarning, stacklevel=2)
        return LambdaSearch(low, cost_low, evaluations)
    feasible_lam, feasible_cost = high, cost_high
    while high - low > tol:
        mid = (low + high) / 2
        c = cost(mid)
        if c <= budget:
            high, feasible_lam, feasible_cost = mid, mid, c
        else:
            low = mid
    return LambdaSearch(feasible_lam, feasible_cost, evaluations)
