"""Off-policy estimators on plain arrays: bandit (per-decision) and trajectory
estimators.

Every estimator returns an :class:`OPEEstimate` whose ``terms`` are per-sample
contributions (per logged decision for the bandit estimators, per episode for the
trajectory estimators) whose mean is the estimate, so a caller can put a confidence
interval on it (``est.ci()``) or bootstrap it.

Notation: a logged decision ``i`` has reward ``r_i``, behaviour (logging) propensity
``mu_i = mu(a_i | x_i)`` and target probability ``pi_i = pi(a_i | x_i)`` of the *logged*
action; the importance weight is ``w_i = pi_i / mu_i``.

References: Horvitz & Thompson (1952) for IPS; Swaminathan & Joachims (2015) for SNIPS;
Dudík, Langford & Li (2011) for doubly robust; Precup, Sutton & Singh (2000) for
per-decision importance sampling; Thomas (2015) and Voloshin et al. (2021) for the
weighted variants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pulse_lib.errors import SchemaError
from pulse_lib.validation import (
    check_array,
    check_probabilities,
    check_scalar,
    check_weights,
)

__all__ = [
    "TRAJECTORY_ESTIMATORS",
    "OPEEstimate",
    "bootstrap_mean_interval",
    "bootstrap_trajectory_intervals",
    "direct_method",
    "doubly_robust",
    "effective_sample_size",
    "ips",
    "per_decision_is",
    "percentile_interval",
    "snips",
    "trajectory_is",
    "trajectory_wis",
    "weighted_per_decision_is",
]


@dataclass(frozen=True)
class OPEEstimate:
    """The value of a target policy estimated from logged data.

    Attributes: value: the estimate; always equal to ``terms.mean()``. terms: per-sample
        contributions (one per decision or per episode) whose mean is ``value``. For the
        self-normalised estimators (SNIPS, WIS, weighted PDIS) the terms are ``w_i r_i /
        mean(w)``: their mean is the estimate, and their spread gives an approximate
        (delta-method-free, slightly optimistic) standard error. name: short name of the
        estimator (``"IPS"``, ``"SNIPS"``, ...).
    """

    value: float
    terms: np.ndarray
    name: str

    @property
    def n(self) -> int:
        """Number of terms (decisions or episodes)."""
        return int(self.terms.shape[0])

    @property
    def stderr(self) -> float:
        """Standard error of the mean of ``terms`` (``nan`` with a single term)."""
        if self.n < 2:
            return float("nan")
        return float(np.std(self.terms, ddof=1) / np.sqrt(self.n))

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Normal-approximation confidence interval ``value ± z * stderr``."""
        check_scalar(
            "confidence level",
            level,
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
            error=SchemaError,
        )
        z = float(stats.norm.ppf(0.5 + level / 2.0))
        return (self.value - z * self.stderr, self.value + z * self.stderr)


# --------------------------------------------------------------------------- validation


def _as_1d(name: str, values: object, n: int | None = None) -> np.ndarray:
    """A finite float64 1-D array, or a :class:`SchemaError` naming the argument and
    row."""
    arr = check_array(name, values, ndim=1)
    if n is not None and arr.shape[0] != n:
        raise SchemaError(
            f"{name} has {arr.shape[0]} rows, expected {n} (same as rewards)"
        )
    return arr


def _probabilities(
    name: str, values: object, n: int, *, allow_zero: bool
) -> np.ndarray:
    """Probabilities in [0, 1]; with ``allow_zero=False`` at least the smallest normal
    double, so ``1 / p`` stays finite (zero and denormal propensities are errors, not
    ``inf``)."""
    _as_1d(name, values, n)
    return check_probabilities(name, values, strictly_positive=not allow_zero)


def _weights(
    rewards: object, target_prob: object, behaviour_prob: object
) -> tuple[np.ndarray, np.ndarray]:
    r = _as_1d("rewards", rewards)
    pi = _probabilities("target_prob", target_prob, r.shape[0], allow_zero=True)
    mu = _probabilities("behaviour_prob", behaviour_prob, r.shape[0], allow_zero=False)
    return r, pi / mu


def _estimate(terms: np.ndarray, name: str) -> OPEEstimate:
    terms = np.ascontiguousarray(terms, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(terms))
    if bad.size:  # finite inputs whose product overflows: huge rewards or weights
        raise SchemaError(
            f"{name} overflows: term {int(bad[0])} is "
            f"{terms[bad[0]].item()!r} "
            "(rewards or importance weights too large for float64)"
        )
    terms.setflags(write=False)  # the dataclass is frozen; keep its array so too
    return OPEEstimate(value=float(terms.mean()), terms=terms, name=name)


# --------------------------------------------------------------------------- bandit
# estimators


def ips(rewards: object, target_prob: object, behaviour_prob: object) -> OPEEstimate:
    """Inverse propensity scoring: ``mean(w_i r_i)``, unbiased when ``mu > 0``
    wherever ``pi > 0``."""
    r, w = _weights(rewards, target_prob, behaviour_prob)
    return _estimate(w * r, "IPS")


def snips(rewards: object, target_prob: object, behaviour_prob: object) -> OPEEstimate:
    """Self-normalised IPS: ``sum(w r) / sum(w)``; terms are ``w_i r_i / mean(w)``.

    Biased (consistent) but with far less variance than IPS when weights are large.
    Raises :class:`SchemaError` if every weight is zero (the target never takes a logged
    action).
    """
    r, w = _weights(rewards, target_prob, behaviour_prob)
    mean_w = w.mean()
    if mean_w == 0.0:
        raise SchemaError("SNIPS undefined: target_prob is zero on every logged action")
    return _estimate(w * r / mean_w, "SNIPS")


def direct_method(predicted_value_under_target: object) -> OPEEstimate:
    """Direct method: the mean of a model's predicted value of the target policy per
    context, ``v_hat(x_i) = sum_a pi(a|x_i) q_hat(x_i, a)``. As good as the model, no
    better."""
    v = _as_1d("predicted_value_under_target", predicted_value_under_target)
    return _estimate(v, "DM")


def doubly_robust(
    rewards: object,
    target_prob: object,
    behaviour_prob: object,
    q_hat_logged_action: object,
    v_hat_target: object,
) -> OPEEstimate:
    """Doubly robust: ``mean(v_hat(x_i) + w_i (r_i - q_hat(x_i, a_i)))``.

    Unbiased if either the propensities or the reward model are right.
    """
    r, w = _weights(rewards, target_prob, behaviour_prob)
    q = _as_1d("q_hat_logged_action", q_hat_logged_action, r.shape[0])
    v = _as_1d("v_hat_target", v_hat_target, r.shape[0])
    return _estimate(v + w * (r - q), "DR")


# --------------------------------------------------------------------------- trajectory
# estimators


def _check_episode_ids(values: object, ids: np.ndarray, n: int) -> None:
    """Episode ids are all integers or all strings (finite floats pass): no NaN, no
    bools, no mix that numpy would silently turn into strings (``0`` into ``'0'``)."""
    if (
        ids.dtype.kind in "US"
        and not isinstance(values, np.ndarray)
        and not all(
            isinstance(i, str) for i in np.asarray(values, dtype=object).ravel()
        )
    ):
        raise SchemaError(
            "episode_ids mixes strings with numbers; numpy would turn 0 into '0'"
        )
    if ids.dtype.kind == "f":
        # NaN ids would merge or split episodes
        check_array("episode_ids", ids, shape=(n,))
    elif ids.dtype.kind not in "iuUSO" or (
        ids.dtype.kind == "O"
        and not all(
            isinstance(i, (str, int, np.integer)) and not isinstance(i, bool)
            for i in ids
        )
    ):
        raise SchemaError(
            f"episode_ids must be integers or strings, got dtype {ids.dtype}"
        )


@dataclass(frozen=True)
class _Episodes:
    """Logged episodes as a dense (episodes x horizon) grid, padded after each
    episode's end."""

    rewards: np.ndarray  # (E, H), 0 after the end
    # (E, H) cumulative product of w; carried forward after the end
    cum_weights: np.ndarray
    discounts: np.ndarray  # (H,)
    lengths: np.ndarray  # (E,)


def _episodes(
    episode_ids: object,
    steps: object,
    rewards: object,
    target_prob: object,
    behaviour_prob: object,
    gamma: float,
) -> _Episodes:
    r, w = _weights(rewards, target_prob, behaviour_prob)
    n = r.shape[0]
    ids = np.asarray(episode_ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise SchemaError(
            f"episode_ids must be 1-D with {n} rows, got shape {ids.shape}"
        )
    st = np.asarray(steps)
    if st.ndim != 1 or st.shape[0] != n:
        raise SchemaError(f"steps must be 1-D with {n} rows, got shape {st.shape}")
    if not np.issubdtype(st.dtype, np.integer):
        raise SchemaError(
            "steps must be integers (0, 1, 2, ... within an episode), "
            f"got dtype {st.dtype}"
        )
    gamma = check_scalar(
        "gamma", gamma, low=0.0, high=1.0, low_open=True, error=SchemaError
    )
    _check_episode_ids(episode_ids, ids, n)
    try:
        _, episode_index = np.unique(ids, return_inverse=True)
    except TypeError as exc:  # e.g. strings mixed with integers
        raise SchemaError(
            f"episode_ids must be all integers or all strings: {exc}"
        ) from exc
    order = np.lexsort((st, episode_index))
    e_sorted, s_sorted = episode_index[order], st[order]
    n_episodes = int(episode_index.max()) + 1
    lengths = np.bincount(e_sorted, minlength=n_episodes)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    expected_step = np.arange(n) - np.repeat(starts, lengths)
    bad = np.flatnonzero(s_sorted != expected_step)
    if bad.size:
        row = int(order[bad[0]])
        raise SchemaError(
            f"episode {ids[row].item()!r}: steps must run 0, 1, 2, ... without gaps or "
            "repeats; "
            f"row {row} has step {st[row].item()!r}, expected "
            f"{int(expected_step[bad[0]])}"
        )
    horizon = int(lengths.max())
    grid_r = np.zeros((n_episodes, horizon))
    # weight 1 after the end: the product carries forward
    grid_w = np.ones((n_episodes, horizon))
    grid_r[e_sorted, s_sorted] = r[order]
    grid_w[e_sorted, s_sorted] = w[order]
    discounts = float(gamma) ** np.arange(horizon)
    return _Episodes(grid_r, np.cumprod(grid_w, axis=1), discounts, lengths)


def trajectory_is(
    episode_ids: object,
    steps: object,
    rewards: object,
    target_prob: object,
    behaviour_prob: object,
    gamma: float = 1.0,
) -> OPEEstimate:
    """Trajectory-wise importance sampling: ``mean_i( prod_t w_it * sum_t gamma^t r_it
    )``.

    One term per episode (in sorted order of ``episode_ids``). Unbiased, high variance.
    """
    ep = _episodes(episode_ids, steps, rewards, target_prob, behaviour_prob, gamma)
    returns = ep.rewards @ ep.discounts
    return _estimate(ep.cum_weights[:, -1] * returns, "IS")


def trajectory_wis(
    episode_ids: object,
    steps: object,
    rewards: object,
    target_prob: object,
    behaviour_prob: object,
    gamma: float = 1.0,
) -> OPEEstimate:
    """Weighted (self-normalised) trajectory IS: ``sum_i rho_i G_i / sum_i rho_i``.

    Terms are ``rho_i G_i / mean(rho)``. Biased, consistent, much lower variance than
    IS.
    """
    ep = _episodes(episode_ids, steps, rewards, target_prob, behaviour_prob, gamma)
    rho = ep.cum_weights[:, -1]
    if rho.mean() == 0.0:
        raise SchemaError("WIS undefined: every episode has importance weight zero")
    return _estimate(rho * (ep.rewards @ ep.discounts) / rho.mean(), "WIS")


def per_decision_is(
    episode_ids: object,
    steps: object,
    rewards: object,
    target_prob: object,
    behaviour_prob: object,
    gamma: float = 1.0,
) -> OPEEstimate:
    """Per-decision (step-wise) IS: ``mean_i sum_t gamma^t rho_{i,0:t} r_it``.

    A reward is weighted only by the decisions that preceded it; unbiased, lower
    variance than IS.
    """
    ep = _episodes(episode_ids, steps, rewards, target_prob, behaviour_prob, gamma)
    return _estimate((ep.cum_weights * ep.rewards) @ ep.discounts, "PDIS")


def weighted_per_decision_is(
    episode_ids: object,
    steps: object,
    rewards: object,
    target_prob: object,
    behaviour_prob: object,
    gamma: float = 1.0,
) -> OPEEstimate:
    """Weighted per-decision IS: ``sum_t gamma^t sum_i rho_{i,0:t} r_it / sum_i
    rho_{i,0:t}``.

    Episodes shorter than the longest are treated as absorbing after their end (reward
    0, weight carried forward), so every step normalises over all episodes. Terms are
    ``sum_t gamma^t rho_it r_it / mean_j(rho_jt)``.
    """
    ep = _episodes(episode_ids, steps, rewards, target_prob, behaviour_prob, gamma)
    mean_w = ep.cum_weights.mean(axis=0)
    zero = np.flatnonzero(mean_w == 0.0)
    if zero.size:
        raise SchemaError(
            "WPDIS undefined: every episode has cumulative weight zero "
            f"at step {int(zero[0])}"
        )
    return _estimate((ep.cum_weights * ep.rewards / mean_w) @ ep.discounts, "WPDIS")


#: The trajectory estimators by name, for loops in chapters.
TRAJECTORY_ESTIMATORS = {
    "IS": trajectory_is,
    "WIS": trajectory_wis,
    "PDIS": per_decision_is,
    "WPDIS": weighted_per_decision_is,
}


def effective_sample_size(weights: object) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of importance weights.

    ``weights`` must be a non-empty 1-D array of finite, non-negative numbers (NaN or a
    negative weight is a :class:`SchemaError`, not an ESS of 0). All-zero weights give
    0.0: the target policy puts no mass on any logged action. Computed on ``w /
    max(w)``, so huge weights do not overflow.
    """
    w = check_weights("weights", weights)
    top = float(w.max())
    if top == 0.0:
        return 0.0
    scaled = w / top
    return float(scaled.sum() ** 2 / (scaled**2).sum())


# --------------------------------------------------------------------------- bootstrap
# intervals


def percentile_interval(draws: object, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap draws (NaN draws
    ignored)."""
    draws = np.asarray(draws, dtype=np.float64)
    if not 0.0 < level < 1.0:
        raise SchemaError(f"confidence level must be in (0, 1), got {level!r}")
    lo, hi = np.nanpercentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _bootstrap_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 2:
        raise SchemaError(f"n_boot must be at least 2, got {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def bootstrap_mean_interval(
    terms: object, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(terms)`` (one term per episode or per
    decision).

    Resamples the terms only: a model that produced them (DM, FQE) is held fixed, so the
    interval ignores the model's own estimation error.
    """
    t = _as_1d("terms", terms)
    counts = _bootstrap_counts(t.shape[0], n_boot, seed)
    return percentile_interval(counts @ t / t.shape[0], level)


def bootstrap_trajectory_intervals(
    episode_ids: object,
    steps: object,
    rewards: object,
    target_prob: object,
    behaviour_prob: object,
    gamma: float = 1.0,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals over *episodes* for IS, WIS, PDIS and WPDIS.

    Each bootstrap draw resamples whole episodes with replacement and recomputes every
    estimator, self-normalisation included (so WIS and WPDIS intervals carry the
    variance of their denominators, which the per-term ``OPEEstimate.ci`` omits).
    """
    ep = _episodes(episode_ids, steps, rewards, target_prob, behaviour_prob, gamma)
    n_episodes = ep.rewards.shape[0]
    counts = _bootstrap_counts(n_episodes, n_boot, seed)
    returns = ep.rewards @ ep.discounts
    rho = ep.cum_weights[:, -1]
    weighted = ep.cum_weights * ep.rewards * ep.discounts  # (E, H)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = {
            "IS": counts @ (rho * returns) / n_episodes,
            "WIS": (counts @ (rho * returns)) / (counts @ rho),
            "PDIS": counts @ weighted.sum(axis=1) / n_episodes,
            "WPDIS": ((counts @ weighted) / (counts @ ep.cum_weights)).sum(axis=1),
        }
    return {name: percentile_interval(d, level) for name, d in draws.items()}
