"""Finding λ*: the smallest Lagrange multiplier whose policy spends no more than the
budget.

Retention grows with spend, so among the policies that meet the budget we want the one
that spends the most: the smallest feasible λ. Two searches over a cost function ``λ ->
cost per user-day``: a grid scan and bisection. With a λ-conditioned policy and
evaluator every probe is a forward pass, so bisection can run to a tiny tolerance (a
*continuous* search); per-λ retraining pays a full training per probe.

An estimator can return an impossible cost (NaN, negative, above the largest coupon).
Such a probe is **flagged** in the result and never selected; bisection treats it as
infeasible, which moves the search towards larger λ (cheaper policies), the safe side of
the budget.

Where the cost curve jumps between two neighbouring λ, no single policy spends the
budget: :func:`randomise` mixes the two policies of the final bracket (each *user* drawn
to one of them) with the probability that makes the expected estimated spend equal the
budget.
"""

from __future__ import annotations

import math
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
    """Result of a search: the chosen λ, its estimated cost, and every (λ, cost)
    evaluated.

    ``over_lam`` / ``over_cost``: the largest probed λ whose (valid) estimate exceeds
    the budget,
    below ``lam`` -- the other end of the final bracket (``None`` if the budget does not
    bind).
    ``flagged``: probes whose estimate was outside the feasible range (never selected).
    """

    lam: float
    cost: float
    evaluations: list[tuple[float, float]] = field(default_factory=list)
    over_lam: float | None = None
    over_cost: float | None = None
    flagged: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class PolicyMix:
    """Give each user the policy of ``lam_low`` with probability ``p_low``, else that of
    ``lam_high``.

    ``expected_cost`` is the estimated spend of the mix: ``p_low c_low + (1 - p_low)
    c_high``.
    """

    lam_low: float
    lam_high: float
    p_low: float
    cost_low: float
    cost_high: float

    @property
    def expected_cost(self) -> float:
        return self.p_low * self.cost_low + (1 - self.p_low) * self.cost_high

    def combine(self, low: float, high: float) -> float:
        """The mix's value of any per-user-day quantity, from the two policies'
        values."""
        return self.p_low * low + (1 - self.p_low) * high


def _check_budget(budget: float, min_cost: float) -> None:
    if not np.isfinite(budget) or budget <= 0:
        raise ConfigError(
            f"the budget must be a positive number (cost per user-day), got {budget}"
        )
    if budget < min_cost:
        raise BudgetInfeasibleError(
            f"the budget {budget:.3f} per user-day is below {min_cost:.3f}, the cost "
            "of the cheapest coupon: "
            "no policy can meet it, whatever an estimator says"
        )


def _check_range(min_cost: float, max_cost: float) -> None:
    """``0 <= min_cost <= max_cost`` (``max_cost`` may be ``inf``: no upper check)."""
    if not np.isfinite(min_cost) or np.isnan(max_cost) or not 0 <= min_cost <= max_cost:
        raise ConfigError(
            "the feasible cost range must satisfy 0 <= min_cost <= "
            "max_cost, got "
            f"[{min_cost}, {max_cost}]"
        )


def valid_cost(
    cost: float, min_cost: float, max_cost: float, slack: float = 1e-6
) -> bool:
    """Whether an estimated cost is possible: finite and within ``[min_cost,
    max_cost]``."""
    return bool(math.isfinite(cost) and min_cost - slack <= cost <= max_cost + slack)


def search_grid(
    cost_of: Callable[[float], float],
    budget: float,
    grid: Sequence[float],
    min_cost: float = 0.0,
    max_cost: float = math.inf,
) -> LambdaSearch:
    """Evaluate every λ of ``grid``; return the smallest whose cost is valid and within
    the budget.

    ``min_cost`` / ``max_cost``: the least / most any policy can spend (0.1 and 2.1 per
    user-day here); a budget below ``min_cost`` is refused before any estimate is
    consulted, and estimates outside the range (or NaN) are flagged and never selected.
    """
    _check_range(min_cost, max_cost)
    _check_budget(budget, min_cost)
    grid = sorted(float(x) for x in grid)
    if not grid or not all(np.isfinite(grid)):
        raise ConfigError(f"the λ grid must be non-empty and finite, got {grid[:5]}")
    evaluations = [(lam, float(cost_of(lam))) for lam in grid]
    flagged = [
        (lam, c) for lam, c in evaluations if not valid_cost(c, min_cost, max_cost)
    ]
    valid = [(lam, c) for lam, c in evaluations if valid_cost(c, min_cost, max_cost)]
    feasible = [(lam, c) for lam, c in valid if c <= budget]
    if not feasible:
        lowest = min((c for _, c in valid), default=float("nan"))
        raise BudgetInfeasibleError(
            f"no λ in [{grid[0]}, {grid[-1]}] meets the budget {budget:.3f}: the "
            "cheapest valid estimate "
            f"is {lowest:.3f} per user-day ({len(flagged)} estimates flagged as "
            "impossible)"
        )
    lam, cost = feasible[0]
    over = [(x, c) for x, c in valid if x < lam and c > budget]
    if lam == grid[0]:
        warnings.warn(
            f"λ={lam} already spends {cost:.3f} <= budget {budget:.3f}: the "
            "budget does not bind",
            BudgetNotBindingWarning,
            stacklevel=2,
        )
    return LambdaSearch(
        lam, cost, evaluations, *(over[-1] if over else (None, None)), flagged=flagged
    )


def search_bisection(
    cost_of: Callable[[float], float],
    budget: float,
    low: float = 0.0,
    high: float = 1.0,
    tol: float = 0.05,
    min_cost: float = 0.0,
    max_cost: float = math.inf,
    max_probes: int = 64,
) -> LambdaSearch:
    """Bisection on λ in ``[low, high]`` until the bracket is narrower than ``tol``.

    Assumes cost decreases with λ (it does in expectation; a learned policy may wobble).
    Returns the feasible end of the final bracket, and its infeasible end as
    ``over_lam`` (for :func:`randomise`). Probes whose estimate is outside ``[min_cost,
    max_cost]`` or NaN are flagged and treated as infeasible. ``max_probes`` bounds the
    work whatever ``tol`` is.
    """
    _check_range(min_cost, max_cost)
    _check_budget(budget, min_cost)
    for name, value in (("low", low), ("high", high), ("tol", tol)):
        if not np.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value}")
    if not 0 <= low < high or tol <= 0:
        raise ConfigError(
            f"need 0 <= low < high and tol > 0, got low={low}, high={high}, tol={tol}"
        )
    if max_probes < 2:
        raise ConfigError(f"max_probes must be >= 2, got {max_probes}")
    evaluations: list[tuple[float, float]] = []
    flagged: list[tuple[float, float]] = []

    def cost(lam: float) -> float:
        value = float(cost_of(lam))
        evaluations.append((lam, value))
        if not valid_cost(value, min_cost, max_cost):
            flagged.append((lam, value))
            return math.inf  # impossible: never selected, treated as over the budget
        return value

    cost_high = cost(high)
    if cost_high > budget:
        raise BudgetInfeasibleError(
            f"even λ={high} spends {evaluations[-1][1]:.3f} per user-day (estimate), "
            "not within the budget "
            f"{budget:.3f}"
            + (" -- the estimate is outside the feasible range" if flagged else "")
        )
    cost_low = cost(low)
    if cost_low <= budget:
        warnings.warn(
            f"λ={low} already spends {cost_low:.3f} <= budget {budget:.3f}: "
            "the budget does not bind",
            BudgetNotBindingWarning,
            stacklevel=2,
        )
        return LambdaSearch(low, cost_low, evaluations, flagged=flagged)
    feasible_lam, feasible_cost = high, cost_high
    over_lam, over_cost = low, cost_low
    while high - low > tol and len(evaluations) < max_probes:
        mid = (low + high) / 2
        c = cost(mid)
        if c <= budget:
            high, feasible_lam, feasible_cost = mid, mid, c
        else:
            low, over_lam, over_cost = mid, mid, c
    over = (over_lam, over_cost) if math.isfinite(over_cost) else (None, None)
    return LambdaSearch(
        feasible_lam, feasible_cost, evaluations, *over, flagged=flagged
    )


def randomise(search: LambdaSearch, budget: float) -> PolicyMix:
    """Mix the two ends of the final bracket so the expected *estimated* spend equals
    the budget.

    With ``c_over > budget >= c_lam``: ``p = (budget - c_lam) / (c_over - c_lam)`` on
    the λ below (the spending policy). Without a valid over-budget end (the budget does
    not bind, or that end's estimate was flagged), the mix is the feasible policy alone
    (``p = 0``).
    """
    if not np.isfinite(budget) or budget <= 0:
        raise ConfigError(f"the budget must be a positive number, got {budget}")
    if search.cost > budget + 1e-12:
        raise ConfigError(
            f"the selected λ={search.lam} is estimated at "
            f"{search.cost:.3f} > budget {budget}"
        )
    if (
        search.over_lam is None
        or search.over_cost is None
        or not np.isfinite(search.over_cost)
    ):
        return PolicyMix(search.lam, search.lam, 0.0, search.cost, search.cost)
    if search.over_cost <= budget:
        raise ConfigError(
            f"the bracket's lower end λ={search.over_lam} is not over the budget"
        )
    p = (budget - search.cost) / (search.over_cost - search.cost)
    return PolicyMix(
        search.over_lam,
        search.lam,
        float(np.clip(p, 0.0, 1.0)),
        search.over_cost,
        search.cost,
    )


@dataclass(frozen=True)
class SafetyMargin:
    """How far below the budget a search should aim, calibrated on validation runs.

    ``errors`` are (true - estimated) spends of the mixes a search chose on validation
    trainings that the measured runs do not use; ``margin = max(0, mean + k sd)``.
    """

    margin: float  # per user-day; the search aims at budget - margin
    mean_error: float  # mean (true - estimated) spend over the validation runs
    sd_error: float  # their standard deviation (ddof = 1): run-to-run variation
    n_runs: int  # validation runs
    k: float  # standard deviations added to the mean

    def target(self, budget: float) -> float:
        """The spend the search aims at: ``budget - margin``."""
        return budget - self.margin


def calibrate_margin(errors: Sequence[float], k: float = 2.0) -> SafetyMargin:
    """The safety margin from the evaluator's errors on validation runs.

    The mean corrects the evaluator's bias at the point the search lands; ``k``
    standard deviations of the error *from run to run* (not the Monte-Carlo error of one
    estimate, which is much smaller) cover a new run whose error differs from the mean.
    With normal errors, ``k = 2`` leaves about a 2% chance of overspending by more than
    nothing. Needs at least two finite errors.
    """
    values = np.asarray(list(errors), dtype=float)
    if values.ndim != 1 or values.size < 2 or not np.all(np.isfinite(values)):
        raise ConfigError(
            "calibrate_margin needs at least two finite validation errors, got "
            f"{values.tolist()[:5]}"
        )
    if not np.isfinite(k) or k < 0:
        raise ConfigError(f"k must be a finite number >= 0, got {k}")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    return SafetyMargin(max(0.0, mean + k * sd), mean, sd, int(values.size), float(k))
