"""What the logged data can resolve at λ = 0, and a convergence check built on it.

At λ = 0 spend is free and retention rises with the coupon in every state of the
simulator, so the best policy gives the largest coupon the BCQ filter allows (the
*ceiling*). But the lift ``1 - exp(-v / v_scale)`` is flat at the top: the large coupons
differ in next-day return probability by less than the noise of 0/1 returns at the
size of a logged dataset. A learner cannot be asked to rank what its data cannot rank.

:func:`data_resolution` measures that, per user type and pair of coupons:

* the **exact gap**: the simulator's mean next-day return probability of coupon ``hi``
  minus that of coupon ``lo``, over the logged states of the type
  (:func:`exact_next_day_table`, which reads the hidden base probabilities);
* the **resolution**: the standard error of the same difference as estimated from the
  logged data (the difference of the two coupons' next-day return rates within the
  type, pooled over every day and history). The logging policy's choice depends on the
  type only, so that difference estimates the exact gap without bias; pooling over
  days is the most generous reading of the data -- a learner that conditions on the
  day and the history has fewer transitions per state;
* the **top set** of a ceiling ``c``: ``c`` and the coupons below it, down to the first
  one whose exact gap to ``c`` exceeds ``n_se`` standard errors -- the coupons the data
  cannot tell from the ceiling.

:func:`lambda_zero_check` then states the λ = 0 check in terms a reader can verify: the
λ = 0 policy's coupons lie in the top set of their state (a share of its decisions),
and its retention is below the ceiling policy's by no more than what the top set allows
(the exact per-user-day loss of the top set's smallest coupon, from
:func:`pulse_lib.coupons.simulator.exact_retention_table`) plus ``n_se`` standard
errors of the measured difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pulse_lib.coupons.dataset import CouponDataset
from pulse_lib.coupons.simulator import (
    N_ACTIONS,
    CouponSimConfig,
    Episodes,
    return_probability,
)
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.validation import check_array

#: Number of user types (the state's second number is the type, 0, 1 or 2).
N_TYPES: int = 3


def exact_next_day_probabilities(
    config: CouponSimConfig, episodes: Episodes, actions: np.ndarray | None = None
) -> np.ndarray:
    """``(M,)``: the exact probability that each logged user returns the next day, had
    it been given coupon ``actions`` (default: the logged coupon).

    Uses the hidden base probabilities ``episodes.p0`` (analysis only) and each state's
    own return rate so far (returns counted in the state, divided by the day). With the
    logged coupons, these are the expected values of the logged 0/1 rewards.
    """
    if len(episodes) == 0:
        raise SchemaError("the episodes are empty")
    obs = episodes.observations
    actions = episodes.actions if actions is None else np.asarray(actions)
    if actions.shape != (len(episodes),):
        raise SchemaError(
            f"actions must have shape ({len(episodes)},), got {actions.shape}"
        )
    if actions.min() < 0 or actions.max() >= N_ACTIONS:
        raise SchemaError(f"actions must lie in 0..{N_ACTIONS - 1}")
    day = obs[:, 0].astype(np.float64)
    n_returned = obs[:, 2 + N_ACTIONS :].sum(axis=1, dtype=np.float64)
    past = n_returned / np.maximum(day, 1.0)
    types = episodes.user_type.astype(int)
    later = return_probability(config, episodes.p0, types, past, actions)
    at_zero = return_probability(config, episodes.p0, types, None, actions)
    return np.where(day == 0, at_zero, later)


def exact_next_day_table(config: CouponSimConfig, episodes: Episodes) -> np.ndarray:
    """``(3, 21)``: exact mean next-day return probability of each coupon over the
    logged states of each user type (:func:`exact_next_day_probabilities` with every
    coupon in turn). A type with no logged state gets NaN.
    """
    if len(episodes) == 0:
        raise SchemaError("the episodes are empty")
    types = episodes.user_type.astype(int)
    table = np.full((N_TYPES, N_ACTIONS), np.nan)
    for a in range(N_ACTIONS):
        probs = exact_next_day_probabilities(
            config, episodes, np.full(len(episodes), a)
        )
        for k in range(N_TYPES):
            if np.any(types == k):
                table[k, a] = float(probs[types == k].mean())
    return table


@dataclass(frozen=True)
class Resolution:
    """What a logged dataset can tell apart at λ = 0, per user type and coupon pair.

    ``gap[k, hi, lo]`` is the exact next-day gap, ``se[k, hi, lo]`` the standard error
    of its estimate from the data (``inf`` where a coupon was never logged for the
    type), ``bottom[k, c]`` the smallest coupon of the top set of ceiling ``c`` and
    ``loss[k, c]`` the exact per-user-day retention lost by giving that coupon instead
    of ``c`` all month.
    """

    counts: np.ndarray  # (3, 21) logged transitions per type and coupon
    rates: np.ndarray  # (3, 21) logged next-day return rate (NaN: never logged)
    next_day: np.ndarray  # (3, 21) exact mean next-day return probability
    retention: np.ndarray  # (3, 21) exact per-user-day retention, constant coupon
    gap: np.ndarray  # (3, 21, 21) next_day[k, hi] - next_day[k, lo]
    se: np.ndarray  # (3, 21, 21) SE of the logged estimate of gap
    bottom: np.ndarray  # (3, 21) int: lowest coupon of the top set of each ceiling
    loss: np.ndarray  # (3, 21) retention[k, c] - retention[k, bottom[k, c]]
    n_se: float

    def top_set(self, user_type: int, ceiling: int) -> np.ndarray:
        """Coupon indices the data cannot tell from ``ceiling`` for this type."""
        _check_index("user_type", user_type, N_TYPES)
        _check_index("ceiling", ceiling, N_ACTIONS)
        return np.arange(self.bottom[user_type, ceiling], ceiling + 1)

    def in_top_set(
        self, user_types: np.ndarray, ceilings: np.ndarray, actions: np.ndarray
    ) -> np.ndarray:
        """For each decision, whether its coupon lies in the top set of its state's
        ceiling (a coupon above the ceiling is refused: the filter allows none)."""
        types, ceil, act = _decisions(user_types, ceilings, actions)
        if np.any(act > ceil):
            row = int(np.flatnonzero(act > ceil)[0])
            raise SchemaError(
                f"decision {row} gives coupon {act[row]} above its ceiling "
                f"{ceil[row]}: the ceiling is the largest coupon allowed"
            )
        return act >= self.bottom[types, ceil]


def data_resolution(
    dataset: CouponDataset,
    next_day: np.ndarray,
    retention: np.ndarray,
    n_se: float = 2.0,
) -> Resolution:
    """The resolution of a logged dataset at λ = 0 (see the module docstring).

    ``next_day``: :func:`exact_next_day_table` of the same data; ``retention``:
    :func:`pulse_lib.coupons.simulator.exact_retention_table`. The standard error of a
    rate uses ``(x + 1) / (n + 2)`` for the 0/1 variance, so a coupon whose few logged
    returns are all 0 or all 1 does not get a standard error of zero.
    """
    if not np.isfinite(n_se) or n_se <= 0:
        raise ConfigError(f"n_se must be a positive number, got {n_se}")
    if len(dataset) == 0:
        raise SchemaError("the dataset is empty")
    next_day = check_array(
        "next_day", next_day, shape=(N_TYPES, N_ACTIONS), low=0.0, high=1.0
    )
    retention = check_array(
        "retention", retention, shape=(N_TYPES, N_ACTIONS), low=0.0, high=1.0
    )
    types = dataset.observations[:, 1]
    if not np.all(np.isin(types, np.arange(N_TYPES))):
        raise SchemaError("the state's user type (second number) must be 0, 1 or 2")
    types = types.astype(int)
    cell = types * N_ACTIONS + dataset.actions
    size = N_TYPES * N_ACTIONS
    counts = np.bincount(cell, minlength=size).reshape(N_TYPES, N_ACTIONS)
    returns = np.bincount(cell, weights=dataset.rewards, minlength=size).reshape(
        N_TYPES, N_ACTIONS
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(counts > 0, returns / np.maximum(counts, 1), np.nan)
        shrunk = (returns + 1) / (counts + 2)
        var = np.where(counts > 0, shrunk * (1 - shrunk) / counts, np.inf)
    gap = next_day[:, :, None] - next_day[:, None, :]
    se = np.sqrt(var[:, :, None] + var[:, None, :])
    resolved = gap > n_se * se  # (k, hi, lo): the data tells lo from hi
    bottom = np.zeros((N_TYPES, N_ACTIONS), dtype=np.int64)
    for k in range(N_TYPES):
        for c in range(N_ACTIONS):
            below = np.flatnonzero(resolved[k, c, : c + 1])
            bottom[k, c] = 0 if below.size == 0 else int(below.max()) + 1
    rows = np.arange(N_TYPES)[:, None]
    loss = retention - retention[rows, bottom]
    return Resolution(
        counts=counts,
        rates=rates,
        next_day=next_day,
        retention=retention,
        gap=gap,
        se=se,
        bottom=bottom,
        loss=loss,
        n_se=float(n_se),
    )


@dataclass(frozen=True)
class LambdaZeroCheck:
    """The λ = 0 check of one policy: two conditions, both must hold."""

    share_of_ceiling: float  # mean coupon value / mean ceiling value (the old number)
    top_set_share: float  # share of decisions whose coupon is in the top set
    retention_gap: float  # ceiling policy's retention minus the policy's
    retention_gap_se: float  # standard error of that difference
    tolerance: float  # exact retention the top set may lose (mean over decisions)
    min_top_set_share: float
    n_se: float

    @property
    def holds_top_set(self) -> bool:
        """At least ``min_top_set_share`` of the decisions lie in the top set."""
        return self.top_set_share >= self.min_top_set_share

    @property
    def holds_retention(self) -> bool:
        """The retention gap is within the tolerance plus ``n_se`` standard errors."""
        return self.retention_gap <= self.tolerance + self.n_se * self.retention_gap_se

    @property
    def holds(self) -> bool:
        """Both conditions."""
        return self.holds_top_set and self.holds_retention


def lambda_zero_check(
    resolution: Resolution,
    user_types: np.ndarray,
    ceilings: np.ndarray,
    actions: np.ndarray,
    values: np.ndarray,
    retention_gap: float,
    retention_gap_se: float,
    min_top_set_share: float = 0.9,
) -> LambdaZeroCheck:
    """Check a λ = 0 policy on the decisions it made on its own trajectories.

    ``user_types``, ``ceilings`` and ``actions`` (one per decision): the state's type,
    the largest coupon the BCQ filter allows there, and the coupon the policy gave;
    ``values``: the 21 coupon values. ``retention_gap`` and ``retention_gap_se``: the
    ceiling policy's retention minus this policy's, measured in the simulator, and its
    standard error. The tolerance is the mean over decisions of the exact
    per-user-day loss of the top set's smallest coupon at that decision's ceiling.
    """
    if not 0 < min_top_set_share <= 1:
        raise ConfigError(
            f"min_top_set_share must lie in (0, 1], got {min_top_set_share}"
        )
    if not np.isfinite(retention_gap):
        raise SchemaError(f"retention_gap must be finite, got {retention_gap}")
    if not np.isfinite(retention_gap_se) or retention_gap_se < 0:
        raise SchemaError(
            f"retention_gap_se must be finite and >= 0, got {retention_gap_se}"
        )
    values = check_array("values", values, shape=(N_ACTIONS,), low=0.0)
    types, ceil, act = _decisions(user_types, ceilings, actions)
    inside = resolution.in_top_set(types, ceil, act)
    return LambdaZeroCheck(
        share_of_ceiling=float(values[act].mean() / values[ceil].mean()),
        top_set_share=float(inside.mean()),
        retention_gap=float(retention_gap),
        retention_gap_se=float(retention_gap_se),
        tolerance=float(resolution.loss[types, ceil].mean()),
        min_top_set_share=float(min_top_set_share),
        n_se=resolution.n_se,
    )


def _check_index(name: str, value: int, size: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SchemaError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value < size:
        raise SchemaError(f"{name} must lie in 0..{size - 1}, got {value}")


def _decisions(
    user_types: np.ndarray, ceilings: np.ndarray, actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three 1-D integer arrays of one length, in range; else a ``SchemaError``."""
    out = []
    for name, arr, size in (
        ("user_types", user_types, N_TYPES),
        ("ceilings", ceilings, N_ACTIONS),
        ("actions", actions, N_ACTIONS),
    ):
        arr = np.asarray(arr)
        if arr.ndim != 1 or arr.size == 0:
            raise SchemaError(f"{name} must be a non-empty 1-D array, got {arr.shape}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise SchemaError(f"{name} has NaN or inf")
        if arr.dtype.kind not in "iuf" or np.any(arr != np.round(arr)):
            raise SchemaError(f"{name} must hold whole numbers")
        if arr.min() < 0 or arr.max() >= size:
            raise SchemaError(
                f"{name} must lie in 0..{size - 1}, found {arr.min()}..{arr.max()}"
            )
        out.append(arr.astype(np.int64))
    if not out[0].shape == out[1].shape == out[2].shape:
        raise SchemaError(
            "user_types, ceilings and actions must have one length, got "
            f"{out[0].size}, {out[1].size}, {out[2].size}"
        )
    return out[0], out[1], out[2]
