"""A month of daily budget allocation over marketing channels, simulated from a
posterior.

Part II of the book, after the PyCon APAC 2018 talk: a marketer holds a budget for a
30-day period and decides every day how much of what is left to spend, and how to split
it across the K channels. The day's funnel follows
:func:`pulse_lib.funnel.simulate_funnel`; the reward is :func:`pulse_lib.funnel.reward`.

The environment is a *posterior* simulator: given
:class:`~pulse_lib.funnel.ChannelParams` with a draw axis ``(S, K)``, each episode draws
one parameter set, so an agent trained on it faces the uncertainty the Bayesian model
has about the channels. Given a single parameter set ``(K,)`` (the truth, or the
posterior mean), every episode uses it.

Two front ends share one step function (:func:`step_batch`), so their dynamics are
identical:

* :class:`BudgetEnv`, a :class:`gymnasium.Env` (one episode at a time);
* :class:`BatchedBudgetEnv`, many episodes per call in NumPy (what PPO trains on).

The budget range of an episode and the logged spend range of every channel come from the
fitted table (:meth:`BudgetEnvConfig.from_table`); the environment warns once when a
policy spends outside what was logged, where the simulator extrapolates.

Action (shape ``(K + 1,)``, each entry in ``[0, 1]``): entry 0 is the fraction of the
remaining budget to spend today; entries 1..K are split weights, normalised to sum to
one (all-zero weights mean an even split). So spend is never negative and the budget is
never exceeded, by design.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pandas as pd

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.funnel import (
    DEFAULT_COST_WEIGHT,
    HUMAN_SHARES,
    TRUE_PARAMS,
    VALUE_PER_CLICK,
    ChannelParams,
    expected_clicks,
    holiday_flags,
    organic_clicks,
    reward,
    simulate_funnel,
    validate_funnel,
)
from pulse_lib.validation import check_fields, check_positive, parse_date

#: The historical marketer's shares by channel name
#: (:data:`pulse_lib.funnel.HUMAN_SHARES`).
HUMAN_SHARES_BY_CHANNEL: dict[str, float] = dict(
    zip(TRUE_PARAMS.channels, HUMAN_SHARES.tolist())
)


class SpendRangeWarning(UserWarning):
    """A policy spent outside the range the response model was fitted on
    (extrapolation)."""


#: Observation layout (K channels): 8 scalars, then K last-day log-clicks, then K
#: last-day spends.
SCALAR_FEATURES: tuple[str, ...] = (
    "day_fraction",  # t / T
    "days_left_fraction",  # (T - t) / T
    "holiday_today",  # 1 if today is a holiday
    "holidays_ahead",  # share of holidays among the next `holidays_ahead_days` days
    # share of holidays among the days left in the period (today included)
    "holidays_left",
    "budget_left_fraction",  # remaining / budget
    # (remaining / days left) / (budget / T): > 1 means behind the even pace
    "pace_ratio",
    "budget_size",  # budget / largest budget of the range
)


@dataclasses.dataclass(frozen=True)
class BudgetEnvConfig:
    """Settings of the budget environment (every episode is one budget period)."""

    horizon_days: int = 30  #: days per episode (the budget period)
    #: budget per period, thousands
    budget_range: tuple[float, float] = (1500.0, 2600.0)
    #: price of spend in the reward (funnel.reward)
    cost_weight: float = DEFAULT_COST_WEIGHT
    #: currency value of a click (funnel.reward)
    value_per_click: float = VALUE_PER_CLICK
    organic: bool = True  #: add the day's expected organic clicks to the reward
    holidays_ahead_days: int = 7  #: look-ahead window of the holiday feature
    calendar_start: str = "2016-07-01"  #: first possible start date of an episode
    calendar_days: int = 730  #: episodes start on one of these days
    clicks_scale: float = 12.0  #: log1p(clicks) is divided by this in the observation
    #: channel names of ``logged_spend`` (checked against the parameters), or None
    channels: tuple[str, ...] | None = None
    #: per channel (low, high) of the positive daily spend logged in the fitted table;
    #: None: no extrapolation warning
    logged_spend: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        counts = ("horizon_days", "holidays_ahead_days", "calendar_days")
        check_fields(
            self,
            integer=counts,
            positive=(*counts, "clicks_scale"),
            non_negative=("cost_weight", "value_per_click"),
            boolean=("organic",),
        )
        pair = self.budget_range
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise ConfigError(
                f"BudgetEnvConfig.budget_range must be a (low, high) pair, got {pair!r}"
            )
        for i, bound in enumerate(self.budget_range):
            check_positive(f"BudgetEnvConfig.budget_range[{i}]", bound)
        parse_date("BudgetEnvConfig.calendar_start", self.calendar_start, "%Y-%m-%d")
        low, high = self.budget_range
        if not (0 < low <= high) or not np.isfinite(high):
            raise ConfigError(
                "budget_range must satisfy 0 < low <= high < inf, got "
                f"{self.budget_range}"
            )
        if self.logged_spend is not None:
            if self.channels is None or len(self.channels) != len(self.logged_spend):
                raise ConfigError(
                    "logged_spend needs one (low, high) per channel and the channel "
                    "names "
                    f"in `channels`; got {self.logged_spend} for channels "
                    f"{self.channels}"
                )
            for ch, (lo, hi) in zip(self.channels, self.logged_spend):
                if not 0 <= lo <= hi:
                    raise ConfigError(
                        f"logged_spend of {ch!r} must satisfy 0 <= low <= high"
                    )

    @classmethod
    def from_table(
        cls,
        frame: Any,
        channels: Sequence[str] | None = None,
        horizon_days: int = 30,
        quantiles: tuple[float, float] = (0.1, 0.9),
        **overrides: Any,
    ) -> BudgetEnvConfig:
        """A configuration whose ranges come from a fitted funnel table.

        The budget range spans the ``quantiles`` of the table's total spend over every
        window
        of ``horizon_days`` consecutive days; ``logged_spend`` is each channel's
        smallest and
        largest positive daily spend, in the order ``channels`` (the posterior's
        channels;
        default: sorted names). ``calendar_start`` is the table's first day.
        """
        table = validate_funnel(frame)
        names = (
            tuple(sorted(table["channel"].unique()))
            if channels is None
            else tuple(channels)
        )
        missing = sorted(set(names) - set(table["channel"]))
        if missing:
            raise SchemaError(
                f"channels {missing} are not in the table (it has "
                f"{sorted(table['channel'].unique())})"
            )
        daily = table.groupby("date")["spend"].sum().sort_index()
        daily = daily.reindex(
            pd.date_range(daily.index.min(), daily.index.max()), fill_value=0
        )
        if len(daily) < horizon_days:
            raise SchemaError(
                f"the table covers {len(daily)} days, fewer than "
                f"horizon_days={horizon_days}"
            )
        windows = daily.rolling(horizon_days).sum().dropna()
        low, high = (float(q) for q in np.quantile(windows, quantiles))
        ranges = []
        for ch in names:
            spend = table.loc[(table["channel"] == ch) & (table["spend"] > 0), "spend"]
            if spend.empty:
                raise SchemaError(f"channel {ch!r} has no day with positive spend")
            ranges.append((float(spend.min()), float(spend.max())))
        settings: dict[str, Any] = {
            "horizon_days": horizon_days,
            "budget_range": (low, high),
            "channels": names,
            "logged_spend": tuple(ranges),
            "calendar_start": str(daily.index.min().date()),
        }
        settings.update(overrides)
        return cls(**settings)

    def holiday_calendar(self) -> np.ndarray:
        """Holiday flags of every day an episode can touch (start days plus
        look-ahead)."""
        n = self.calendar_days + self.horizon_days + self.holidays_ahead_days
        return holiday_flags(pd.date_range(self.calendar_start, periods=n, freq="D"))

    def spend_bounds(
        self, channels: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Logged (low, high) spend per channel in the order ``channels``, or None."""
        if self.logged_spend is None or self.channels is None:
            return None
        missing = [c for c in channels if c not in self.channels]
        if missing:
            raise SchemaError(
                f"the parameters' channels {list(channels)} include {missing}, which "
                "the "
                f"configuration's logged spend ranges (channels {list(self.channels)}) "
                "lack"
            )
        order = [self.channels.index(c) for c in channels]
        bounds = np.asarray(self.logged_spend, dtype=float)[order]
        return bounds[:, 0], bounds[:, 1]


def obs_dim(n_channels: int) -> int:
    """Length of the observation vector for ``n_channels`` channels."""
    return len(SCALAR_FEATURES) + 2 * n_channels


def observation_names(channels: tuple[str, ...]) -> list[str]:
    """Name of every observation entry, in order."""
    return [
        *SCALAR_FEATURES,
        *(f"log_clicks_{c}" for c in channels),
        *(f"spend_{c}" for c in channels),
    ]


@dataclasses.dataclass
class BatchState:
    """The state of N synchronous episodes (all start and end on the same step)."""

    t: int  #: today's index, 0..T (T: episode over)
    budget: np.ndarray  #: (N,) budget of each episode
    remaining: np.ndarray  #: (N,) budget left
    #: (N, T + look-ahead) holiday flags from each episode's start day
    holidays: np.ndarray
    last_clicks: np.ndarray  #: (N, K) yesterday's clicks
    last_spend: np.ndarray  #: (N, K) yesterday's spend
    params: ChannelParams  #: (N, K) the parameters each episode runs on
    #: (N,) index of the posterior draw (-1 for a single parameter set)
    draw_index: np.ndarray
    start_index: np.ndarray  #: (N,) start day in the calendar

    @property
    def n(self) -> int:
        return int(self.budget.shape[0])


def _per_episode_params(
    params: ChannelParams, draws: np.ndarray | None, n: int
) -> tuple[ChannelParams, np.ndarray]:
    if params.n_draws is None:
        fields: dict[str, Any] = {
            f: np.broadcast_to(getattr(params, f), (n, params.n_channels)).copy()
            for f in params.ARRAY_FIELDS
        }
        tiled = dataclasses.replace(params, **fields)
        return tiled, np.full(n, -1, dtype=np.int64)
    assert draws is not None
    return params.draw(draws), draws


def reset_batch(
    params: ChannelParams,
    config: BudgetEnvConfig,
    calendar: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    budgets: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    draws: np.ndarray | None = None,
) -> BatchState:
    """Start N episodes: draw budgets, start days and (with a posterior) parameter
    draws.

    Random numbers are taken in a fixed order (budget, start, draw) so a batch of one
    and the gymnasium environment seeded alike start identically. Passing
    ``budgets``/``starts``/``draws`` fixes them (for evaluation on common episodes); the
    RNG is still advanced the same way.
    """
    if n < 1:
        raise ConfigError(f"need at least one episode, got n={n}")
    k = params.n_channels
    drawn_budgets = rng.uniform(*config.budget_range, size=n)
    drawn_starts = rng.integers(0, config.calendar_days, size=n)
    drawn_draws = (
        rng.integers(0, params.n_draws, size=n) if params.n_draws is not None else None
    )
    budgets = drawn_budgets if budgets is None else _fixed("budgets", budgets, n, float)
    starts = drawn_starts if starts is None else _fixed("starts", starts, n, np.int64)
    if draws is not None:
        if params.n_draws is None:
            raise ConfigError("draws were given but the parameters have no draw axis")
        draws = _fixed("draws", draws, n, np.int64)
        if np.any((draws < 0) | (draws >= params.n_draws)):
            raise ConfigError(
                f"draw indices must lie in [0, {params.n_draws}); got "
                f"{draws.min()}..{draws.max()}"
            )
    else:
        draws = drawn_draws
    if np.any(budgets <= 0) or not np.all(np.isfinite(budgets)):
        raise ConfigError("budgets must be finite and > 0")
    if np.any((starts < 0) | (starts >= config.calendar_days)):
        raise ConfigError(f"start days must lie in [0, {config.calendar_days})")
    window = config.horizon_days + config.holidays_ahead_days
    holidays = calendar[starts[:, None] + np.arange(window)[None, :]]
    episode_params, draw_index = _per_episode_params(params, draws, n)
    return BatchState(
        t=0,
        budget=budgets.astype(float),
        remaining=budgets.astype(float).copy(),
        holidays=holidays.astype(np.int64),
        last_clicks=np.zeros((n, k)),
        last_spend=np.zeros((n, k)),
        params=episode_params,
        draw_index=draw_index,
        start_index=starts.astype(np.int64),
    )


def _fixed(name: str, values: Any, n: int, dtype: Any) -> np.ndarray:
    array = np.asarray(values, dtype=dtype).reshape(-1)
    if array.size == 1:
        array = np.full(n, array[0], dtype=dtype)
    if array.shape != (n,):
        raise ConfigError(
            f"{name} must have one value per episode ({n}); got shape {array.shape}"
        )
    return array


def observe(state: BatchState, config: BudgetEnvConfig) -> np.ndarray:
    """Observation (N, 8 + 2K) of every episode, float32."""
    horizon = config.horizon_days
    t = state.t
    days_left = horizon - t
    n = state.n
    today = state.holidays[:, t] if t < horizon else np.zeros(n)
    ahead = state.holidays[:, t + 1 : t + 1 + config.holidays_ahead_days].mean(axis=1)
    left = state.holidays[:, t:horizon].mean(axis=1) if t < horizon else np.zeros(n)
    even_daily = state.budget / horizon
    pace = (state.remaining / days_left) / even_daily if days_left > 0 else np.zeros(n)
    scalars = np.stack(
        [
            np.full(n, t / horizon),
            np.full(n, days_left / horizon),
            today,
            ahead,
            left,
            state.remaining / state.budget,
            pace,
            state.budget / config.budget_range[1],
        ],
        axis=1,
    )
    clicks = np.log1p(state.last_clicks) / config.clicks_scale
    spend = state.last_spend / even_daily[:, None]
    return np.concatenate([scalars, clicks, spend], axis=1).astype(np.float32)


def validate_actions(actions: Any, n: int, n_channels: int) -> np.ndarray:
    """Check a batch of actions (N, K + 1): finite and inside [0, 1]. Returns float64
    copy."""
    array = np.asarray(actions, dtype=np.float64)
    if array.shape != (n, n_channels + 1):
        raise SchemaError(
            f"actions must have shape ({n}, {n_channels + 1}) [fraction, "
            f"K split weights]; got {array.shape}"
        )
    bad_nan = ~np.isfinite(array)
    if bad_nan.any():
        row, col = np.argwhere(bad_nan)[0]
        raise SchemaError(
            f"action row {row}, entry {col} is {array[row, col]}: "
            "actions must be finite"
        )
    bad_range = (array < 0) | (array > 1)
    if bad_range.any():
        row, col = np.argwhere(bad_range)[0]
        raise SchemaError(
            f"action row {row}, entry {col} is {array[row, col]}: every "
            "action entry must lie in [0, 1]"
        )
    return array


def actions_to_spend(actions: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Spend (N, K) of validated actions: fraction of ``remaining`` times the
    normalised split."""
    fraction = actions[:, 0]
    weights = actions[:, 1:]
    total = weights.sum(axis=1, keepdims=True)
    k = weights.shape[1]
    # all-zero weights are the documented "even split", not a repair
    split = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 1.0 / k)
    spend = (fraction * remaining)[:, None] * split
    # guard the invariant against rounding: the day's total never exceeds what is left
    day_total = spend.sum(axis=1)
    over = day_total > remaining
    if over.any():
        spend[over] *= (remaining[over] / day_total[over])[:, None]
    return spend


def spend_to_actions(spend: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Inverse of :func:`actions_to_spend`: the action that spends ``spend`` (N, K),
    capped at ``remaining``."""
    spend = np.asarray(spend, dtype=float)
    if spend.ndim != 2 or spend.shape[0] != remaining.shape[0]:
        raise SchemaError(
            f"spend must have shape (N, K) with N={remaining.shape[0]}; "
            f"got {spend.shape}"
        )
    if not np.all(np.isfinite(spend)) or np.any(spend < 0):
        raise SchemaError("spend must be finite and >= 0")
    total = spend.sum(axis=1)
    fraction = np.where(
        remaining > 0,
        np.minimum(total / np.where(remaining > 0, remaining, 1.0), 1.0),
        0.0,
    )
    weights = np.where(
        total[:, None] > 0, spend / np.where(total > 0, total, 1.0)[:, None], 0.0
    )
    return np.concatenate([fraction[:, None], weights], axis=1)


def step_batch(
    state: BatchState, actions: Any, config: BudgetEnvConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Advance N episodes by one day (in place). Returns the reward (N,) and the day's
    funnel.

    This is the one step function behind both :class:`BudgetEnv` and
    :class:`BatchedBudgetEnv`. The day's record also holds ``spend`` and
    ``outside_logged`` (N, K): True where a positive spend left the configuration's
    logged range (all False without one).
    """
    if state.t >= config.horizon_days:
        raise ConfigError("the episode is over: call reset() before step()")
    actions = validate_actions(actions, state.n, state.params.n_channels)
    spend = actions_to_spend(actions, state.remaining)
    holiday = state.holidays[:, state.t]
    day = simulate_funnel(state.params, spend, holiday, rng)
    organic = organic_clicks(holiday) if config.organic else 0.0
    rewards = reward(
        day["clicks"], spend, config.cost_weight, config.value_per_click, organic
    )
    state.remaining = np.maximum(state.remaining - spend.sum(axis=1), 0.0)
    state.last_clicks = day["clicks"].astype(float)
    state.last_spend = spend
    state.t += 1
    bounds = config.spend_bounds(state.params.channels)
    if bounds is None:
        outside = np.zeros(spend.shape, dtype=bool)
    else:
        low, high = bounds
        outside = (spend > 0) & (
            (spend < low * (1 - 1e-9)) | (spend > high * (1 + 1e-9))
        )
    return rewards, {**day, "spend": spend, "outside_logged": outside}


def _warn_outside(
    info: dict[str, np.ndarray], config: BudgetEnvConfig, channels: Sequence[str]
) -> bool:
    """Warn (once per environment: the caller keeps the flag) about extrapolated
    spend."""
    outside = info["outside_logged"]
    if not outside.any():
        return False
    row, k = np.argwhere(outside)[0]
    low, high = config.spend_bounds(channels)  # type: ignore[misc]
    warnings.warn(
        f"spend {info['spend'][row, k]:.4g} on channel {channels[k]!r} is outside the "
        "logged "
        f"range [{low[k]:.4g}, {high[k]:.4g}] (thousands) of the fitted table: the "
        "simulator "
        "extrapolates the response model there (this warning is shown once per "
        "environment)",
        SpendRangeWarning,
        stacklevel=3,
    )
    return True


class BatchedBudgetEnv:
    """N budget episodes stepped together in NumPy; same dynamics as :class:`BudgetEnv`.

    All episodes have the same length, so they start and end on the same call; ``step``
    returns ``done=True`` on the last day and the caller resets.
    """

    def __init__(
        self, params: ChannelParams, n_envs: int, config: BudgetEnvConfig | None = None
    ) -> None:
        if n_envs < 1:
            raise ConfigError(f"n_envs must be >= 1, got {n_envs}")
        self.params = params
        self.n_envs = int(n_envs)
        self.config = config or BudgetEnvConfig()
        self.calendar = self.config.holiday_calendar()
        self.n_channels = params.n_channels
        self.obs_dim = obs_dim(params.n_channels)
        self.action_dim = params.n_channels + 1
        self.rng = np.random.default_rng()
        self.state: BatchState | None = None
        #: True once the extrapolation warning was shown (it is shown once per
        #: environment)
        self.warned_outside_range = False
        # the channels must match the config's
        self.config.spend_bounds(params.channels)

    def reset(
        self,
        seed: int | None = None,
        *,
        budgets: np.ndarray | None = None,
        starts: np.ndarray | None = None,
        draws: np.ndarray | None = None,
    ) -> np.ndarray:
        """Start ``n_envs`` new episodes; returns observations (N, obs_dim)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.state = reset_batch(
            self.params,
            self.config,
            self.calendar,
            self.n_envs,
            self.rng,
            budgets=budgets,
            starts=starts,
            draws=draws,
        )
        return observe(self.state, self.config)

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, bool, dict[str, np.ndarray]]:
        """One day for every episode: (observations, rewards, done, funnel of the
        day)."""
        if self.state is None:
            raise ConfigError("call reset() before step()")
        rewards, info = step_batch(self.state, actions, self.config, self.rng)
        if not self.warned_outside_range:
            self.warned_outside_range = _warn_outside(
                info, self.config, self.params.channels
            )
        done = self.state.t >= self.config.horizon_days
        return observe(self.state, self.config), rewards, done, info


class BudgetEnv(gym.Env):
    """One budget period as a :class:`gymnasium.Env` (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self, params: ChannelParams, config: BudgetEnvConfig | None = None
    ) -> None:
        super().__init__()
        self.params = params
        self.config = config or BudgetEnvConfig()
        self.calendar = self.config.holiday_calendar()
        k = params.n_channels
        low = np.zeros(obs_dim(k), dtype=np.float32)
        high = np.full(obs_dim(k), np.inf, dtype=np.float32)
        high[:6] = 1.0
        # pace ratio <= T (all budget left, one day)
        high[6] = float(self.config.horizon_days)
        high[7] = 1.0
        self.observation_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)
        self.warned_outside_range = False
        # the channels must match the config's
        self.config.spend_bounds(params.channels)
        self.action_space = gym.spaces.Box(
            low=0.0, high=1.0, shape=(k + 1,), dtype=np.float32
        )
        self.state: BatchState | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode. ``options`` may fix ``budget``, ``start`` (calendar day)
        and ``draw``."""
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"budget", "start", "draw"}
        if unknown:
            raise ConfigError(
                f"unknown reset option(s) {sorted(unknown)}; known: budget, start, draw"
            )
        self.state = reset_batch(
            self.params,
            self.config,
            self.calendar,
            1,
            self.np_random,
            budgets=options.get("budget"),
            starts=options.get("start"),
            draws=options.get("draw"),
        )
        return observe(self.state, self.config)[0], self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.state is None:
            raise ConfigError("call reset() before step()")
        array = np.asarray(action, dtype=np.float64)
        if array.shape != (self.params.n_channels + 1,):
            raise SchemaError(
                "action must have shape "
                f"({self.params.n_channels + 1},); got {array.shape}"
            )
        rewards, day = step_batch(
            self.state, array[None, :], self.config, self.np_random
        )
        if not self.warned_outside_range:
            self.warned_outside_range = _warn_outside(
                day, self.config, self.params.channels
            )
        terminated = self.state.t >= self.config.horizon_days
        info = self._info()
        info.update({name: value[0] for name, value in day.items()})
        return (
            observe(self.state, self.config)[0],
            float(rewards[0]),
            terminated,
            False,
            info,
        )

    def _info(self) -> dict[str, Any]:
        assert self.state is not None
        return {
            "remaining": float(self.state.remaining[0]),
            "budget": float(self.state.budget[0]),
            "draw": int(self.state.draw_index[0]),
        }


# --- posteriors and reference policies
# ----------------------------------------------------------


def synthetic_posterior(
    truth: ChannelParams,
    n_draws: int,
    scale: float,
    rng: np.random.Generator,
    *,
    shift: bool = True,
) -> ChannelParams:
    """Stand-in posterior: draws around a centre that itself misses the truth (as real
    posteriors do).

    With ``shift=True`` the centre is ``truth + scale * N(0, 1)`` on each location
    parameter, then draws are ``centre + scale * N(0, 1)``: a calibrated-looking
    posterior of width ``scale`` (in log units) whose mean differs from the truth.
    Dispersions and conversion are kept.
    """
    if truth.n_draws is not None:
        raise SchemaError("truth must be a single parameter set (K,)")
    if n_draws < 1 or scale < 0 or not np.isfinite(scale):
        raise ConfigError(
            f"need n_draws >= 1 and a finite scale >= 0; got {n_draws}, {scale}"
        )
    k = truth.n_channels
    located = (
        "imp_intercept",
        "imp_spend",
        "imp_holiday",
        "clk_intercept",
        "clk_impressions",
        "clk_holiday",
    )
    fields: dict[str, Any] = {}
    for name in truth.ARRAY_FIELDS:
        value = np.asarray(getattr(truth, name))
        if name in located:
            centre = value + (scale * rng.standard_normal(k) if shift else 0.0)
            fields[name] = centre + scale * rng.standard_normal((n_draws, k))
        else:
            fields[name] = np.broadcast_to(value, (n_draws, k)).copy()
    # elasticities stay positive: a channel whose spend lowers impressions is not in
    # this model
    for name in ("imp_spend", "clk_impressions"):
        fields[name] = np.abs(fields[name])
    return dataclasses.replace(truth, **fields)


def _shares_for(shares: Any, channels: Sequence[str], who: str) -> np.ndarray:
    """A share vector in the order of ``channels``, checked; ``shares`` may be a
    mapping."""
    if isinstance(shares, Mapping):
        names = [str(c) for c in shares]
        missing = [c for c in channels if c not in shares]
        extra = [c for c in names if c not in channels]
        if missing or extra:
            raise SchemaError(
                f"{who}: shares are given for channels {names}, but the parameters "
                "have "
                f"channels {list(channels)} (missing {missing}, unknown {extra})"
            )
        vector = np.array([float(shares[c]) for c in channels])
    else:
        vector = np.asarray(shares, dtype=float)
        if vector.ndim != 1 or vector.size != len(channels):
            raise SchemaError(
                f"{who}: {vector.size} shares {np.round(vector, 4).tolist()} for the "
                f"{len(channels)} channels {list(channels)} of the parameters; give "
                "one share "
                "per channel, best as a dict {channel: share}"
            )
    if (
        np.any(vector < 0)
        or not np.all(np.isfinite(vector))
        or not np.isclose(vector.sum(), 1)
    ):
        raise SchemaError(
            f"{who}: shares must be non-negative and sum to 1; got "
            f"{dict(zip(channels, np.round(vector, 4).tolist()))}"
        )
    return vector


def zero_policy(
    obs: np.ndarray, state: BatchState, config: BudgetEnvConfig
) -> np.ndarray:
    """Spend nothing: the organic baseline (0 % of the oracle's lift)."""
    return np.zeros((state.n, state.params.n_channels + 1))


def even_policy(
    obs: np.ndarray, state: BatchState, config: BudgetEnvConfig
) -> np.ndarray:
    """Spend the remaining budget evenly over the days left, split evenly over
    channels."""
    days_left = config.horizon_days - state.t
    k = state.params.n_channels
    return np.concatenate(
        [np.full((state.n, 1), 1.0 / days_left), np.full((state.n, k), 1.0 / k)], axis=1
    )


def static_plan_policy(shares: Any) -> Any:
    """Even pacing with fixed channel ``shares`` (a dict {channel: share}, or a vector
    in the order of the parameters' channels), checked against the channels at the first
    step."""
    if not isinstance(shares, Mapping):
        shares = np.asarray(shares, dtype=float)
        if shares.ndim != 1 or np.any(shares < 0) or not np.isclose(shares.sum(), 1.0):
            raise SchemaError(
                f"shares must be a non-negative vector summing to 1; got {shares}"
            )

    def policy(
        obs: np.ndarray, state: BatchState, config: BudgetEnvConfig
    ) -> np.ndarray:
        vector = _shares_for(shares, state.params.channels, "static_plan_policy")
        days_left = config.horizon_days - state.t
        return np.concatenate(
            [np.full((state.n, 1), 1.0 / days_left), np.tile(vector, (state.n, 1))],
            axis=1,
        )

    return policy


def human_policy(
    rng: np.random.Generator,
    shares: Any = None,
    holiday_uplift: float = 0.3,
    noise_sd: float = 0.35,
) -> Any:
    """The historical marketer of :func:`pulse_lib.funnel.human_spend`, acting in the
    env.

    Budget paced evenly (budget / T a day), fixed ``shares`` (default
    :data:`HUMAN_SHARES_BY_CHANNEL`; a dict {channel: share} or a vector in the order of
    the parameters' channels, checked against them with a message that names both), +30%
    on holidays, log-normal day-to-day noise; capped by what is left. Uses its own
    ``rng`` so it does not disturb the environment's random stream.
    """
    shares = HUMAN_SHARES_BY_CHANNEL if shares is None else shares

    def policy(
        obs: np.ndarray, state: BatchState, config: BudgetEnvConfig
    ) -> np.ndarray:
        vector = _shares_for(shares, state.params.channels, "human_policy")
        daily = state.budget / config.horizon_days
        lift = 1.0 + holiday_uplift * state.holidays[:, state.t]
        noise = rng.lognormal(-0.5 * noise_sd**2, noise_sd, size=(state.n, vector.size))
        spend = (daily * lift)[:, None] * vector * noise
        return spend_to_actions(spend, state.remaining)

    return policy


def run_policy(
    env: BatchedBudgetEnv,
    policy: Any,
    seed: int,
    **reset_kwargs: Any,
) -> dict[str, np.ndarray]:
    """Play one batch of episodes with ``policy(obs, state, config) -> actions``.

    Returns per-episode ``returns`` (N,), total ``spend`` (N,) and ``budget`` (N,).
    """
    obs = env.reset(seed=seed, **reset_kwargs)
    assert env.state is not None
    total = np.zeros(env.n_envs)
    spent = np.zeros(env.n_envs)
    done = False
    while not done:
        actions = policy(obs, env.state, env.config)
        obs, rewards, done, info = env.step(actions)
        total += rewards
        spent += info["spend"].sum(axis=1)
    return {"returns": total, "spend": spent, "budget": env.state.budget.copy()}


def expected_daily_value(
    params: ChannelParams,
    spend: np.ndarray,
    cost_weight: float = DEFAULT_COST_WEIGHT,
    value_per_click: float = VALUE_PER_CLICK,
    holiday: Any = 0.0,
) -> np.ndarray:
    """Expected value of the day's paid clicks net of spend, for spend (..., K).

    ``value_per_click / 1000 * sum_k E[clicks_k | spend_k] - cost_weight * sum_k
    spend_k`` (:func:`pulse_lib.funnel.expected_clicks`; organic clicks, the same for
    every policy, are left out). With posterior draws (S, K) it returns one value per
    draw.
    """
    spend = np.asarray(spend, dtype=float)
    clicks = expected_clicks(params, spend, holiday)
    return value_per_click / 1000.0 * clicks.sum(axis=-1) - cost_weight * spend.sum(
        axis=-1
    )


def plan_shares(
    params: ChannelParams,
    daily_budget: float,
    cost_weight: float = DEFAULT_COST_WEIGHT,
    value_per_click: float = VALUE_PER_CLICK,
) -> np.ndarray:
    """Channel shares that maximise the expected daily value on a normal day, averaged
    over draws if any (scipy SLSQP).

    The whole daily budget is split; with a single parameter set this is the plan of
    that set, with draws (S, K) the robust (Bayes) plan.
    """
    from scipy.optimize import minimize

    if daily_budget <= 0:
        raise ConfigError(f"daily_budget must be > 0, got {daily_budget}")
    k = params.n_channels

    def negative_value(shares: np.ndarray) -> float:
        spend = daily_budget * np.clip(shares, 0, None)
        return -float(
            np.mean(expected_daily_value(params, spend, cost_weight, value_per_click))
        )

    best: Any = None
    for start in (np.full(k, 1.0 / k), *np.eye(k) * 0.7 + 0.3 / k):
        result = minimize(
            negative_value,
            start,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda s: s.sum() - 1.0}],
            options={"ftol": 1e-12, "maxiter": 500},
        )
        if result.success and (best is None or result.fun < best.fun):
            best = result
    if best is None:
        raise ConfigError(f"the planner did not converge: {result.message}")
    shares = np.clip(best.x, 0.0, None)
    return shares / shares.sum()


def planner_policy(
    params: ChannelParams, config: BudgetEnvConfig | None = None, grid_points: int = 9
) -> Any:
    """The static planner: even pacing, with the channel split of :func:`plan_shares`
    for each episode's budget.

    Shares are planned on ``grid_points`` daily budgets spanning ``config.budget_range``
    and interpolated linearly. It ignores the calendar (every day is planned as a normal
    day). With the posterior's draws this is the robust static plan; with the posterior
    mean, the plug-in plan. The planned channels must be the environment's.
    """
    config = config or BudgetEnvConfig()
    if grid_points < 2:
        raise ConfigError(f"grid_points must be >= 2, got {grid_points}")
    daily_grid = np.linspace(*config.budget_range, grid_points) / config.horizon_days
    table = np.stack(
        [
            plan_shares(params, d, config.cost_weight, config.value_per_click)
            for d in daily_grid
        ]
    )

    def shares_for(daily: np.ndarray) -> np.ndarray:
        shares = np.stack(
            [np.interp(daily, daily_grid, table[:, k]) for k in range(table.shape[1])],
            axis=1,
        )
        return shares / shares.sum(axis=1, keepdims=True)

    def policy(obs: np.ndarray, state: BatchState, cfg: BudgetEnvConfig) -> np.ndarray:
        if state.params.channels != params.channels:
            raise SchemaError(
                f"planner_policy planned channels {list(params.channels)} but the "
                "environment "
                f"has {list(state.params.channels)}"
            )
        days_left = cfg.horizon_days - state.t
        shares = shares_for(state.budget / cfg.horizon_days)
        return np.concatenate([np.full((state.n, 1), 1.0 / days_left), shares], axis=1)

    policy.shares_table = table  # type: ignore[attr-defined]
    policy.daily_grid = daily_grid  # type: ignore[attr-defined]
    return policy


#: Largest elasticity b * e the closed-form planner accepts; a draw above it is planned
#: as if
#: at it (a convex response would put the whole budget on one day and channel).
MAX_PLANNED_ELASTICITY = 0.98


def plan_remaining(
    params: ChannelParams,
    holidays: np.ndarray,
    remaining: np.ndarray,
    cost_weight: float = DEFAULT_COST_WEIGHT,
    value_per_click: float = VALUE_PER_CLICK,
) -> np.ndarray:
    """Optimal spend (N, D, K) of what is left over the D days left, in expectation.

    ``params`` has shape (N, K) (one parameter set per episode) or (K,); ``holidays``
    (N, D) flags the days left; ``remaining`` (N,) is the budget left. Expected clicks
    are a power law ``V * s^beta`` in spend (:func:`pulse_lib.funnel.expected_clicks`),
    so the plan is in closed form: ``s = (W beta / (cost_weight + lam))^(1 / (1 -
    beta))`` with the multiplier ``lam >= 0`` of the budget found by bisection (0 when
    the budget does not bind).
    """
    holidays = np.asarray(holidays, dtype=float)
    remaining = np.asarray(remaining, dtype=float)
    n, _ = holidays.shape  # also: holidays must be 2-D
    from scipy.special import gammaln

    k = params.n_channels
    p = {
        f: np.broadcast_to(getattr(params, f), (n, k))[:, None, :]
        for f in params.ARRAY_FIELDS
    }
    hol = holidays[:, :, None]
    e = p["clk_impressions"]
    # log E[clicks] at spend 1 (funnel.expected_clicks with s = 1), per episode, day,
    # channel
    log_unit = (
        p["clk_intercept"]
        + p["clk_holiday"] * hol
        + e * (p["imp_intercept"] + p["imp_holiday"] * hol - np.log(1000.0))
        + gammaln(p["imp_phi"] + e)
        - gammaln(p["imp_phi"])
        - e * np.log(p["imp_phi"])
    )
    weight = value_per_click / 1000.0 * np.exp(log_unit)  # (N, D, K)
    beta = np.clip(p["imp_spend"] * e, 1e-6, MAX_PLANNED_ELASTICITY)

    def spend_at(price: np.ndarray) -> np.ndarray:
        return (weight * beta / price[:, None, None]) ** (1.0 / (1.0 - beta))

    floor = np.full(n, max(cost_weight, 1e-12))
    total = spend_at(floor).sum(axis=(1, 2))
    binds = total > remaining
    low, high = np.log(floor), np.log(floor) + 60.0
    for _ in range(50):  # bisection on log(price); the total falls as the price rises
        mid = 0.5 * (low + high)
        over = spend_at(np.exp(mid)).sum(axis=(1, 2)) > remaining
        low = np.where(over, mid, low)
        high = np.where(over, high, mid)
    price = np.where(binds, np.exp(high), floor)
    plan = spend_at(price)
    scale = np.where(
        plan.sum(axis=(1, 2)) > remaining,
        remaining / np.maximum(plan.sum(axis=(1, 2)), 1e-300),
        1.0,
    )
    return plan * scale[:, None, None]


def oracle_policy(
    obs: np.ndarray, state: BatchState, config: BudgetEnvConfig
) -> np.ndarray:
    """The book's oracle: each day, plan the rest of the period with the episode's own
    parameters and the calendar (:func:`plan_remaining`), and spend today's part.

    It knows the market each episode runs on (the truth, or the episode's posterior
    draw), so its expected return is the yardstick of 100 %. It optimises expected
    clicks; a policy may beat it by a hair on a noisy month.
    """
    return _follow_plan(state, config, state.params, "_oracle_plan")


def _follow_plan(
    state: BatchState, config: BudgetEnvConfig, params: ChannelParams, key: str
) -> np.ndarray:
    """Today's part of the plan for the rest of the period.

    Spend follows the plan exactly, and a plan for the days left with the budget left is
    the rest of the first day's plan, so the plan is made once per episode batch and
    cached on the state; it is made again if the budget left differs from the plan's.
    """
    cached = getattr(state, key, None)
    if cached is not None and cached[0] is not None:
        plan, start = cached
        left = state.remaining
        expected = plan[:, state.t - start :, :].sum(axis=(1, 2))
        if np.allclose(expected, left, rtol=1e-9, atol=1e-9):
            return spend_to_actions(plan[:, state.t - start, :], state.remaining)
    days = state.holidays[:, state.t : config.horizon_days]
    plan = plan_remaining(
        params, days, state.remaining, config.cost_weight, config.value_per_click
    )
    setattr(state, key, (plan, state.t))
    return spend_to_actions(plan[:, 0, :], state.remaining)


def dynamic_planner_policy(params: ChannelParams) -> Any:
    """The oracle's plan made with fixed parameters ``params`` (K,) (e.g. the posterior
    mean) whatever market the episode runs on: a plug-in planner that uses the
    calendar."""
    if params.n_draws is not None:
        raise SchemaError(
            "dynamic_planner_policy needs one parameter set (K,); use .mean()"
        )

    def policy(
        obs: np.ndarray, state: BatchState, config: BudgetEnvConfig
    ) -> np.ndarray:
        if state.params.channels != params.channels:
            raise SchemaError(
                f"dynamic_planner_policy planned channels {list(params.channels)} but "
                "the "
                f"environment has {list(state.params.channels)}"
            )
        return _follow_plan(state, config, params, "_plug_in_plan")

    return policy
