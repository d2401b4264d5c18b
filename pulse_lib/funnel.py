"""The daily marketing funnel: budget -> impressions -> link clicks -> acquisitions, per channel.

This is the data of Part I and the dynamics of Part II, after the PyCon APAC 2018 talk
"Implementing Reinforcement Learning for Marketing Channel Optimization with Python":

* impressions  ~ NegBinomial(mu_imp, phi_imp),  log mu_imp = a + b * log1p(spend) + c * holiday
* link clicks  ~ NegBinomial(mu_clk, phi_clk),  log mu_clk = d + e * log1p(impressions / 1000) + f * holiday
* acquisitions ~ Binomial(clicks, conversion rate)

Spend is in thousands of currency units per channel and day. The talk writes log mu linear in
the action; we put spend on a log scale (``log1p``) so returns diminish, as they do in every
marketing-mix model. NegBinomial is the NB2 form: variance = mu + mu**2 / phi.

The module holds the table schema and its validating loader (any real table of this schema loads
without code changes), the ground-truth parameters of the book's synthetic data, a vectorized
simulator of a day (used by the generator and by Part II's environment), a human-like historical
spending policy, and the talk's reward.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pulse_lib.errors import DataFormatError, SchemaError
from pulse_lib.io import atomic_path, atomic_write

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

DATASET_VERSION = 1
DATASET_SEED = 2018


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelParams:
    """Parameters of the funnel for K channels.

    Every array has shape ``(K,)`` for one parameter set, or ``(S, K)`` for S posterior draws;
    :func:`simulate_funnel` broadcasts over the leading axis.
    """

    channels: tuple[str, ...]
    imp_intercept: np.ndarray  #: a: log mean impressions at zero spend on a normal day
    imp_spend: np.ndarray  #: b: elasticity of impressions to log1p(spend)
    imp_holiday: np.ndarray  #: c: holiday effect on log mean impressions
    imp_phi: np.ndarray  #: NB2 dispersion of impressions
    clk_intercept: np.ndarray  #: d: log mean clicks at zero impressions
    clk_impressions: np.ndarray  #: e: elasticity of clicks to log1p(impressions / 1000)
    clk_holiday: np.ndarray  #: f: holiday effect on log mean clicks
    clk_phi: np.ndarray  #: NB2 dispersion of clicks
    conversion: np.ndarray  #: probability that a click becomes an acquisition

    ARRAY_FIELDS = (
        "imp_intercept", "imp_spend", "imp_holiday", "imp_phi",
        "clk_intercept", "clk_impressions", "clk_holiday", "clk_phi", "conversion",
    )

    def __post_init__(self) -> None:
        k = len(self.channels)
        shapes = set()
        for name in self.ARRAY_FIELDS:
            value = np.asarray(getattr(self, name), dtype=float)
            object.__setattr__(self, name, value)
            if value.ndim not in (1, 2) or value.shape[-1] != k:
                raise SchemaError(f"ChannelParams.{name} has shape {value.shape}; expected ({k},) or (S, {k})")
            if not np.all(np.isfinite(value)):
                raise SchemaError(f"ChannelParams.{name} holds non-finite values")
            shapes.add(value.shape)
        if len(shapes) != 1:
            raise SchemaError(f"ChannelParams arrays disagree in shape: {sorted(shapes)}")
        if np.any(self.imp_phi <= 0) or np.any(self.clk_phi <= 0):
            raise SchemaError("ChannelParams dispersions imp_phi and clk_phi must be > 0")
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
        return dataclasses.replace(self, **{n: getattr(self, n)[index] for n in self.ARRAY_FIELDS})

    def mean(self) -> ChannelParams:
        """Posterior mean (over the draw axis) as a single parameter set."""
        if self.n_draws is None:
            return self
        return dataclasses.replace(self, **{n: getattr(self, n).mean(axis=0) for n in self.ARRAY_FIELDS})

    def allclose(self, other: ChannelParams, rtol: float = 1e-9) -> bool:
        """Same channels and numerically equal arrays (dataclass ``==`` is ambiguous on arrays)."""
        return self.channels == other.channels and all(
            np.shape(getattr(self, n)) == np.shape(getattr(other, n))
            and np.allclose(getattr(self, n), getattr(other, n), rtol=rtol)
            for n in self.ARRAY_FIELDS
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"channels": list(self.channels)}
        out.update({n: np.asarray(getattr(self, n)).tolist() for n in self.ARRAY_FIELDS})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelParams:
        return cls(channels=tuple(data["channels"]), **{n: np.asarray(data[n]) for n in cls.ARRAY_FIELDS})

    def to_frame(self) -> pd.DataFrame:
        """One row per channel, one column per parameter (single parameter set only)."""
        if self.n_draws is not None:
            raise SchemaError("to_frame() needs a single parameter set; call .mean() first")
        return pd.DataFrame({n: getattr(self, n) for n in self.ARRAY_FIELDS}, index=list(self.channels))


#: The ground truth behind the book's synthetic funnel data (version 1).
TRUE_PARAMS = ChannelParams(
    channels=("search", "social", "display", "video"),
    imp_intercept=np.array([7.5, 8.0, 8.5, 7.0]),
    imp_spend=np.array([1.10, 1.00, 0.90, 1.20]),
    imp_holiday=np.array([0.15, 0.25, 0.10, 0.20]),
    imp_phi=np.array([20.0, 15.0, 10.0, 12.0]),
    clk_intercept=np.array([2.0, 1.5, 0.6, 1.0]),
    clk_impressions=np.array([1.00, 0.95, 0.90, 0.95]),
    clk_holiday=np.array([0.10, 0.20, 0.05, 0.15]),
    clk_phi=np.array([30.0, 20.0, 15.0, 15.0]),
    conversion=np.array([0.050, 0.030, 0.020, 0.030]),
)

#: Holidays of the synthetic calendar, as (month, day): fixed public holidays and a year-end
#: and a mid-year travel season, when a travel marketplace sells most.
HOLIDAYS_MONTH_DAY: tuple[tuple[int, int], ...] = (
    (1, 1), (2, 16), (3, 28), (4, 14), (5, 1), (5, 10), (6, 1), (6, 14), (6, 15), (6, 16),
    (6, 17), (8, 17), (12, 24), (12, 25), (12, 26), (12, 31),
)


def holiday_flags(dates: pd.DatetimeIndex | np.ndarray | list[Any]) -> np.ndarray:
    """1 on the synthetic calendar's holidays, else 0, for each date."""
    index = pd.DatetimeIndex(dates)
    md = set(HOLIDAYS_MONTH_DAY)
    return np.array([(d.month, d.day) in md for d in index], dtype=np.int64)


# --- the funnel's mean and a vectorized simulator ---------------------------------------------


def expected_impressions(params: ChannelParams, spend: np.ndarray, holiday: np.ndarray) -> np.ndarray:
    """E[impressions] for spend of shape (..., K) and holiday broadcastable to (..., 1)."""
    spend = np.asarray(spend, dtype=float)
    hol = np.asarray(holiday, dtype=float)[..., None] if np.ndim(holiday) == spend.ndim - 1 else holiday
    return np.exp(params.imp_intercept + params.imp_spend * np.log1p(spend) + params.imp_holiday * hol)


def expected_clicks_given_impressions(
    params: ChannelParams, impressions: np.ndarray, holiday: np.ndarray
) -> np.ndarray:
    """E[clicks | impressions] for impressions of shape (..., K)."""
    imp = np.asarray(impressions, dtype=float)
    hol = np.asarray(holiday, dtype=float)[..., None] if np.ndim(holiday) == imp.ndim - 1 else holiday
    return np.exp(params.clk_intercept + params.clk_impressions * np.log1p(imp / 1000.0) + params.clk_holiday * hol)


def _negative_binomial(rng: np.random.Generator, mu: np.ndarray, phi: np.ndarray) -> np.ndarray:
    mu, phi = np.broadcast_arrays(np.asarray(mu, float), np.asarray(phi, float))
    # NB2 as a gamma-Poisson mixture: stable for large mu, exact in distribution.
    return rng.poisson(rng.gamma(shape=phi, scale=mu / phi))


def simulate_funnel(
    params: ChannelParams,
    spend: np.ndarray,
    holiday: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Draw one day's impressions, clicks and acquisitions for every channel.

    ``spend`` has shape (..., K) (any batch shape); ``holiday`` has the batch shape (...,) or is a
    scalar. Parameters of shape (K,) or (S, K) broadcast against the batch, so a batch of shape
    (S, K) with posterior draws simulates S environments at once. Returns integer arrays of the
    batch shape (..., K).
    """
    spend = np.asarray(spend, dtype=float)
    if spend.ndim == 0 or spend.shape[-1] != params.n_channels:
        raise SchemaError(f"spend must have shape (..., {params.n_channels}); got {spend.shape}")
    if not np.all(np.isfinite(spend)) or np.any(spend < 0):
        raise SchemaError("spend must be finite and >= 0")
    holiday = np.broadcast_to(np.asarray(holiday, dtype=float), spend.shape[:-1])
    mu_imp = expected_impressions(params, spend, holiday)
    impressions = _negative_binomial(rng, mu_imp, np.broadcast_to(params.imp_phi, mu_imp.shape))
    mu_clk = expected_clicks_given_impressions(params, impressions, holiday)
    clicks = np.minimum(_negative_binomial(rng, mu_clk, np.broadcast_to(params.clk_phi, mu_clk.shape)), impressions)
    acquisitions = rng.binomial(clicks, np.broadcast_to(params.conversion, clicks.shape))
    return {"impressions": impressions, "clicks": clicks, "acquisitions": acquisitions}


# --- the talk's reward --------------------------------------------------------------------------

#: Cost of spend in reward units: log-clicks given up per thousand currency units spent.
DEFAULT_COST_WEIGHT = 0.02


def reward(clicks: np.ndarray, spend: np.ndarray, cost_weight: float = DEFAULT_COST_WEIGHT) -> np.ndarray:
    """The talk's reward: a log-based function of link clicks, net of spend, summed over channels.

    ``r = sum_k log1p(clicks_k) - cost_weight * sum_k spend_k``

    ``log1p(clicks)`` counts clicks with diminishing value (the tenth thousand clicks of a day are
    worth less than the first); ``cost_weight`` prices a thousand currency units of spend in those
    log-click units (0.02: spending 1,000 is worth it if it lifts a channel's clicks by ~2%).
    Arrays of shape (..., K) give a reward of shape (...,).
    """
    clicks = np.asarray(clicks, dtype=float)
    spend = np.asarray(spend, dtype=float)
    if clicks.shape != spend.shape:
        raise SchemaError(f"clicks {clicks.shape} and spend {spend.shape} must have the same shape")
    if np.any(clicks < 0) or np.any(spend < 0) or not np.all(np.isfinite(clicks)) or not np.all(np.isfinite(spend)):
        raise SchemaError("clicks and spend must be finite and >= 0")
    return np.log1p(clicks).sum(axis=-1) - cost_weight * spend.sum(axis=-1)


# --- the human-like historical policy and the generator -----------------------------------------

#: Historical split of the monthly budget, as a marketing team would keep it year after year.
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

    Each month gets a budget drawn uniformly from ``monthly_budget`` (thousands), paced evenly over
    its days, split by fixed ``shares``, lifted by ``holiday_uplift`` on holidays, with day-to-day
    log-normal noise: the variation a regression needs to see the response curve.
    """
    holidays = holiday_flags(dates)
    months = dates.to_period("M")
    spend = np.empty((len(dates), len(shares)))
    for month in months.unique():
        mask = np.asarray(months == month)
        daily = rng.uniform(*monthly_budget) / mask.sum()
        noise = rng.lognormal(-0.5 * noise_sd**2, noise_sd, size=(mask.sum(), len(shares)))
        lift = 1.0 + holiday_uplift * holidays[mask][:, None]
        spend[mask] = daily * shares * lift * noise
    return np.round(spend, 3)


def generate_funnel(
    params: ChannelParams = TRUE_PARAMS,
    start: str = "2016-07-01",
    n_days: int = 730,
    seed: int = DATASET_SEED,
) -> pd.DataFrame:
    """Daily channel logs in the funnel schema, from ``params`` and the human-like policy."""
    if n_days <= 0:
        raise SchemaError(f"n_days must be positive, got {n_days}")
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=n_days, freq="D")
    spend = human_spend(dates, rng, shares=HUMAN_SHARES[: params.n_channels] / HUMAN_SHARES[: params.n_channels].sum())
    holidays = holiday_flags(dates)
    day = simulate_funnel(params, spend, holidays, rng)
    k = params.n_channels
    frame = pd.DataFrame({
        "date": np.repeat(dates.values, k),
        "channel": np.tile(np.array(params.channels, dtype=object), n_days),
        "spend": spend.reshape(-1),
        "holiday": np.repeat(holidays, k),
        "impressions": day["impressions"].reshape(-1),
        "clicks": day["clicks"].reshape(-1),
        "acquisitions": day["acquisitions"].reshape(-1),
    })
    return validate_funnel(frame)


# --- schema validation and loading --------------------------------------------------------------


def _first_bad_row(frame: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
    bad = np.flatnonzero(np.asarray(mask))
    rows = ", ".join(str(frame.index[i]) for i in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"row(s) {rows}{more}"


def validate_funnel(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a table against the funnel schema; return a typed copy, sorted by date and channel.

    Raises :class:`~pulse_lib.errors.SchemaError` naming the column and the rows at fault for:
    missing columns, values of the wrong type, NaNs, negative spend or counts, non-integer counts,
    holiday flags other than 0/1, clicks above impressions, acquisitions above clicks, and
    duplicated (date, channel) rows.
    """
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"funnel table is missing column(s) {missing}; it has {list(frame.columns)}")
    if frame.empty:
        raise SchemaError("funnel table has no rows")
    columns = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in frame.columns]
    out = frame[columns].copy()

    for name in columns:
        if out[name].isna().any():
            raise SchemaError(f"column {name!r} has missing values (NaN) at {_first_bad_row(out, out[name].isna())}")

    dates = pd.to_datetime(out["date"], errors="coerce")
    if dates.isna().any():
        raise SchemaError(f"column 'date' has values that are not dates at {_first_bad_row(out, dates.isna())}")
    out["date"] = dates.dt.normalize()
    out["channel"] = out["channel"].astype(str)

    numeric = {name: pd.to_numeric(out[name], errors="coerce") for name in columns if name not in ("date", "channel")}
    for name, values in numeric.items():
        if values.isna().any():
            raise SchemaError(f"column {name!r} has non-numeric values at {_first_bad_row(out, values.isna())}")
        if not np.all(np.isfinite(values.to_numpy(dtype=float))):
            raise SchemaError(f"column {name!r} has infinite values at {_first_bad_row(out, ~np.isfinite(values.to_numpy(dtype=float)))}")
    if (numeric["spend"] < 0).any():
        raise SchemaError(f"column 'spend' is negative at {_first_bad_row(out, numeric['spend'] < 0)}")
    out["spend"] = numeric["spend"].astype("float64")
    if not numeric["holiday"].isin([0, 1]).all():
        raise SchemaError(f"column 'holiday' must be 0 or 1; bad at {_first_bad_row(out, ~numeric['holiday'].isin([0, 1]))}")
    out["holiday"] = numeric["holiday"].astype("int64")
    for name in COUNT_COLUMNS:
        if name not in numeric:
            continue
        values = numeric[name]
        if (values < 0).any():
            raise SchemaError(f"column {name!r} is negative at {_first_bad_row(out, values < 0)}")
        if (values != np.round(values)).any():
            raise SchemaError(f"column {name!r} must hold whole counts; fractional at {_first_bad_row(out, values != np.round(values))}")
        out[name] = values.astype("int64")
    if (out["clicks"] > out["impressions"]).any():
        raise SchemaError(f"column 'clicks' exceeds 'impressions' at {_first_bad_row(out, out['clicks'] > out['impressions'])}")
    if "acquisitions" in out and (out["acquisitions"] > out["clicks"]).any():
        raise SchemaError(f"column 'acquisitions' exceeds 'clicks' at {_first_bad_row(out, out['acquisitions'] > out['clicks'])}")
    duplicated = out.duplicated(["date", "channel"], keep=False)
    if duplicated.any():
        raise SchemaError(f"(date, channel) pairs repeat at {_first_bad_row(out, duplicated)}")
    return out.sort_values(["date", "channel"], kind="stable").reset_index(drop=True)


def load_funnel(path: str | Path) -> pd.DataFrame:
    """Read a funnel table from CSV or Parquet and validate it (see :func:`validate_funnel`)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"no funnel table at {path}")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix in (".csv", ".gz"):
            frame = pd.read_csv(path)
        else:
            raise DataFormatError(f"{path}: unknown table format {path.suffix!r}; use .csv or .parquet")
    except DataFormatError:
        raise
    except Exception as exc:
        raise DataFormatError(f"{path}: cannot be read as a table ({type(exc).__name__}: {exc})") from exc
    return validate_funnel(frame)


def shipped_dataset_dir(version: int = DATASET_VERSION) -> Path:
    from pulse_lib.book import datasets_dir

    return datasets_dir() / "funnel" / f"v{version}"


def load_shipped_funnel(version: int = DATASET_VERSION) -> tuple[pd.DataFrame, ChannelParams]:
    """The versioned synthetic funnel shipped in ``datasets/funnel/`` and its ground truth."""
    folder = shipped_dataset_dir(version)
    frame = load_funnel(folder / "funnel.csv")
    truth = ChannelParams.from_dict(json.loads((folder / "truth.json").read_text()))
    return frame, truth


def write_shipped_funnel(folder: Path | None = None) -> Path:
    """Regenerate the shipped dataset (table and ground truth) atomically. Returns its folder."""
    folder = folder or shipped_dataset_dir()
    frame = generate_funnel()
    with atomic_path(folder / "funnel.csv") as tmp:
        frame.to_csv(tmp, index=False, date_format="%Y-%m-%d")
    meta = {"version": DATASET_VERSION, "seed": DATASET_SEED, "start": "2016-07-01", "n_days": 730,
            "cost_weight": DEFAULT_COST_WEIGHT, **TRUE_PARAMS.to_dict()}
    with atomic_write(folder / "truth.json", "w") as handle:
        json.dump(meta, handle, indent=2)
    return folder


if __name__ == "__main__":
    print(f"wrote {write_shipped_funnel()}")
