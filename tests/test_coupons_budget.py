"""Finding λ*: grid and bisection searches, infeasible and non-binding budgets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pulse_lib.coupons.budget import (
    BudgetInfeasibleError, BudgetNotBindingWarning, search_bisection, search_grid,
)
from pulse_lib.coupons.dataset import lambda_grid
from pulse_lib.errors import ConfigError


def cost(lam: float) -> float:
    return 2.1 - 2.0 * lam  # decreasing from 2.1 to 0.1


def test_grid_returns_the_smallest_feasible_lambda() -> None:
    found = search_grid(cost, 1.0, lambda_grid())
    assert found.lam == pytest.approx(0.55) and found.cost <= 1.0
    assert len(found.evaluations) == 21


def test_bisection_brackets_the_threshold() -> None:
    found = search_bisection(cost, 1.0, tol=0.01)
    assert 0.55 <= found.lam <= 0.56 and found.cost <= 1.0
    assert len(found.evaluations) <= 2 + int(np.ceil(np.log2(1 / 0.01)))


def test_infeasible_budget_is_an_error() -> None:
    with pytest.raises(BudgetInfeasibleError, match="budget 0.050"):
        search_grid(cost, 0.05, lambda_grid())
    with pytest.raises(BudgetInfeasibleError):
        search_bisection(cost, 0.05)
    with pytest.raises(ConfigError):
        search_grid(cost, -1.0, lambda_grid())
    # an estimator may claim a spend below the cheapest coupon; the floor is checked first
    optimistic = lambda lam: -1.0  # noqa: E731
    with pytest.raises(BudgetInfeasibleError, match="cheapest coupon"):
        search_grid(optimistic, 0.05, lambda_grid(), min_cost=0.1)
    with pytest.raises(BudgetInfeasibleError, match="cheapest coupon"):
        search_bisection(optimistic, 0.05, min_cost=0.1)
    with pytest.raises(ConfigError):
        search_bisection(cost, 1.0, low=0.5, high=0.2)


def test_non_binding_budget_warns() -> None:
    with pytest.warns(BudgetNotBindingWarning):
        found = search_grid(cost, 5.0, lambda_grid())
    assert found.lam == 0.0
    with pytest.warns(BudgetNotBindingWarning):
        assert search_bisection(cost, 5.0).lam == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search_grid(cost, 1.0, lambda_grid())  # binding: no warning
