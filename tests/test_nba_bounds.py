"""Tests of the high-confidence lower bounds and the deploy rule (pulse_lib.nba.bounds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.nba.bounds import (
    bootstrap_lower,
    deploy,
    empirical_bernstein_lower,
    hcope_lower,
    score_deploy_rule,
    student_t_lower,
)
from pulse_lib.ope import ips, snips


def test_empirical_bernstein_matches_formula() -> None:
    x = np.random.default_rng(0).random(100)
    n, lt = 100, np.log(2 / 0.05)
    want = x.mean() - np.sqrt(2 * x.var(ddof=1) * lt / n) - 7 * 1.0 * lt / (3 * (n - 1))
    assert empirical_bernstein_lower(x, 0.05, low=0.0, high=1.0) == pytest.approx(want)
    # rescaling the terms rescales the bound
    assert empirical_bernstein_lower(3 * x + 1, 0.05, low=1.0, high=4.0) == pytest.approx(3 * want + 1)


def test_empirical_bernstein_covers_and_refuses_out_of_range_terms() -> None:
    rng = np.random.default_rng(1)
    hits = [empirical_bernstein_lower((rng.random(200) < 0.3).astype(float), 0.05, low=0, high=1) <= 0.3
            for _ in range(300)]
    assert np.mean(hits) >= 0.95
    with pytest.raises(SchemaError, match="row 1"):
        empirical_bernstein_lower([0.5, 1.5, 0.2], low=0.0, high=1.0)
    with pytest.raises(ConfigError, match="delta"):
        empirical_bernstein_lower([0.5, 0.2], delta=1.5, low=0.0, high=1.0)
    with pytest.raises(SchemaError, match="non-finite"):
        empirical_bernstein_lower([0.5, np.nan], low=0.0, high=1.0)


def test_hcope_bound_is_valid_on_heavy_tailed_importance_weighted_terms() -> None:
    """IPS terms with weights up to 100: the clipped bound still covers the true mean."""
    rng = np.random.default_rng(2)
    true_mean = 0.3  # E[w r] with w = 1/mu on the target action, r ~ Bernoulli(0.3)
    hits = []
    for _ in range(200):
        logged_target = rng.random(2000) < 0.01  # behaviour gives the target's action 1 %
        r = (rng.random(2000) < 0.3).astype(float)
        terms = np.where(logged_target, r / 0.01, 0.0)
        lb, c = hcope_lower(terms, 0.05, low=0.0, rng=rng)
        hits.append(lb <= true_mean)
        assert c > 0
    assert np.mean(hits) >= 0.95


def test_student_t_matches_scipy() -> None:
    x = np.random.default_rng(3).standard_normal(50)
    want = x.mean() - stats.t.ppf(0.95, 49) * x.std(ddof=1) / np.sqrt(50)
    assert student_t_lower(x, 0.05) == pytest.approx(want)


def test_bootstrap_mean_and_ratio() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal(2000) + 1.0
    normal_bound = x.mean() - 1.6449 * x.std(ddof=1) / np.sqrt(2000)
    assert bootstrap_lower(x, delta=0.05, n_boot=2000, rng=rng) == pytest.approx(normal_bound, abs=0.02)
    mu = rng.uniform(0.1, 1.0, 2000)
    pi = rng.uniform(0.0, 1.0, 2000)
    r = rng.random(2000)
    w = pi / mu
    median = bootstrap_lower(w * r, w, delta=0.5, n_boot=2000, rng=rng)
    assert median == pytest.approx(snips(r, pi, mu).value, abs=0.01)
    assert bootstrap_lower(w * r, None, delta=0.05, rng=rng) < ips(r, pi, mu).value
    with pytest.raises(SchemaError, match="shape"):
        bootstrap_lower(x, x[:10])
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_lower(x, n_boot=10)


def test_deploy_rule_and_its_score() -> None:
    assert deploy(0.51, 0.5) and not deploy(0.49, 0.5)
    with pytest.raises(SchemaError, match="finite"):
        deploy(np.nan, 0.5)
    shipped = np.array([True, True, False, False])
    cand = np.array([0.6, 0.4, 0.7, 0.3])
    cur = np.full(4, 0.5)
    out = score_deploy_rule(shipped, cand, cur)
    assert out.ship_rate == 0.5
    assert out.harmful_ship_rate == 0.25
    assert out.oracle_gain == pytest.approx((0.1 + 0.2) / 4)
    assert out.value_given_up == pytest.approx((0.2 + 0.1) / 4)  # missed +0.2, shipped -0.1
    with pytest.raises(SchemaError, match="shapes"):
        score_deploy_rule(shipped[:2], cand, cur)


def test_all_lower_bounds_sit_below_their_estimates_and_check_inputs() -> None:
    from pulse_lib.nba.bounds import all_lower_bounds

    rng = np.random.default_rng(5)
    n = 3000
    mu = np.full(n, 0.25)  # four actions, uniform logging
    pi = rng.choice([0.1, 0.7], size=n, p=[0.75, 0.25])  # target: 0.7 on one action, 0.1 on the others
    r = rng.random(n) * 1.5 - 0.5
    q = np.full(n, 0.2)
    out = all_lower_bounds(r, pi, mu, q, q, reward_range=(-0.5, 1.0), max_weight=0.7 / 0.25, rng=rng)
    assert out[("IPS", "estimate")] == pytest.approx(ips(r, pi, mu).value)
    assert out[("SNIPS", "estimate")] == pytest.approx(snips(r, pi, mu).value)
    for (name, method), value in out.items():
        if method != "estimate":
            assert value < out[(name, "estimate")], (name, method)
    with pytest.raises(SchemaError, match="max_weight"):
        all_lower_bounds(r, pi, mu, q, q, reward_range=(-0.5, 1.0), max_weight=1.0, rng=rng)
    with pytest.raises(SchemaError, match="outside reward_range"):
        all_lower_bounds(r, pi, mu, q, q, reward_range=(0.0, 1.0), max_weight=3.0, rng=rng)


def test_betting_bound_covers_and_beats_empirical_bernstein_on_skewed_terms() -> None:
    """IPS-like terms: mostly small, a few large. 400 replications of a known mean."""
    from pulse_lib.nba.bounds import betting_lower, clopper_pearson

    rng = np.random.default_rng(0)
    true_mean = (0.05 * 20.0 + 0.95 * 0.5) * 0.3
    holds, tighter = 0, 0
    for _ in range(400):
        w = np.where(rng.random(2000) < 0.05, 20.0, 0.5)
        x = w * (rng.random(2000) < 0.3)
        bet = betting_lower(x, 0.05, low=0.0, high=20.0, rng=rng)
        eb = empirical_bernstein_lower(x, 0.05, low=0.0, high=20.0)
        holds += bet <= true_mean
        tighter += bet > eb
    _lo, hi = clopper_pearson(holds, 400)
    assert hi >= 0.95  # no evidence of under-coverage
    assert tighter >= 360  # tighter than empirical Bernstein almost always
    with pytest.raises(SchemaError, match="outside the stated range"):
        betting_lower(np.array([0.1, 2.0, 0.3]), low=0.0, high=1.0)


def test_clopper_pearson_matches_known_values() -> None:
    from pulse_lib.nba.bounds import clopper_pearson

    lo, hi = clopper_pearson(95, 100)
    assert lo == pytest.approx(0.8872, abs=1e-4) and hi == pytest.approx(0.9836, abs=1e-4)
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    with pytest.raises(ConfigError):
        clopper_pearson(11, 10)
