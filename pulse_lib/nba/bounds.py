"""High-confidence lower bounds on off-policy estimates, and the deploy rule built on
them.

The point estimators live in :mod:`pulse_lib.ope` (IPS, SNIPS, DR); each returns
per-sample ``terms`` whose mean is the estimate. Here we turn terms into a number we can
bet on: a value ``L`` with ``P(V(pi) >= L) >= 1 - delta``.

- :func:`empirical_bernstein_lower` — Maurer & Pontil (2009, Thm 4): valid for any
  i.i.d. terms in a known range ``[low, high]``; loose when the range is wide (large
  weights).
- :func:`hcope_lower` — Thomas, Theocharous & Ghavamzadeh (2015): clip the terms from
  above at ``c`` (a clipped mean is never above the true one, so the bound stays valid),
  choosing ``c`` on a held-out part of the data.
- :func:`betting_lower` — Waudby-Smith & Ramdas (2023): the capital of a gambler betting
  that the mean is above ``m`` grows fast when it is; every ``m`` at which it reaches
  ``1/delta`` is rejected (Ville's inequality). Valid for terms in a known range like
  EB, but it adapts to the variance actually seen, and it is much tighter for the
  skewed, mostly-zero IPS terms.
- :func:`student_t_lower` — the CLT bound ``mean - t s / sqrt(n)``: approximate, often
  under-covers with heavy-tailed weights.
- :func:`bootstrap_lower` — percentile bootstrap of a ratio of means (covers IPS and DR
  with no denominator, SNIPS with the weights as denominator): approximate.

The deploy rule (:func:`deploy`) ships a candidate only when its lower bound beats the
current policy's value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.ope import doubly_robust, ips, snips

__all__ = [
    "DeployOutcome",
    "all_lower_bounds",
    "betting_lower",
    "bootstrap_counts",
    "bootstrap_lower",
    "clopper_pearson",
    "deploy",
    "empirical_bernstein_lower",
    "hcope_lower",
    "score_deploy_rule",
    "student_t_lower",
]


def _check_delta(delta: float) -> float:
    if not (isinstance(delta, (int, float, np.floating)) and 0.0 < float(delta) < 1.0):
        raise ConfigError(
            f"delta (the allowed failure probability) must be in (0, 1), got {delta!r}"
        )
    return float(delta)


def _terms(terms: object, name: str = "terms", min_n: int = 2) -> np.ndarray:
    x = np.asarray(terms, dtype=float)
    if x.ndim != 1:
        raise SchemaError(f"{name} must be 1-D, got shape {x.shape}")
    if x.shape[0] < min_n:
        raise SchemaError(
            f"{name} needs at least {min_n} values for a bound, got {x.shape[0]}"
        )
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise SchemaError(
            f"{name} has a non-finite value {x[bad[0]]!r} at row {int(bad[0])}"
        )
    return x


def empirical_bernstein_lower(
    terms: object, delta: float = 0.05, *, low: float, high: float
) -> float:
    """One-sided empirical Bernstein lower bound on the mean of i.i.d. terms in ``[low,
    high]``.

    ``mean - sqrt(2 V ln(2/delta) / n) - 7 (high - low) ln(2/delta) / (3 (n - 1))`` with
    ``V`` the sample variance (Maurer & Pontil 2009, Theorem 4, rescaled from ``[0,
    1]``). A term outside the stated range is an error: the bound would silently be
    wrong.
    """
    delta = _check_delta(delta)
    x = _terms(terms)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ConfigError(f"need finite low < high, got low={low!r}, high={high!r}")
    outside = np.flatnonzero((x < low - 1e-12) | (x > high + 1e-12))
    if outside.size:
        i = int(outside[0])
        raise SchemaError(
            f"term at row {i} is {x[i]!r}, outside the stated range [{low}, {high}]"
        )
    n = x.shape[0]
    log_term = np.log(2.0 / delta)
    var = x.var(ddof=1)
    return float(
        x.mean()
        - np.sqrt(2.0 * var * log_term / n)
        - 7.0 * (high - low) * log_term / (3.0 * (n - 1))
    )


def hcope_lower(
    terms: object,
    delta: float = 0.05,
    *,
    low: float,
    holdout: float = 0.2,
    rng: np.random.Generator | None = None,
    n_grid: int = 50,
) -> tuple[float, float]:
    """Clipped empirical Bernstein bound with the clip chosen on held-out terms (Thomas
    et al. 2015).

    ``min(X, c) <= X``, so a lower bound on the clipped mean is a lower bound on the
    true mean whatever ``c`` is; ``c`` trades bias (small ``c``) against range (large
    ``c``). We pick the ``c`` (among quantiles of the held-out terms) that maximises the
    bound on the held-out part, then compute the bound once on the rest. Returns
    ``(lower_bound, c)``.
    """
    delta = _check_delta(delta)
    x = _terms(terms, min_n=10)
    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout!r}")
    below = np.flatnonzero(x < low - 1e-12)
    if below.size:
        raise SchemaError(
            f"term at row {int(below[0])} is {x[below[0]]!r}, below the "
            f"stated low {low}"
        )
    rng = np.random.default_rng(0) if rng is None else rng
    perm = rng.permutation(x.shape[0])
    # int(): with numpy < 2 round() of a numpy float stays a float
    n_hold = max(2, int(round(holdout * x.shape[0])))  # noqa: RUF046
    hold, rest = x[perm[:n_hold]], x[perm[n_hold:]]
    if rest.shape[0] < 2:
        raise SchemaError(
            f"too few terms ({x.shape[0]}) to hold out {holdout:.0%} and "
            "still bound the rest"
        )
    candidates = np.unique(np.quantile(hold, np.linspace(0.5, 1.0, n_grid)))
    candidates = candidates[candidates > low]
    if candidates.size == 0:
        candidates = np.array([low + 1.0])

    def bound(sample: np.ndarray, c: float, n_eff: int) -> float:
        clipped = np.minimum(sample, c)
        log_term = np.log(2.0 / delta)
        return float(
            clipped.mean()
            - np.sqrt(2.0 * clipped.var(ddof=1) * log_term / n_eff)
            - 7.0 * (c - low) * log_term / (3.0 * (n_eff - 1))
        )

    # Score each c on the hold-out as if it had the size of the rest (Thomas et al.'s
    # heuristic).
    best_c = max(candidates, key=lambda c: bound(hold, c, rest.shape[0]))
    return bound(rest, float(best_c), rest.shape[0]), float(best_c)


def betting_lower(
    terms: object,
    delta: float = 0.05,
    *,
    low: float,
    high: float,
    c: float = 0.75,
    rng: np.random.Generator | None = None,
    tol: float = 1e-7,
) -> float:
    """Betting lower bound on the mean of i.i.d. terms in ``[low, high]`` (Waudby-Smith
    & Ramdas 2023).

    Terms are rescaled to ``y in [0, 1]``. For a candidate mean ``m`` the gambler's
    capital is ``K(m) = prod_i (1 + lambda_i(m) (y_i - m))`` with predictable bets
    ``lambda_i(m) = min(lambda_i, c / m)``, ``lambda_i = sqrt(2 ln(1/delta) / (n
    s_{i-1}^2))`` from the running variance of the terms seen before ``i`` (their
    "predictable plug-in" for a fixed sample size; ``s_0^2 = 1/4``). If the true mean is
    ``m`` or less, ``K(m)`` is a non-negative supermartingale, so ``P(K(m) >= 1/delta)
    <= delta`` (Ville): every ``m`` with ``K(m) >= 1/delta`` is rejected. ``K`` is
    non-increasing in ``m``, so the rejected set is an interval ``[0, L)`` and ``L``
    (the bound) is found by bisection. This is the one-sided version of their hedged
    capital process (all capital on the upward bet).

    The terms are bet on in a random order (``rng``; the bound is valid for any order
    fixed before looking at the data). A term outside ``[low, high]`` is an error.
    """
    delta = _check_delta(delta)
    x = _terms(terms)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ConfigError(f"need finite low < high, got low={low!r}, high={high!r}")
    if not 0.0 < c < 1.0:
        raise ConfigError(
            "c (the largest bet as a share of what the gambler can "
            f"lose) must be in (0, 1), got {c!r}"
        )
    outside = np.flatnonzero((x < low - 1e-12) | (x > high + 1e-12))
    if outside.size:
        i = int(outside[0])
        raise SchemaError(
            f"term at row {i} is {x[i]!r}, outside the stated range [{low}, {high}]"
        )
    rng = np.random.default_rng(0) if rng is None else rng
    y = np.clip((x[rng.permutation(x.shape[0])] - low) / (high - low), 0.0, 1.0)
    n = y.shape[0]
    # running mean and variance of the terms before i (with the prior 1/2, 1/4 of WSR)
    idx = np.arange(1, n + 1)
    mean_incl = (0.5 + np.cumsum(y)) / (idx + 1)
    mean_before = np.r_[0.5, mean_incl[:-1]]
    var_incl = (0.25 + np.cumsum((y - mean_before) ** 2)) / (idx + 1)
    var_before = np.r_[0.25, var_incl[:-1]]
    lam = np.sqrt(2.0 * np.log(1.0 / delta) / (n * var_before))
    target = np.log(1.0 / delta)

    def log_capital(m: float) -> float:
        bet = np.minimum(lam, c / m) if m > 0 else lam
        return float(np.sum(np.log1p(bet * (y - m))))

    lo_m, hi_m = 0.0, 1.0
    if log_capital(tol) < target:
        return float(low)
    while hi_m - lo_m > tol:
        mid = 0.5 * (lo_m + hi_m)
        if log_capital(mid) >= target:
            lo_m = mid  # mid is rejected: the mean is above it
        else:
            hi_m = mid
    return float(low + lo_m * (high - low))


def clopper_pearson(
    successes: int, trials: int, level: float = 0.95
) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided interval for a binomial proportion, e.g. a
    coverage."""
    if trials < 1 or not 0 <= successes <= trials:
        raise ConfigError(
            f"need 0 <= successes <= trials and trials >= 1, got {successes}, {trials}"
        )
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    a = (1.0 - level) / 2
    lo = (
        0.0
        if successes == 0
        else float(stats.beta.ppf(a, successes, trials - successes + 1))
    )
    hi = (
        1.0
        if successes == trials
        else float(stats.beta.ppf(1 - a, successes + 1, trials - successes))
    )
    return lo, hi


def student_t_lower(terms: object, delta: float = 0.05) -> float:
    """``mean - t_{1-delta, n-1} s / sqrt(n)``: the CLT-based one-sided bound
    (approximate)."""
    delta = _check_delta(delta)
    x = _terms(terms)
    n = x.shape[0]
    return float(
        x.mean() - stats.t.ppf(1.0 - delta, n - 1) * x.std(ddof=1) / np.sqrt(n)
    )


def bootstrap_counts(
    n: int, n_boot: int = 1_000, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``(n_boot, n)`` resample counts (how often each row is drawn), reusable across
    estimators so that every estimator of one data set is bootstrapped on the same
    resamples."""
    if n < 2 or n_boot < 100:
        raise ConfigError(
            f"need n >= 2 rows and n_boot >= 100 resamples, got n={n}, n_boot={n_boot}"
        )
    rng = np.random.default_rng(0) if rng is None else rng
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def bootstrap_lower(
    numerator: object,
    denominator: object | None = None,
    delta: float = 0.05,
    n_boot: int = 1_000,
    rng: np.random.Generator | None = None,
    counts: np.ndarray | None = None,
) -> float:
    """Percentile-bootstrap lower bound of ``mean(numerator) / mean(denominator)``.

    With no denominator this bootstraps a mean of terms (IPS, DR); with the importance
    weights as denominator it bootstraps SNIPS properly (the ratio is recomputed on
    every resample). Resamples are drawn as multinomial counts, so the cost is one
    matrix product; pass ``counts`` from :func:`bootstrap_counts` to reuse resamples.
    """
    delta = _check_delta(delta)
    num = _terms(numerator, "numerator")
    n = num.shape[0]
    den = np.ones(n) if denominator is None else _terms(denominator, "denominator")
    if den.shape != num.shape:
        raise SchemaError(f"denominator has shape {den.shape}, numerator {num.shape}")
    if counts is not None:
        counts = np.asarray(counts, dtype=float)
        if counts.ndim != 2 or counts.shape[1] != n:
            raise SchemaError(
                f"counts must have shape (n_boot, {n}), got {counts.shape}"
            )
        d = counts @ den
        with np.errstate(divide="ignore", invalid="ignore"):
            estimates = np.where(d > 0, (counts @ num) / np.where(d > 0, d, 1.0), 0.0)
        return float(np.quantile(estimates, delta))
    if n_boot < 100:
        raise ConfigError(f"n_boot must be >= 100 for a 1-delta quantile, got {n_boot}")
    rng = np.random.default_rng(0) if rng is None else rng
    estimates = np.empty(n_boot)
    # keep the count matrix ~160 MB at most
    chunk = max(1, min(n_boot, 20_000_000 // max(n, 1)))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        d = counts @ den
        with np.errstate(divide="ignore", invalid="ignore"):
            estimates[start : start + size] = np.where(
                d > 0, (counts @ num) / np.where(d > 0, d, 1.0), 0.0
            )
    return float(np.quantile(estimates, delta))


def deploy(lower_bound_candidate: float, value_current: float) -> bool:
    """The deploy rule: ship the candidate only if its lower bound beats the current
    value."""
    if not (np.isfinite(lower_bound_candidate) and np.isfinite(value_current)):
        raise SchemaError(
            f"deploy needs finite numbers, got {lower_bound_candidate!r} "
            f"and {value_current!r}"
        )
    return bool(lower_bound_candidate > value_current)


@dataclass(frozen=True)
class DeployOutcome:
    """How a deploy rule did over many decisions with known true values."""

    ship_rate: float  # fraction of decisions that shipped the candidate
    # fraction that shipped a candidate truly worse than the current policy
    harmful_ship_rate: float
    # mean true value lost against the oracle rule (ship iff truly better)
    value_given_up: float
    # mean true gain of the oracle rule over always keeping the current policy
    oracle_gain: float


def score_deploy_rule(
    shipped: np.ndarray, true_candidate: np.ndarray, true_current: np.ndarray
) -> DeployOutcome:
    """Score ship/keep decisions against the truth (arrays over replications)."""
    s = np.asarray(shipped, dtype=bool)
    vc = np.asarray(true_candidate, dtype=float)
    v0 = np.asarray(true_current, dtype=float)
    if not (s.shape == vc.shape == v0.shape) or s.ndim != 1:
        raise SchemaError(
            f"shapes differ: shipped {s.shape}, true_candidate "
            f"{vc.shape}, true_current {v0.shape}"
        )
    gain = vc - v0
    achieved = np.where(s, gain, 0.0)
    oracle = np.maximum(gain, 0.0)
    return DeployOutcome(
        ship_rate=float(s.mean()),
        harmful_ship_rate=float(np.mean(s & (gain < 0))),
        value_given_up=float(np.mean(oracle - achieved)),
        oracle_gain=float(oracle.mean()),
    )


def all_lower_bounds(
    rewards: object,
    target_prob: object,
    behaviour_prob: object,
    q_hat_logged_action: object,
    v_hat_target: object,
    *,
    reward_range: tuple[float, float],
    max_weight: float,
    delta: float = 0.05,
    counts: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    bootstrap: bool = True,
) -> dict[tuple[str, str], float]:
    """Point estimates and lower bounds of IPS, SNIPS and DR on one logged data set.

    Keys are ``(estimator, method)`` with method ``"estimate"``, ``"EB"`` (empirical
    Bernstein with the range implied by ``reward_range`` and ``max_weight``),
    ``"HCOPE"`` (clipped EB, IPS only), ``"betting"`` (Waudby-Smith & Ramdas, same
    ranges as EB), ``"t"`` and ``"bootstrap"`` (SNIPS bootstraps its ratio). Estimates,
    ``t`` and bootstrap use the rewards as given. EB and HCOPE need non-negative IPS
    terms, so they bound ``E[w (r - low)] = V - low`` (true when every action the target
    takes has positive logging probability) and add ``low`` back.

    ``bootstrap=False`` skips the (costly) bootstrap bounds.

    ``max_weight`` must bound ``target_prob / behaviour_prob`` over all contexts and
    actions (not only the logged ones): it is a property of the two policies, and a
    bound computed from the logged rows alone would not be a bound.
    """
    r_low, r_high = (float(v) for v in reward_range)
    if not r_high > r_low:
        raise ConfigError(
            f"reward_range must be (low, high) with high > low, got {reward_range!r}"
        )
    r = np.asarray(rewards, dtype=float)
    outside = np.flatnonzero((r < r_low) | (r > r_high))
    if outside.size:
        raise SchemaError(
            f"reward at row {int(outside[0])} is {r[outside[0]]!r}, "
            f"outside reward_range {reward_range}"
        )
    # The reward model's predictions are clipped to the reward range, so the DR range
    # holds.
    q = np.clip(np.asarray(q_hat_logged_action, dtype=float), r_low, r_high)
    v = np.clip(np.asarray(v_hat_target, dtype=float), r_low, r_high)
    span = r_high - r_low
    est = {
        "IPS": ips(r, target_prob, behaviour_prob),
        "SNIPS": snips(r, target_prob, behaviour_prob),
        "DR": doubly_robust(r, target_prob, behaviour_prob, q, v),
    }
    ips_shifted = ips(r - r_low, target_prob, behaviour_prob).terms
    weights = np.asarray(target_prob, dtype=float) / np.asarray(
        behaviour_prob, dtype=float
    )
    if weights.max() > max_weight * (1 + 1e-9):
        i = int(np.argmax(weights))
        raise SchemaError(
            f"weight {weights[i]!r} at row {i} exceeds max_weight {max_weight!r}"
        )
    out: dict[tuple[str, str], float] = {}
    for name, e in est.items():
        out[(name, "estimate")] = e.value
        out[(name, "t")] = student_t_lower(e.terms, delta)
    out[("IPS", "EB")] = (
        empirical_bernstein_lower(ips_shifted, delta, low=0.0, high=max_weight * span)
        + r_low
    )
    out[("IPS", "HCOPE")] = hcope_lower(ips_shifted, delta, low=0.0, rng=rng)[0] + r_low
    out[("IPS", "betting")] = (
        betting_lower(ips_shifted, delta, low=0.0, high=max_weight * span, rng=rng)
        + r_low
    )
    # DR terms: v in [r_low, r_high] plus w (r - q) in [-w_max span, w_max span]
    out[("DR", "EB")] = empirical_bernstein_lower(
        est["DR"].terms,
        delta,
        low=r_low - max_weight * span,
        high=r_high + max_weight * span,
    )
    out[("DR", "betting")] = betting_lower(
        est["DR"].terms,
        delta,
        low=r_low - max_weight * span,
        high=r_high + max_weight * span,
        rng=rng,
    )
    if not bootstrap:
        return out
    n = r.shape[0]
    counts = bootstrap_counts(n, rng=rng) if counts is None else counts
    out[("IPS", "bootstrap")] = bootstrap_lower(weights * r, delta=delta, counts=counts)
    out[("SNIPS", "bootstrap")] = bootstrap_lower(
        weights * r, weights, delta=delta, counts=counts
    )
    out[("DR", "bootstrap")] = bootstrap_lower(
        est["DR"].terms, delta=delta, counts=counts
    )
    return out
