"""Monitoring a deployed policy: daily action rates, reward, feature drift and the
off-policy estimate of a policy, as a tidy table, a figure and alerts.

Input: the service's decision log, one row per decision, with the columns

- ``day`` (any sortable value: a date or a day number),
- ``action`` (0 = wait, 1 = send) and ``action_prob``, the probability the *logging*
  (live, exploring) policy gave the logged action,
- ``reward``, observed for that decision,
- the 63 feature columns of the :class:`~pulse_lib.production.versioning.FeatureSchema`.

:func:`daily_report` turns it into a tidy DataFrame, one row per (day, metric,
feature):

- ``n_decisions``, ``send_rate`` and ``mean_reward`` per day;
- ``psi``: the **population stability index** of each feature against the training data
  (a :class:`DriftReference` fitted once on it). With reference proportions ``p_i`` and
  the day's ``q_i`` over the reference's bins, ``PSI = sum_i (q_i - p_i) ln(q_i /
  p_i)``. The usual reading, used as the default thresholds: below 0.1 no significant
  shift, 0.1-0.25 a moderate shift (warn), 0.25 or more a significant shift (alert).
  A reference pools all its rows unless it is fitted ``by`` a day column: then each
  day of the log is compared with the reference rows of the same day (of the training
  window), which is what features that change with the day by construction
  (recency, funnel progress of a cohort) need to stay quiet without drift;
- ``ope_ips`` and ``ope_snips`` (with a 95 % normal interval) and ``ess``: the
  off-policy estimate of the expected reward per decision of a target ``policy`` (the
  live agent's greedy policy while the service logs its exploring version, or a
  candidate about to replace it), from that day's decisions with
  :func:`pulse_lib.ope.ips` / :func:`pulse_lib.ope.snips`. This is the one-step value
  (the day's reward); the discounted value over many days needs whole episodes and the
  trajectory estimators of :mod:`pulse_lib.pulserl.evaluation`.

:func:`alerts` compares the report with :class:`Thresholds` and returns one row per
breach, with a message naming the day, the metric, the feature and the threshold.
:func:`plot_report` draws the report. Bad input (a missing column, NaN, an action other
than 0/1, a propensity outside (0, 1]) is a :class:`~pulse_lib.errors.SchemaError`
naming the column and the row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pulse_lib import ope
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.production.versioning import (
    DEFAULT_SCHEMA,
    FeatureSchema,
    VersionedAgent,
)
from pulse_lib.validation import check_fields

__all__ = [
    "PSI_ALERT",
    "PSI_FLOOR",
    "PSI_WARN",
    "REPORT_COLUMNS",
    "DriftReference",
    "Thresholds",
    "alerts",
    "check_decision_log",
    "daily_report",
    "plot_report",
    "psi",
]

#: PSI at or above which a feature's shift is moderate (a warning).
PSI_WARN: float = 0.1
#: PSI at or above which a feature's shift is significant (an alert).
PSI_ALERT: float = 0.25
#: Smallest proportion used in the PSI's logarithm: a bin empty on one side would
#: otherwise make the index infinite. Stated, not hidden: an empty bin contributes
#: ``(q - 1e-4) ln(q / 1e-4)``.
PSI_FLOOR: float = 1e-4

#: Columns of :func:`daily_report`'s table.
REPORT_COLUMNS: tuple[str, ...] = ("day", "metric", "feature", "value", "low", "high")

Policy = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- PSI


def psi(reference: Any, current: Any, floor: float = PSI_FLOOR) -> float:
    """Population stability index between two vectors of bin proportions (or counts:
    each is normalised to sum to 1).

    ``sum_i (q_i - p_i) ln(q_i / p_i)`` with ``p`` = reference, ``q`` = current, each
    proportion floored at ``floor`` inside the difference and the logarithm.
    """
    from pulse_lib.validation import check_array

    p = check_array("reference proportions", reference, ndim=1, low=0.0)
    q = check_array("current proportions", current, ndim=1, low=0.0)
    if p.shape != q.shape:
        raise SchemaError(
            f"reference has {p.shape[0]} bins, current has {q.shape[0]}: the same bins "
            "are needed"
        )
    if not 0.0 < floor < 1.0:
        raise ConfigError(f"floor must be in (0, 1), got {floor}")
    for name, arr in (("reference", p), ("current", q)):
        if arr.sum() <= 0:
            raise SchemaError(f"{name} proportions sum to 0: no observations")
    p = np.maximum(p / p.sum(), floor)
    q = np.maximum(q / q.sum(), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def _bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value: ``(-inf, e_0], (e_0, e_1], ..., (e_last, inf)``."""
    return np.searchsorted(edges, values, side="left")


def _fit_bins(
    values: np.ndarray, n_bins: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each column's bin edges (distinct quantiles) and reference proportions."""
    levels = np.arange(1, n_bins) / n_bins
    all_edges: list[np.ndarray] = []
    proportions: list[np.ndarray] = []
    for j in range(values.shape[1]):
        column = values[:, j]
        edges = np.unique(np.quantile(column, levels))
        counts = np.bincount(_bin_index(edges, column), minlength=edges.size + 1)
        all_edges.append(edges)
        proportions.append(counts / counts.sum())
    return all_edges, proportions


def _plain(key: Any) -> Any:
    """A day value as a plain Python scalar (numpy scalars and timestamps hash alike
    either way; this keeps the error messages readable)."""
    if isinstance(key, np.datetime64):
        return pd.Timestamp(key)
    return key.item() if isinstance(key, np.generic) else key


class DriftReference:
    """Per-feature bins and proportions of the training data, for PSI.

    Each feature's bin edges are the distinct values among its reference quantiles at
    ``1/n_bins, ..., (n_bins-1)/n_bins`` (right-closed bins plus one above the last
    edge). A binary or one-hot feature thus gets one bin per value, and a constant
    feature two bins (at the value, and above it).

    ``by``: a column of ``reference`` holding the day (of the training window) of each
    row. The bins are then also fitted on each day's rows alone, and
    :func:`daily_report` compares each day of a log with the reference day of the
    same value (:meth:`for_day`); a log day the reference lacks is a SchemaError.
    Without ``by`` every day is compared with all reference rows pooled.
    """

    def __init__(
        self,
        reference: pd.DataFrame,
        schema: FeatureSchema = DEFAULT_SCHEMA,
        n_bins: int = 10,
        by: str | None = None,
    ) -> None:
        from pulse_lib.validation import check_integer

        self.n_bins = check_integer("n_bins", n_bins, low=2, high=1000)
        self.schema = schema
        self.by = by
        values = _feature_matrix(reference, schema, "reference")
        self.edges, self.proportions = _fit_bins(values, self.n_bins)
        self.n_rows = values.shape[0]
        #: the reference of each day (``by`` given), else None
        self.days: dict[Any, DriftReference] | None = None
        if by is not None:
            if not isinstance(by, str) or by not in reference.columns:
                raise SchemaError(f"reference has no day column {by!r} (by=)")
            keys = reference[by]
            if keys.isna().any():
                row = reference.index[np.flatnonzero(keys.isna().to_numpy())[0]]
                raise SchemaError(
                    f"reference: day column {by!r} is missing at row {row!r}"
                )
            codes, uniques = pd.factorize(keys, sort=True)
            self.days = {}
            for code, key in enumerate(uniques):
                day = self._bare(schema, self.n_bins)
                rows = values[codes == code]
                day.edges, day.proportions = _fit_bins(rows, self.n_bins)
                day.n_rows = rows.shape[0]
                self.days[_plain(key)] = day

    @classmethod
    def _bare(cls, schema: FeatureSchema, n_bins: int) -> DriftReference:
        day = cls.__new__(cls)
        day.schema, day.n_bins, day.by, day.days = schema, n_bins, None, None
        return day

    def for_day(self, day: Any) -> DriftReference:
        """The reference to compare day ``day`` of a log with: that day's (when fitted
        ``by`` a day column), else this pooled one."""
        if self.days is None:
            return self
        try:
            return self.days[_plain(day)]
        except (KeyError, TypeError):
            known = list(self.days)
            raise SchemaError(
                f"the drift reference has no rows for day {_plain(day)!r} (its "
                f"{self.by!r} runs over {len(known)} values, {known[0]!r} to "
                f"{known[-1]!r}): fit it on a window that covers the log's days, or "
                "without by="
            ) from None

    def psi(self, current: pd.DataFrame) -> pd.Series:
        """PSI of every feature of ``current`` against the reference (a Series indexed
        by feature name)."""
        values = _feature_matrix(current, self.schema, "current")
        return pd.Series(
            [self._psi_column(j, values[:, j]) for j in range(self.schema.width)],
            index=list(self.schema.names),
            name="psi",
        )

    def _psi_column(self, j: int, column: np.ndarray) -> float:
        edges = self.edges[j]
        counts = np.bincount(_bin_index(edges, column), minlength=edges.size + 1)
        return psi(self.proportions[j], counts)


# --------------------------------------------------------------------------- checks


def _feature_matrix(
    frame: pd.DataFrame, schema: FeatureSchema, what: str
) -> np.ndarray:
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(
            f"{what} must be a pandas DataFrame, got {type(frame).__name__}"
        )
    if len(frame) == 0:
        raise SchemaError(f"{what} has no rows")
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise SchemaError(
            f"{what} lacks {len(missing)} feature column(s): {missing[:5]}"
        )
    try:
        values = frame[list(schema.names)].to_numpy(np.float64)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{what}: feature columns must be numeric ({exc})") from exc
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise SchemaError(
            f"{what}: column {schema.names[j]!r} has a non-finite value at row "
            f"{frame.index[i]!r} ({values[i, j]}; {int(bad.sum())} such values)"
        )
    return values


def check_decision_log(
    log: pd.DataFrame, schema: FeatureSchema = DEFAULT_SCHEMA
) -> np.ndarray:
    """Check a decision log's columns and values; return its feature matrix.

    Needs ``day``, ``action`` (0 or 1), ``action_prob`` (in (0, 1]), ``reward``
    (finite) and the schema's features (finite). Errors name the column and row.
    """
    if not isinstance(log, pd.DataFrame):
        raise SchemaError(
            f"the decision log must be a DataFrame, got {type(log).__name__}"
        )
    needed = ("day", "action", "action_prob", "reward")
    missing = [c for c in needed if c not in log.columns]
    if missing:
        raise SchemaError(f"the decision log lacks column(s) {missing}")
    if log["day"].isna().any():
        row = log.index[np.flatnonzero(log["day"].isna().to_numpy())[0]]
        raise SchemaError(f"the decision log: column 'day' is missing at row {row!r}")
    for column, rule, ok in (
        ("action", "0 or 1", lambda v: np.isin(v, (0, 1))),
        ("action_prob", "in (0, 1]", lambda v: (v > 0) & (v <= 1)),
        ("reward", "finite", np.isfinite),
    ):
        try:
            values = log[column].to_numpy(np.float64)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"column {column!r} must be numeric ({exc})") from exc
        bad = ~ok(values) | np.isnan(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SchemaError(
                f"the decision log: column {column!r} must be {rule}; row "
                f"{log.index[i]!r} is {values[i]} ({int(bad.sum())} such rows)"
            )
    return _feature_matrix(log, schema, "the decision log")


# --------------------------------------------------------------------------- report


def _policy_function(policy: Policy | VersionedAgent, schema: FeatureSchema) -> Policy:
    if isinstance(policy, VersionedAgent):
        agent = policy
        agent.check_schema(schema)  # refuses a log of other features

        def greedy(obs: np.ndarray) -> np.ndarray:
            q = agent.q_values(obs, schema)
            return (q[:, 1] > q[:, 0]).astype(float)

        return greedy
    if not callable(policy):
        raise ConfigError(
            f"policy must be a VersionedAgent or a function obs -> P(send), got "
            f"{type(policy).__name__}"
        )
    return policy


def daily_report(
    log: pd.DataFrame,
    reference: DriftReference | pd.DataFrame,
    policy: Policy | VersionedAgent | None = None,
    schema: FeatureSchema = DEFAULT_SCHEMA,
    level: float = 0.95,
) -> pd.DataFrame:
    """The tidy daily table: columns :data:`REPORT_COLUMNS`.

    ``reference``: a :class:`DriftReference`, or the training DataFrame to fit one on
    (pooled). A reference fitted ``by`` a day column compares each day of the log with
    its own day (:meth:`DriftReference.for_day`).
    ``policy``: the policy to estimate off-policy (a function ``obs -> P(send)`` or a
    :class:`VersionedAgent`, whose greedy policy is used); ``None`` skips the OPE rows.
    ``feature`` is empty except on ``psi`` rows; ``low``/``high`` are the OPE interval
    (NaN elsewhere).
    """
    values = check_decision_log(log, schema)
    if not isinstance(reference, DriftReference):
        reference = DriftReference(reference, schema)
    elif reference.schema.difference(schema) is not None:
        raise SchemaError(
            "the drift reference has another feature schema: "
            f"{reference.schema.difference(schema)}"
        )
    target = None if policy is None else _policy_function(policy, schema)
    action = log["action"].to_numpy(np.int64)
    prob = log["action_prob"].to_numpy(np.float64)
    reward = log["reward"].to_numpy(np.float64)
    p_send = None
    if target is not None:
        p_send = np.asarray(target(values), dtype=np.float64)
        if p_send.shape != (len(log),) or not np.all((p_send >= 0) & (p_send <= 1)):
            raise SchemaError(
                "policy must return one probability in [0, 1] per row; got shape "
                f"{p_send.shape}"
            )
    rows: list[tuple[Any, str, str, float, float, float]] = []
    nan = float("nan")
    days = log["day"].to_numpy()
    for day in sorted(pd.unique(days)):
        idx = np.flatnonzero(days == day)
        rows += [
            (day, "n_decisions", "", float(idx.size), nan, nan),
            (day, "send_rate", "", float(action[idx].mean()), nan, nan),
            (day, "mean_reward", "", float(reward[idx].mean()), nan, nan),
        ]
        day_reference = reference.for_day(day)
        drift = [
            day_reference._psi_column(j, values[idx, j]) for j in range(schema.width)
        ]
        rows += [(day, "psi", n, v, nan, nan) for n, v in zip(schema.names, drift)]
        if p_send is not None:
            pi = np.where(action[idx] == 1, p_send[idx], 1.0 - p_send[idx])
            weights = pi / prob[idx]
            rows.append((day, "ess", "", ope.effective_sample_size(weights), nan, nan))
            for name, estimator in (("ope_ips", ope.ips), ("ope_snips", ope.snips)):
                try:
                    est = estimator(reward[idx], pi, prob[idx])
                except SchemaError:  # SNIPS with every weight zero: no estimate
                    rows.append((day, name, "", nan, nan, nan))
                    continue
                low, high = est.ci(level) if est.n > 1 else (nan, nan)
                rows.append((day, name, "", est.value, low, high))
    return pd.DataFrame(rows, columns=list(REPORT_COLUMNS))


# --------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Thresholds:
    """When :func:`alerts` speaks. ``None`` switches a check off."""

    psi_warn: float = PSI_WARN  #: PSI at or above which a feature is a warning
    psi_alert: float = PSI_ALERT  #: PSI at or above which a feature is an alert
    send_rate_low: float | None = None  #: alert below this daily send rate
    send_rate_high: float | None = None  #: alert above this daily send rate
    min_mean_reward: float | None = None  #: alert when a day's mean reward is lower
    #: alert when the OPE interval's upper end (SNIPS) is below this value
    min_ope_value: float | None = None
    min_decisions: int = 1  #: warn on a day with fewer decisions (estimates unsteady)
    min_ess: float | None = None  #: warn when the OPE's effective sample size is lower

    def __post_init__(self) -> None:
        optional = (
            "send_rate_low",
            "send_rate_high",
            "min_mean_reward",
            "min_ope_value",
            "min_ess",
        )
        check_fields(
            self,
            integer=("min_decisions",),
            non_negative=("psi_warn", "psi_alert", "min_decisions", "min_ess"),
            finite=("psi_warn", "psi_alert", *optional),
            probability=("send_rate_low", "send_rate_high"),
            optional=optional,
        )
        if self.psi_alert < self.psi_warn:
            raise ConfigError(
                f"psi_alert ({self.psi_alert}) must be >= psi_warn ({self.psi_warn})"
            )


def alerts(report: pd.DataFrame, thresholds: Thresholds | None = None) -> pd.DataFrame:
    """One row per breach: ``day, level ('warn'|'alert'), metric, feature, value,
    threshold, message``; empty (same columns) when all is well."""
    t = thresholds or Thresholds()
    missing = [c for c in REPORT_COLUMNS if c not in report.columns]
    if missing:
        raise SchemaError(
            f"report lacks column(s) {missing}: pass daily_report's output"
        )
    out: list[dict[str, Any]] = []

    def add(row: Any, level: str, threshold: float, rule: str) -> None:
        what = f"{row.metric}" + (f" of {row.feature}" if row.feature else "")
        out.append(
            {
                "day": row.day,
                "level": level,
                "metric": row.metric,
                "feature": row.feature,
                "value": row.value,
                "threshold": threshold,
                "message": f"day {row.day}: {what} = {row.value:.4g} {rule} "
                f"{threshold:g}",
            }
        )

    for row in report.itertuples(index=False):
        if row.metric == "psi":
            if row.value >= t.psi_alert:
                add(row, "alert", t.psi_alert, ">= alert threshold")
            elif row.value >= t.psi_warn:
                add(row, "warn", t.psi_warn, ">= warning threshold")
        elif row.metric == "send_rate":
            if t.send_rate_low is not None and row.value < t.send_rate_low:
                add(row, "alert", t.send_rate_low, "< lowest expected")
            if t.send_rate_high is not None and row.value > t.send_rate_high:
                add(row, "alert", t.send_rate_high, "> highest expected")
        elif row.metric == "mean_reward":
            if t.min_mean_reward is not None and row.value < t.min_mean_reward:
                add(row, "alert", t.min_mean_reward, "< lowest expected")
        elif row.metric == "n_decisions":
            if row.value < t.min_decisions:
                add(row, "warn", t.min_decisions, "< minimum")
        elif row.metric == "ope_snips":
            if t.min_ope_value is not None and row.high < t.min_ope_value:
                # the whole interval is below the floor
                add(row, "alert", t.min_ope_value, "(interval's upper end) <")
        elif row.metric == "ess" and t.min_ess is not None and row.value < t.min_ess:
            add(row, "warn", t.min_ess, "< minimum")
    columns = ["day", "level", "metric", "feature", "value", "threshold", "message"]
    return pd.DataFrame(out, columns=columns)


# --------------------------------------------------------------------------- plot


def plot_report(
    report: pd.DataFrame,
    thresholds: Thresholds | None = None,
    top: int = 5,
    features: Sequence[str] | None = None,
) -> Any:
    """A figure of the report: send rate; reward and the OPE estimate with its
    interval; the PSI of the ``top`` most drifted features (or ``features``) with the
    warning and alert thresholds. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    t = thresholds or Thresholds()
    wide = report[report["feature"] == ""].pivot(
        index="day", columns="metric", values="value"
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(wide.index, wide["send_rate"], marker="o")
    axes[0].set(title="send rate", xlabel="day", ylim=(0, 1))
    axes[1].plot(
        wide.index, wide["mean_reward"], marker="o", label="logged mean reward"
    )
    if "ope_snips" in wide:
        ope_rows = report[report["metric"] == "ope_snips"].set_index("day")
        axes[1].plot(
            ope_rows.index, ope_rows["value"], marker="s", label="SNIPS (target)"
        )
        axes[1].fill_between(
            ope_rows.index,
            ope_rows["low"],
            ope_rows["high"],
            alpha=0.2,
            label="95 % CI",
        )
    axes[1].set(title="reward per decision", xlabel="day")
    axes[1].legend(fontsize=8)
    drift = report[report["metric"] == "psi"].pivot(
        index="day", columns="feature", values="value"
    )
    chosen = list(features) if features else list(drift.max().nlargest(top).index)
    for name in chosen:
        axes[2].plot(drift.index, drift[name], marker=".", label=name)
    axes[2].axhline(
        t.psi_warn, color="orange", ls="--", lw=1, label=f"warn {t.psi_warn}"
    )
    axes[2].axhline(
        t.psi_alert, color="red", ls="--", lw=1, label=f"alert {t.psi_alert}"
    )
    axes[2].set(title="feature drift (PSI)", xlabel="day")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig
