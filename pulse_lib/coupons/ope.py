"""Off-policy estimates for 30-day coupon episodes (what :mod:`pulse_lib.ope` does not
cover).

:mod:`pulse_lib.ope` has the importance-sampling estimators on flat arrays; here are the
pieces specific to coupon episodes: reshaping a dataset into (users, days) matrices, the
target policy's probability of each logged action, and the sequential doubly robust
estimator of Jiang & Li (2016) that combines per-decision importance weights with an
evaluator's Q-values (FQE or REME). All values are per user-day (the episode total
divided by the horizon).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pulse_lib import ope
from pulse_lib.coupons.dataset import CouponDataset
from pulse_lib.errors import SchemaError
from pulse_lib.ope import OPEEstimate
from pulse_lib.validation import check_array, check_probabilities


@dataclass
class EpisodeView:
    """A dataset as ``(n_episodes, horizon)`` matrices (user-major rows, as the
    simulator writes them)."""

    rewards: np.ndarray
    costs: np.ndarray
    actions: np.ndarray
    behaviour_prob: np.ndarray
    episode_ids: np.ndarray  # flat, one per transition
    steps: np.ndarray  # flat day index, one per transition

    @property
    def shape(self) -> tuple[int, int]:
        return self.rewards.shape


def episode_view(dataset: CouponDataset, horizon: int) -> EpisodeView:
    """Reshape a user-major dataset into episodes; needs propensities and whole,
    ordered episodes."""
    m = len(dataset)
    if horizon < 1 or m % horizon:
        raise SchemaError(f"{m} transitions are not whole episodes of {horizon} days")
    days = dataset.observations[:, 0].astype(int)
    expected = np.tile(np.arange(horizon), m // horizon)
    if not np.array_equal(days, expected):
        row = int(np.flatnonzero(days != expected)[0])
        raise SchemaError(
            f"row {row} is day {days[row]}, expected day "
            f"{expected[row]}: episodes must be "
            f"contiguous and ordered by day"
        )
    props = dataset.require_propensities()
    shape = (m // horizon, horizon)
    return EpisodeView(
        dataset.rewards.reshape(shape).astype(float),
        dataset.costs.reshape(shape).astype(float),
        dataset.actions.reshape(shape),
        props.reshape(shape).astype(float),
        np.repeat(np.arange(m // horizon), horizon),
        expected,
    )


def target_probability(
    target_actions: np.ndarray,
    logged_actions: np.ndarray,
    epsilon: float = 0.0,
    n_actions: int = 21,
) -> np.ndarray:
    """π(logged action | s) for a greedy policy, optionally ε-smoothed: ``(1-ε)·1[a =
    π(s)] + ε / A``."""
    if target_actions.shape != logged_actions.shape:
        raise SchemaError(
            f"target actions {target_actions.shape} and logged actions "
            f"{logged_actions.shape} differ in shape"
        )
    if not 0 <= epsilon <= 1:
        raise SchemaError(f"epsilon must lie in [0, 1], got {epsilon}")
    return (1 - epsilon) * (target_actions == logged_actions) + epsilon / n_actions


def sequential_doubly_robust(
    rewards: np.ndarray,
    target_prob: np.ndarray,
    behaviour_prob: np.ndarray,
    q_logged: np.ndarray,
    v_target: np.ndarray,
) -> OPEEstimate:
    """Per-episode DR (Jiang & Li, 2016), undiscounted, divided by the horizon.

    ``DR = V̂(s_0) + Σ_t ρ_{0:t} (r_t - Q̂(s_t, a_t)) + Σ_{t≥1} ρ_{0:t-1} V̂(s_t)`` with
    ``ρ_{0:t}`` the cumulative importance weight; ``q_logged`` holds ``Q̂(s_t, a_t)``
    (the evaluator's value of the logged action, total over the remaining days) and
    ``v_target`` ``Q̂(s_t, π(s_t))``. All ``(E, H)``.
    """
    rewards = check_array("rewards", rewards, ndim=2)
    shape = rewards.shape
    target_prob, behaviour_prob = _probabilities(target_prob, behaviour_prob, shape)
    q_logged = check_array("q_logged", q_logged, shape=shape)
    v_target = check_array("v_target", v_target, shape=shape)
    rho = np.cumprod(target_prob / behaviour_prob, axis=1)
    rho_prev = np.concatenate([np.ones((shape[0], 1)), rho[:, :-1]], axis=1)
    terms = (rho_prev * v_target + rho * (rewards - q_logged)).sum(axis=1) / shape[1]
    return OPEEstimate(float(terms.mean()), terms, "DR")


def _probabilities(
    target_prob: np.ndarray,
    behaviour_prob: np.ndarray,
    shape: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Both ``(episodes, horizon)`` matrices checked: probabilities in [0, 1],
    propensities > 0."""
    pi = check_probabilities("target_prob", target_prob, ndim=2, shape=shape)
    mu = check_probabilities(
        "behaviour_prob", behaviour_prob, shape=pi.shape, strictly_positive=True
    )
    return pi, mu


def effective_sample_size(
    target_prob: np.ndarray, behaviour_prob: np.ndarray
) -> np.ndarray:
    """Kish's effective sample size of the cumulative weights at each day, ``(Σw)² /
    Σw²`` (0 if all w = 0).

    One value per day (column), each :func:`pulse_lib.ope.effective_sample_size` of that
    day's cumulative weights ``ρ_{0:t}``; the probabilities are range-checked as in
    :func:`sequential_doubly_robust`.
    """
    pi, mu = _probabilities(target_prob, behaviour_prob)
    w = np.cumprod(pi / mu, axis=1)
    return np.array([ope.effective_sample_size(w[:, t]) for t in range(w.shape[1])])
