"""The daily marketing funnel: budget -> impressions -> link clicks -> acquisitions, per
channel.

This is the data of Part I and the dynamics of Part II, after the PyCon APAC 2018 talk
"Implementing Reinforcement Learning for Marketing Channel Optimization with Python".
Version 2 of the book's model (version 1 is in the git history):

* paid impressions ~ NegBinomial(mu_imp, phi_imp),
  log mu_imp = a + b * log(spend) + c * holiday, and exactly 0 at zero spend;
* link clicks on those ads ~ NegBinomial(mu_clk, phi_clk),
  log mu_clk = d + e * log(impressions / 1000) + f * holiday, and 0 without impressions;
* acquisitions ~ Binomial(clicks, conversion rate);
* organic clicks (search results, direct visits) arrive whatever is spent:
  :func:`organic_clicks`. No allocation changes them.

Spend is in thousands of currency units per channel and day. The elasticity ``b < 1``
gives diminishing returns; zero spend buys zero paid impressions (version 1 used
``log1p(spend)`` and an intercept, so zero spend still bought thousands of impressions a
day, an extrapolation below anything logged). Channels differ in elasticity, level and
holiday lift, so how a budget is split across channels and days matters. NegBinomial is
the NB2 form: variance = mu + mu**2 / phi.

The talk regresses both counts on the action (spend) and the holiday flag; here clicks
are regressed on impressions (a click needs an impression). Its reward is a log-based
function of clicks net of spend; ours (:func:`reward`) is the value of the day's clicks
net of spend, in thousands of currency: a per-channel log would make the best split
independent of how efficient each channel is. Both are deviations the chapters'
reproduction tables list.

The module holds the table schema and its validating loader (any real table of this
schema loads without code changes; a spend-unit check catches raw currency passed as
thousands), the ground-truth parameters of the book's synthetic data, a vectorized
simulator of a day (used by the generator and by Part II's environment), exact expected
clicks for planners, a human-like historical spending policy, and the reward.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pulse_lib.errors import DataFormatError, SchemaError
from pulse_lib.io import atomic_path, atomic_write
from pulse_lib.validation import (
    check_file,
    check_integer,
    check_integer_array,
    parse_dates,
)

#: Required columns of a funnel table, with what each holds.
REQUIRED_COLUMNS: dict[str, str] = {
    "date": "calendar day (one row per date and channel)",
    "channel": "marketing channel name",
    "spend": "spend that day, thousands of currency units, >= 0",
    "holiday": "1 if the day is a holiday, else 0",
    "impressions": "ad impressions, integer >= 0",
    "clicks": "link clicks, integer >= 0 and <= impressions",
}
#: Optional columns, validated when present.
OPTIONAL_COLUMNS: dict[str, str] = {
    "acquisitions": "customers acquired, integer >= 0 and <= clicks",
}
COUNT_COLUMNS: tuple[str, ...] = ("impressions", "clicks", "acquisitions")

DATASET_VERSION = 2
DATASET_SEED = 2018
#: First day and length of the shipped table.
DATASET_START = "2016-07-01"
DATASET_DAYS = 730

#: How dates are written in a funnel table (ISO 8601). Tables written otherwise pass
#: their own
#: ``date_format``: ``01/07/2016`` is never guessed to be July or January.
DATE_FORMAT = "%Y-%m-%d"

#: Plausible cost per thousand impressions (CPM), in currency units, for the spend-unit
#: check of :func:`check_spend_units`. Real CPMs run from cents to a few hundred in any
#: major
#: currency; spend in raw currency read as thousands inflates the implied CPM
#: 1,000-fold.
CPM_RANGE: tuple[float, float] = (0.01, 1000.0)


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelParams:
    """Parameters of the funnel for K channels.

    Every array has shape ``(K,)`` for one parameter set, or ``(S, K)`` for S posterior
    draws; :func:`simulate_funnel` broadcasts over the leading axis.
    """

    channels: tuple[str, ...]
    #: a: log mean impressions at spend 1 (thousand), normal day
    imp_intercept: np.ndarray
    imp_spend: np.ndarray  #: b: elasticity of impressions to spend (log-log)
    imp_holiday: np.ndarray  #: c: holiday effect on log mean impressions
    imp_phi: np.ndarray  #: NB2 dispersion of impressions
    clk_intercept: np.ndarray  #: d: log mean clicks at 1,000 impressions, normal day
    clk_impressions: np.ndarray  #: e: elasticity of clicks to impressions (log-log)
    clk_holiday: np.ndarray  #: f: holiday effect on log mean clicks
    clk_phi: np.ndarray  #: NB2 dispersion of clicks
    conversion: np.ndarray  #: probability that a click becomes an acquisition

    ARRAY_FIELDS = (
        "imp_intercept",
        "imp_spend",
        "imp_holiday",
        "imp_phi",
        "clk_intercept",
        "clk_impressions",
        "clk_holiday",
        "clk_phi",
        "conversion",
    )

    def __post_init__(self) -> None:
        k = len(self.channels)
        shapes = set()
        for name in self.ARRAY_FIELDS:
            value = np.asarray(getattr(self, name), dtype=float)
            object.__setattr__(self, name, value)
            if value.ndim not in (1, 2) or value.shape[-1] != k:
                raise SchemaError(
                    f"ChannelParams.{name} has shape {value.shape}; "
                    f"expected ({k},) or (S, {k})"
                )
            if not np.all(np.isfinite(value)):
                raise SchemaError(f"ChannelParams.{name} holds non-finite values")
            shapes.add(value.shape)
        if len(shapes) != 1:
            raise SchemaError(
                f"ChannelParams arrays disagree in shape: {sorted(shapes)}"
            )
        if np.any(self.imp_phi <= 0) or np.any(self.clk_phi <= 0):
            raise SchemaError(
                "ChannelParams dispersions imp_phi and clk_phi must be > 0"
            )
        if np.any((self.conversion < 0) | (self.conversion > 1)):
            raise SchemaError("ChannelParams.conversion must lie in [0, 1]")

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def n_draws(self) -> int | None:
        """Number of posterior draws, or None for a single parameter set."""
        return None if self.imp_intercept.ndim == 1 else self.imp_intercept.shape[0]

    def draw(self, index: int | np.ndarray) -> ChannelParams:
        """Select draw(s) ``index`` of a posterior parameter set."""
        if self.n_draws is None:
            raise SchemaError("draw() needs parameters with a leading draw axis (S, K)")
        return dataclasses.replace(
            self, **{n: getattr(self, n)[index] for n in self.ARRAY_FIELDS}
        )

    def mean(self) -> ChannelParams:
        """Posterior mean (over the draw axis) as a single parameter set."""
        if self.n_draws is None:
            return self
        return dataclasses.replace(
            self, **{n: getattr(self, n).mean(axis=0) for n in self.ARRAY_FIELDS}
        )

    def allclose(self, other: ChannelParams, rtol: float = 1e-9) -> bool:
        """Same channels and numerically equal arrays (dataclass ``==`` is ambiguous
        on arrays)."""
        return self.channels == other.channels and all(
            np.shape(getattr(self, n)) == np.shape(getattr(other, n))
            and np.allclose(getattr(self, n), getattr(other, n), rtol=rtol)
            for n in self.ARRAY_FIELDS
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"channels": list(self.channels)}
        out.update(
            {n: np.asarray(getattr(self, n)).tolist() for n in self.ARRAY_FIELDS}
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelParams:
        return cls(
            channels=tuple(data["channels"]),
            **{n: np.asarray(data[n]) for n in cls.ARRAY_FIELDS},
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per channel, one column per parameter (single parameter set only)."""
        if self.n_draws is not None:
            raise SchemaError(
                "to_frame() needs a single parameter set; call .mean() first"
            )
        return pd.DataFrame(
            {n: getattr(self, n) for n in self.ARRAY_FIELDS}, index=list(self.channels)
        )


#: The ground truth behind the book's synthetic funnel data (version 2). At the
#: historical
#: mean spend (search 27, social 20, display 13.6, video 6.8 thousand a day) the
#: channels
#: return about 2.8, 2.4, 1.0 and 2.0 times their spend in click value, with
#: elasticities
#: b * e of 0.35, 0.70, 0.50 and 0.75: search is large but saturated, display poor,
#: social
#: and video respond strongly, social and video far more on holidays.
TRUE_PARAMS = ChannelParams(
    channels=("search", "social", "display", "video"),
    imp_intercept=np.array([13.3, 12.7, 13.7, 12.5]),
    imp_spend=np.array([0.35, 0.74, 0.50, 0.83]),
    imp_holiday=np.array([0.05, 0.50, 0.00, 0.60]),
    imp_phi=np.array([30.0, 15.0, 20.0, 12.0]),
    clk_intercept=np.array([3.0, 2.5, 0.7, 2.3]),
    clk_impressions=np.array([1.00, 0.95, 1.00, 0.90]),
    clk_holiday=np.array([0.05, 0.22, 0.00, 0.36]),
    clk_phi=np.array([40.0, 20.0, 25.0, 15.0]),
    conversion=np.array([0.050, 0.020, 0.010, 0.015]),
)

#: Value of one link click, in currency units (what the business earns per click on
#: average).
VALUE_PER_CLICK = 2.0
#: Price of spend in the reward: reward units (thousands of currency) per thousand
#: spent.
DEFAULT_COST_WEIGHT = 1.0
#: Organic clicks a day on a normal day (search results, direct visits), and their
#: holiday
#: effect on the log scale. No spend changes them.
ORGANIC_CLICKS = 60_000.0
ORGANIC_HOLIDAY = 0.3

#: Holidays of the synthetic calendar, as (month, day): fixed public holidays, a
#: mid-year
#: travel week and a year-end season, when a travel marketplace sells most (31 days a
#: year).
HOLIDAYS_MONTH_DAY: tuple[tuple[int, int], ...] = (
    (1, 1),
    (2, 16),
    (3, 28),
    (4, 14),
    (5, 1),
    (5, 10),
    (6, 1),
    (6, 14),
    (6, 15),
    (6, 16),
    (6, 17),
    (6, 18),
    (6, 19),
    (6, 20),
    (8, 17),
    (10, 2),
    (12, 20),
    (12, 21),
    (12, 22),
    (12, 23),
    (12, 24),
    (12, 25),
    (12, 26),
    (12, 27),
    (12, 28),
    (12, 29),
    (12, 30),
    (12, 31),
    (11, 25),
    (9, 10),
    (7, 4),
)


def holiday_flags(dates: pd.DatetimeIndex | np.ndarray | list[Any]) -> np.ndarray:
    """1 on the synthetic calendar's holidays, else 0, for each date."""
    index = pd.DatetimeIndex(dates)
    md = set(HOLIDAYS_MONTH_DAY)
    return np.array([(d.month, d.day) in md for d in index], dtype=np.int64)


# --- the funnel's mean and a vectorized simulator
# ---------------------------------------------


def _holiday_like(holiday: Any, x: np.ndarray) -> np.ndarray:
    hol = np.asarray(holiday, dtype=float)
    return hol[..., None] if hol.ndim == x.ndim - 1 else hol


def _safe_log(x: np.ndarray) -> np.ndarray:
    return np.log(np.where(x > 0, x, 1.0))


def expected_impressions(
    params: ChannelParams, spend: np.ndarray, holiday: np.ndarray
) -> np.ndarray:
    """E[impressions] for spend of shape (..., K); 0 where spend is 0.

    ``holiday`` has the batch shape (...,) or broadcasts to (..., K).
    """
    spend = np.asarray(spend, dtype=float)
    hol = _holiday_like(holiday, spend)
    mu = np.exp(
        params.imp_intercept
        + params.imp_spend * _safe_log(spend)
        + params.imp_holiday * hol
    )
    return np.where(spend > 0, mu, 0.0)


def expected_clicks_given_impressions(
    params: ChannelParams, impressions: np.ndarray, holiday: np.ndarray
) -> np.ndarray:
    """E[clicks | impressions] for impressions of shape (..., K); 0 without
    impressions."""
    imp = np.asarray(impressions, dtype=float)
    hol = _holiday_like(holiday, imp)
    mu = np.exp(
        params.clk_intercept
        + params.clk_impressions * _safe_log(imp / 1000.0)
        + params.clk_holiday * hol
    )
    return np.where(imp > 0, mu, 0.0)


def expected_clicks(
    params: ChannelParams, spend: np.ndarray, holiday: np.ndarray
) -> np.ndarray:
    """E[clicks | spend] for spend of shape (..., K), averaging over the day's
    impressions.

    Impressions are a gamma-Poisson mixture; at these counts the Poisson part is
    negligible, so E[(impressions / 1000)^e] = (mu / (1000 phi))^e Gamma(phi + e) /
    Gamma(phi) (the gamma's moment). With mu = exp(a + b log s + c h) the result is a
    power law in spend, ``V * s^(b e)``, which the planners of
    :mod:`pulse_lib.budget_env` use in closed form.
    """
    from scipy.special import gammaln

    spend = np.asarray(spend, dtype=float)
    mu = expected_impressions(params, spend, holiday)
    e = params.clk_impressions
    phi = params.imp_phi
    moment = np.exp(gammaln(phi + e) - gammaln(phi) - e * np.log(phi))
    hol = _holiday_like(holiday, spend)
    clicks = np.exp(
        params.clk_intercept + e * _safe_log(mu / 1000.0) + params.clk_holiday * hol
    )
    return np.where(mu > 0, clicks * moment, 0.0)


def organic_clicks(holiday: np.ndarray | float) -> np.ndarray:
    """Expected organic clicks of a day (any shape of holiday flags): no spend
    changes them."""
    return ORGANIC_CLICKS * np.exp(ORGANIC_HOLIDAY * np.asarray(holiday, dtype=float))


def _negative_binomial(
    rng: np.random.Generator, mu: np.ndarray, phi: np.ndarray
) -> np.ndarray:
    mu, phi = np.broadcast_arrays(np.asarray(mu, float), np.asarray(phi, float))
    # NB2 as a gamma-Poisson mixture: stable for large mu, exact in distribution. A zero
    # mean gives a zero count (the gamma's scale is 0).
    return rng.poisson(rng.gamma(shape=phi, scale=mu / phi))


def simulate_funnel(
    params: ChannelParams,
    spend: np.ndarray,
    holiday: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Draw one day's impressions, clicks and acquisitions for every channel.

    ``spend`` has shape (..., K) (any batch shape); ``holiday`` has the batch shape
    (...,) or is a scalar. Parameters of shape (K,) or (S, K) broadcast against the
    batch, so a batch of shape (S, K) with posterior draws simulates S environments at
    once. Returns integer arrays of the batch shape (..., K). Zero spend gives zero
    impressions and clicks.
    """
    spend = np.asarray(spend, dtype=float)
    if spend.ndim == 0 or spend.shape[-1] != params.n_channels:
        raise SchemaError(
            f"spend must have shape (..., {params.n_channels}) for channels "
            f"{list(params.channels)}; got {spend.shape}"
        )
    if not np.all(np.isfinite(spend)) or np.any(spend < 0):
        raise SchemaError("spend must be finite and >= 0")
    holiday = np.broadcast_to(np.asarray(holiday, dtype=float), spend.shape[:-1])
    mu_imp = expected_impressions(params, spend, holiday)
    phi_imp = np.broadcast_to(params.imp_phi, mu_imp.shape)
    impressions = _negative_binomial(rng, mu_imp, phi_imp)
    mu_clk = expected_clicks_given_impressions(params, impressions, holiday)
    phi_clk = np.broadcast_to(params.clk_phi, mu_clk.shape)
    clicks = np.minimum(_negative_binomial(rng, mu_clk, phi_clk), impressions)
    acquisitions = rng.binomial(
        clicks, np.broadcast_to(params.conversion, clicks.shape)
    )
    return {"impressions": impressions, "clicks": clicks, "acquisitions": acquisitions}


# --- the reward
# ---------------------------------------------------------------------------------


def reward(
    clicks: np.ndarray,
    spend: np.ndarray,
    cost_weight: float = DEFAULT_COST_WEIGHT,
    value_per_click: float = VALUE_PER_CLICK,
    organic: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Value of the day's clicks net of spend, in thousands of currency, summed over
    channels.

    ``r = value_per_click * (sum_k clicks_k + organic) / 1000 - cost_weight * sum_k
    spend_k``

    Paid clicks are worth ``value_per_click`` each; ``organic`` clicks (same value)
    arrive whatever is spent, so they shift every policy's return alike. Arrays of shape
    (..., K) give a reward of shape (...,); ``organic`` broadcasts to (...,).
    """
    clicks = np.asarray(clicks, dtype=float)
    spend = np.asarray(spend, dtype=float)
    if clicks.shape != spend.shape:
        raise SchemaError(
            f"clicks {clicks.shape} and spend {spend.shape} must have the same shape"
        )
    finite = np.all(np.isfinite(clicks)) and np.all(np.isfinite(spend))
    if not finite or np.any(clicks < 0) or np.any(spend < 0):
        raise SchemaError("clicks and spend must be finite and >= 0")
    value = (
        value_per_click / 1000.0 * (clicks.sum(axis=-1) + np.asarray(organic, float))
    )
    return value - cost_weight * spend.sum(axis=-1)


# --- the human-like historical policy and the generator
# -----------------------------------------

#: Historical split of the monthly budget, as a marketing team would keep it year after
#: year.
HUMAN_SHARES = np.array([0.40, 0.30, 0.20, 0.10])


def human_spend(
    dates: pd.DatetimeIndex,
    rng: np.random.Generator,
    shares: np.ndarray = HUMAN_SHARES,
    monthly_budget: tuple[float, float] = (1500.0, 2600.0),
    holiday_uplift: float = 0.3,
    noise_sd: float = 0.35,
) -> np.ndarray:
    """Daily spend (n_days, K) of a human-like marketer.

    Each month gets a budget drawn uniformly from ``monthly_budget`` (thousands), paced
    evenly over its days, split by fixed ``shares``, lifted by ``holiday_uplift`` on
    holidays, with day-to-day log-normal noise: the variation a regression needs to see
    the response curve.
    """
    holidays = holiday_flags(dates)
    months = dates.to_period("M")
    spend = np.empty((len(dates), len(shares)))
    for month in months.unique():
        mask = np.asarray(months == month)
        daily = rng.uniform(*monthly_budget) / mask.sum()
        noise = rng.lognormal(
            -0.5 * noise_sd**2, noise_sd, size=(mask.sum(), len(shares))
        )
        lift = 1.0 + holiday_uplift * holidays[mask][:, None]
        spend[mask] = daily * shares * lift * noise
    return np.round(spend, 3)


def generate_funnel(
    params: ChannelParams = TRUE_PARAMS,
    start: str = DATASET_START,
    n_days: int = DATASET_DAYS,
    seed: int = DATASET_SEED,
) -> pd.DataFrame:
    """Daily channel logs in the funnel schema, from ``params`` and the human-like
    policy."""
    if n_days <= 0:
        raise SchemaError(f"n_days must be positive, got {n_days}")
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=n_days, freq="D")
    shares = HUMAN_SHARES[: params.n_channels] / HUMAN_SHARES[: params.n_channels].sum()
    spend = human_spend(dates, rng, shares=shares)
    holidays = holiday_flags(dates)
    day = simulate_funnel(params, spend, holidays, rng)
    k = params.n_channels
    frame = pd.DataFrame(
        {
            "date": np.repeat(dates.values, k),
            "channel": np.tile(np.array(params.channels, dtype=object), n_days),
            "spend": spend.reshape(-1),
            "holiday": np.repeat(holidays, k),
            "impressions": day["impressions"].reshape(-1),
            "clicks": day["clicks"].reshape(-1),
            "acquisitions": day["acquisitions"].reshape(-1),
        }
    )
    return validate_funnel(frame)


# --- schema validation and loading
# --------------------------------------------------------------


def _first_bad_row(frame: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
    bad = np.flatnonzero(np.asarray(mask))
    rows = ", ".join(str(frame.index[i]) for i in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"row(s) {rows}{more}"


def validate_funnel(
    frame: pd.DataFrame,
    spend_unit: str = "thousands",
    cpm_range: tuple[float, float] | None = CPM_RANGE,
    date_format: str = DATE_FORMAT,
) -> pd.DataFrame:
    """Check a table against the funnel schema; return a typed copy, sorted by date and
    channel.

    Dates given as text must follow ``date_format`` exactly (default ISO ``%Y-%m-%d``;
    pass ``"%d/%m/%Y"`` for day-first exports): an ambiguous ``01/07/2016`` or an
    integer is an error, never a guess. ``datetime64`` columns and date objects pass as
    they are.

    ``spend_unit`` says what the ``spend`` column holds: ``"thousands"`` of currency
    units (the book's unit) or ``"currency"`` (converted to thousands here, on request).
    The spend unit is then checked (:func:`check_spend_units`; ``cpm_range=None`` skips
    it), so a table in raw currency does not pass silently as thousands.

    Raises :class:`~pulse_lib.errors.SchemaError` naming the column and the rows at
    fault for: missing columns, values of the wrong type, NaNs, negative spend or
    counts, non-integer counts, holiday flags other than 0/1, clicks above impressions,
    acquisitions above clicks, and duplicated (date, channel) rows.
    """
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"funnel table is missing column(s) {missing}; it has {list(frame.columns)}"
        )
    if frame.empty:
        raise SchemaError("funnel table has no rows")
    columns = list(REQUIRED_COLUMNS) + [
        c for c in OPTIONAL_COLUMNS if c in frame.columns
    ]
    out = frame[columns].copy()

    for name in columns:
        if out[name].isna().any():
            raise SchemaError(
                f"column {name!r} has missing values (NaN) at "
                f"{_first_bad_row(out, out[name].isna())}"
            )

    # explicit format, no guessing
    dates = parse_dates("column 'date'", out["date"], date_format)
    out["date"] = dates.dt.normalize()
    out["channel"] = out["channel"].astype(str)

    numeric = {
        name: pd.to_numeric(out[name], errors="coerce")
        for name in columns
        if name not in ("date", "channel")
    }
    for name, values in numeric.items():
        if values.isna().any():
            raise SchemaError(
                f"column {name!r} has non-numeric values at "
                f"{_first_bad_row(out, values.isna())}"
            )
        if not np.all(np.isfinite(values.to_numpy(dtype=float))):
            raise SchemaError(
                f"column {name!r} has infinite values at "
                f"{_first_bad_row(out, ~np.isfinite(values.to_numpy(dtype=float)))}"
            )
    if (numeric["spend"] < 0).any():
        raise SchemaError(
            f"column 'spend' is negative at {_first_bad_row(out, numeric['spend'] < 0)}"
        )
    out["spend"] = numeric["spend"].astype("float64")
    if not numeric["holiday"].isin([0, 1]).all():
        raise SchemaError(
            "column 'holiday' must be 0 or 1; bad at "
            f"{_first_bad_row(out, ~numeric['holiday'].isin([0, 1]))}"
        )
    out["holiday"] = numeric["holiday"].astype("int64")
    for name in COUNT_COLUMNS:
        if name not in numeric:
            continue
        values = numeric[name]
        if (values < 0).any():
            raise SchemaError(
                f"column {name!r} is negative at {_first_bad_row(out, values < 0)}"
            )
        if (values != np.round(values)).any():
            raise SchemaError(
                f"column {name!r} must hold whole counts; fractional at "
                f"{_first_bad_row(out, values != np.round(values))}"
            )
        # beyond int64 a cast wraps (1e20 -> -9.2e18): refuse instead
        out[name] = check_integer_array(f"column {name!r}", values.to_numpy(), low=0)
    if (out["clicks"] > out["impressions"]).any():
        raise SchemaError(
            "column 'clicks' exceeds 'impressions' at "
            f"{_first_bad_row(out, out['clicks'] > out['impressions'])}"
        )
    if "acquisitions" in out and (out["acquisitions"] > out["clicks"]).any():
        raise SchemaError(
            "column 'acquisitions' exceeds 'clicks' at "
            f"{_first_bad_row(out, out['acquisitions'] > out['clicks'])}"
        )
    duplicated = out.duplicated(["date", "channel"], keep=False)
    if duplicated.any():
        raise SchemaError(
            f"(date, channel) pairs repeat at {_first_bad_row(out, duplicated)}"
        )
    if spend_unit == "currency":
        out["spend"] = out["spend"] / 1000.0
    elif spend_unit != "thousands":
        raise SchemaError(
            f"spend_unit must be 'thousands' or 'currency', got {spend_unit!r}"
        )
    if cpm_range is not None:
        check_spend_units(out, cpm_range)
    return out.sort_values(["date", "channel"], kind="stable").reset_index(drop=True)


def implied_cpm(frame: pd.DataFrame) -> pd.Series:
    """Median cost per thousand impressions (currency units) per channel, spend in
    thousands.

    Rows with zero spend or zero impressions are left out.
    """
    rows = frame[(frame["spend"] > 0) & (frame["impressions"] > 0)]
    cpm = 1e6 * rows["spend"] / rows["impressions"]
    return cpm.groupby(rows["channel"]).median()


def check_spend_units(
    frame: pd.DataFrame, cpm_range: tuple[float, float] = CPM_RANGE
) -> None:
    """Raise if the spend column cannot be thousands of currency units.

    Reading spend as thousands, the implied cost per thousand impressions (CPM) of each
    channel must lie in ``cpm_range`` (:data:`CPM_RANGE`). A table in raw currency read
    as thousands has CPMs 1,000 times too high; the error names the channels and the
    fix.
    """
    low, high = cpm_range
    cpm = implied_cpm(frame)
    bad = cpm[(cpm < low) | (cpm > high)]
    if len(bad):
        listed = ", ".join(f"{ch}: {value:,.4g}" for ch, value in bad.items())
        hint = (
            "spend looks like raw currency, not thousands: pass spend_unit='currency' "
            "(or divide spend by 1,000)"
            if (bad > high).any()
            else "spend looks too small for thousands of currency units"
        )
        raise SchemaError(
            "column 'spend': reading it as thousands of currency gives a cost per "
            "thousand "
            f"impressions outside {cpm_range} for {listed}; {hint}. If your currency's "
            "CPMs "
            f"really lie there, pass cpm_range=(low, high)."
        )


def load_funnel(
    path: str | Path,
    spend_unit: str = "thousands",
    cpm_range: tuple[float, float] | None = CPM_RANGE,
    date_format: str = DATE_FORMAT,
    expected_rows: int | None = None,
) -> pd.DataFrame:
    """Read a funnel table from CSV or Parquet and validate it (see
    :func:`validate_funnel`).

    A CSV must end with a newline: a file cut inside its last row (``...,1736`` cut to
    ``...,17``) would otherwise be read as a shorter number. A cut exactly at a row
    boundary leaves a well-formed, shorter table that no format check can tell apart:
    pass ``expected_rows`` (the shipped table's count is recorded in its ``truth.json``)
    to catch it. A missing path is a :class:`FileNotFoundError`, a directory a
    :class:`~pulse_lib.errors.PathError`.
    """
    path = check_file("funnel table path", path)
    if expected_rows is not None:
        check_integer("expected_rows", expected_rows, low=1)
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix in (".csv", ".gz"):
            frame = pd.read_csv(_complete_csv_bytes(path))
        else:
            raise DataFormatError(
                f"{path}: unknown table format {path.suffix!r}; use .csv or .parquet"
            )
    except DataFormatError:
        raise
    except Exception as exc:
        raise DataFormatError(
            f"{path}: cannot be read as a table ({type(exc).__name__}: {exc})"
        ) from exc
    if expected_rows is not None and len(frame) != expected_rows:
        raise DataFormatError(
            f"{path}: {len(frame)} rows, expected {expected_rows}: "
            "the file is "
            "truncated or not the table it claims to be"
        )
    return validate_funnel(
        frame, spend_unit=spend_unit, cpm_range=cpm_range, date_format=date_format
    )


def _complete_csv_bytes(path: Path) -> io.BytesIO:
    """The bytes of a CSV (gunzipped if ``.gz``), refused unless the last row is
    complete."""
    import gzip

    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataFormatError(f"{path}: the file is UTF-16 text; save it as UTF-8")
    if raw and not raw.endswith(b"\n"):
        tail = raw[-40:].decode("utf-8", "replace").rsplit("\n", 1)[-1]
        raise DataFormatError(
            f"{path}: the file does not end with a newline, so its "
            "last row "
            f"({tail!r}) may be cut short: the file looks truncated"
        )
    return io.BytesIO(raw)


def shipped_dataset_dir(version: int = DATASET_VERSION) -> Path:
    from pulse_lib.book import datasets_dir

    return datasets_dir() / "funnel" / f"v{version}"


def load_shipped_funnel(
    version: int = DATASET_VERSION,
) -> tuple[pd.DataFrame, ChannelParams]:
    """The versioned synthetic funnel shipped in ``datasets/funnel/`` and its ground
    truth."""
    folder = shipped_dataset_dir(version)
    if not folder.is_dir():
        raise DataFormatError(
            f"no shipped funnel version {version} at {folder}; this library ships "
            "version "
            f"{DATASET_VERSION} (older versions are in the git history)"
        )
    meta = json.loads((folder / "truth.json").read_text())
    # one row per day and channel: a table cut at a row boundary has fewer
    frame = load_funnel(
        folder / "funnel.csv", expected_rows=meta["n_days"] * len(meta["channels"])
    )
    truth = ChannelParams.from_dict(meta)
    return frame, truth


def write_shipped_funnel(folder: Path | None = None) -> Path:
    """Regenerate the shipped dataset (table and ground truth) atomically. Returns
    its folder."""
    folder = folder or shipped_dataset_dir()
    frame = generate_funnel()
    with atomic_path(folder / "funnel.csv") as tmp:
        frame.to_csv(tmp, index=False, date_format="%Y-%m-%d")
    meta = {
        "version": DATASET_VERSION,
        "seed": DATASET_SEED,
        "start": DATASET_START,
        "n_days": DATASET_DAYS,
        "value_per_click": VALUE_PER_CLICK,
        "cost_weight": DEFAULT_COST_WEIGHT,
        "organic_clicks": ORGANIC_CLICKS,
        "organic_holiday": ORGANIC_HOLIDAY,
        **TRUE_PARAMS.to_dict(),
    }
    with atomic_write(folder / "truth.json", "w") as handle:
        json.dump(meta, handle, indent=2)
    return folder


if __name__ == "__main__":
    print(f"wrote {write_shipped_funnel()}")
