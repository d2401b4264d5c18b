"""A month of daily budget allocation over marketing channels, simulated from a posterior.

Part II of the book, after the PyCon APAC 2018 talk: a marketer holds a budget for a 30-day
period and decides every day how much of what is left to spend, and how to split it across the
K channels. The day's funnel follows :func:`pulse_lib.funnel.simulate_funnel`; the reward is
:func:`pulse_lib.funnel.reward`.

The environment is a *posterior* simulator: given :class:`~pulse_lib.funnel.ChannelParams` with
a draw axis ``(S, K)``, each episode draws one parameter set, so an agent trained on it faces the
uncertainty the Bayesian model has about the channels. Given a single parameter set ``(K,)``
(the truth, or the posterior mean), every episode uses it.

Two front ends share one step function (:func:`step_batch`), so their dynamics are identical:

* :class:`BudgetEnv`, a :class:`gymnasium.Env` (one episode at a time);
* :class:`BatchedBudgetEnv`, many episodes per call in NumPy (what PPO trains on).

Action (shape ``(K + 1,)``, each entry in ``[0, 1]``): entry 0 is the fraction of the remaining
budget to spend today; entries 1..K are split weights, normalised to sum to one (all-zero weights
mean an even split). So spend is never negative and the budget is never exceeded, by design.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.funnel import DEFAULT_COST_WEIGHT, HUMAN_SHARES, ChannelParams, holiday_flags, reward, simulate_funnel

#: Observation layout (K channels): 7 scalars, then K last-day log-clicks, then K last-day spends.
SCALAR_FEATURES: tuple[str, ...] = (
    "day_fraction",  # t / T
    "days_left_fraction",  # (T - t) / T
    "holiday_today",  # 1 if today is a holiday
    "holidays_ahead",  # share of holidays among the next `holidays_ahead_days` days
    "budget_left_fraction",  # remaining / budget
    "pace_ratio",  # (remaining / days left) / (budget / T): > 1 means behind the even pace
    "budget_size",  # budget / largest budget of the range
)


@dataclasses.dataclass(frozen=True)
class BudgetEnvConfig:
    """Settings of the budget environment (every episode is one budget period)."""

    horizon_days: int = 30  #: days per episode (the budget period)
    budget_range: tuple[float, float] = (1500.0, 2600.0)  #: budget per period, thousands, uniform
    cost_weight: float = DEFAULT_COST_WEIGHT  #: price of spend in the reward (funnel.reward)
    holidays_ahead_days: int = 7  #: look-ahead window of the holiday feature
    calendar_start: str = "2016-07-01"  #: first possible start date of an episode
    calendar_days: int = 730  #: episodes start on one of these days
    clicks_scale: float = 10.0  #: log1p(clicks) is divided by this in the observation

    def __post_init__(self) -> None:
        if self.horizon_days < 1:
            raise ConfigError(f"horizon_days must be >= 1, got {self.horizon_days}")
        low, high = self.budget_range
        if not (0 < low <= high) or not np.isfinite(high):
            raise ConfigError(f"budget_range must satisfy 0 < low <= high < inf, got {self.budget_range}")
        if self.cost_weight < 0 or not np.isfinite(self.cost_weight):
            raise ConfigError(f"cost_weight must be finite and >= 0, got {self.cost_weight}")
        if self.holidays_ahead_days < 1 or self.calendar_days < 1 or self.clicks_scale <= 0:
            raise ConfigError("holidays_ahead_days, calendar_days and clicks_scale must be positive")

    def holiday_calendar(self) -> np.ndarray:
        """Holiday flags of every day an episode can touch (start days plus look-ahead)."""
        n = self.calendar_days + self.horizon_days + self.holidays_ahead_days
        return holiday_flags(pd.date_range(self.calendar_start, periods=n, freq="D"))


def obs_dim(n_channels: int) -> int:
    """Length of the observation vector for ``n_channels`` channels."""
    return len(SCALAR_FEATURES) + 2 * n_channels


def observation_names(channels: tuple[str, ...]) -> list[str]:
    """Name of every observation entry, in order."""
    return [*SCALAR_FEATURES, *(f"log_clicks_{c}" for c in channels), *(f"spend_{c}" for c in channels)]


@dataclasses.dataclass
class BatchState:
    """The state of N synchronous episodes (all start and end on the same step)."""

    t: int  #: today's index, 0..T (T: episode over)
    budget: np.ndarray  #: (N,) budget of each episode
    remaining: np.ndarray  #: (N,) budget left
    holidays: np.ndarray  #: (N, T + look-ahead) holiday flags from each episode's start day
    last_clicks: np.ndarray  #: (N, K) yesterday's clicks
    last_spend: np.ndarray  #: (N, K) yesterday's spend
    params: ChannelParams  #: (N, K) the parameters each episode runs on
    draw_index: np.ndarray  #: (N,) index of the posterior draw (-1 for a single parameter set)
    start_index: np.ndarray  #: (N,) start day in the calendar

    @property
    def n(self) -> int:
        return int(self.budget.shape[0])


def _per_episode_params(params: ChannelParams, draws: np.ndarray | None, n: int) -> tuple[ChannelParams, np.ndarray]:
    if params.n_draws is None:
        fields: dict[str, Any] = {
            f: np.broadcast_to(getattr(params, f), (n, params.n_channels)).copy() for f in params.ARRAY_FIELDS
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
    """Start N episodes: draw budgets, start days and (with a posterior) parameter draws.

    Random numbers are taken in a fixed order (budget, start, draw) so a batch of one and the
    gymnasium environment seeded alike start identically. Passing ``budgets``/``starts``/``draws``
    fixes them (for evaluation on common episodes); the RNG is still advanced the same way.
    """
    if n < 1:
        raise ConfigError(f"need at least one episode, got n={n}")
    k = params.n_channels
    drawn_budgets = rng.uniform(*config.budget_range, size=n)
    drawn_starts = rng.integers(0, config.calendar_days, size=n)
    drawn_draws = rng.integers(0, params.n_draws, size=n) if params.n_draws is not None else None
    budgets = drawn_budgets if budgets is None else _fixed("budgets", budgets, n, float)
    starts = drawn_starts if starts is None else _fixed("starts", starts, n, np.int64)
    if draws is not None:
        if params.n_draws is None:
            raise ConfigError("draws were given but the parameters have no draw axis")
        draws = _fixed("draws", draws, n, np.int64)
        if np.any((draws < 0) | (draws >= params.n_draws)):
            raise ConfigError(f"draw indices must lie in [0, {params.n_draws}); got {draws.min()}..{draws.max()}")
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
        raise ConfigError(f"{name} must have one value per episode ({n}); got shape {array.shape}")
    return array


def observe(state: BatchState, config: BudgetEnvConfig) -> np.ndarray:
    """Observation (N, 7 + 2K) of every episode, float32."""
    horizon = config.horizon_days
    t = state.t
    days_left = horizon - t
    n = state.n
    today = state.holidays[:, t] if t < horizon else np.zeros(n)
    ahead = state.holidays[:, t + 1 : t + 1 + config.holidays_ahead_days].mean(axis=1)
    even_daily = state.budget / horizon
    pace = (state.remaining / days_left) / even_daily if days_left > 0 else np.zeros(n)
    scalars = np.stack(
        [
            np.full(n, t / horizon),
            np.full(n, days_left / horizon),
            today,
            ahead,
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
    """Check a batch of actions (N, K + 1): finite and inside [0, 1]. Returns float64 copy."""
    array = np.asarray(actions, dtype=np.float64)
    if array.shape != (n, n_channels + 1):
        raise SchemaError(f"actions must have shape ({n}, {n_channels + 1}) [fraction, K split weights]; got {array.shape}")
    bad_nan = ~np.isfinite(array)
    if bad_nan.any():
        row, col = np.argwhere(bad_nan)[0]
        raise SchemaError(f"action row {row}, entry {col} is {array[row, col]}: actions must be finite")
    bad_range = (array < 0) | (array > 1)
    if bad_range.any():
        row, col = np.argwhere(bad_range)[0]
        raise SchemaError(f"action row {row}, entry {col} is {array[row, col]}: every action entry must lie in [0, 1]")
    return array


def actions_to_spend(actions: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Spend (N, K) of validated actions: fraction of ``remaining`` times the normalised split."""
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
    """Inverse of :func:`actions_to_spend`: the action that spends ``spend`` (N, K), capped at ``remaining``."""
    spend = np.asarray(spend, dtype=float)
    if spend.ndim != 2 or spend.shape[0] != remaining.shape[0]:
        raise SchemaError(f"spend must have shape (N, K) with N={remaining.shape[0]}; got {spend.shape}")
    if not np.all(np.isfinite(spend)) or np.any(spend < 0):
        raise SchemaError("spend must be finite and >= 0")
    total = spend.sum(axis=1)
    fraction = np.where(remaining > 0, np.minimum(total / np.where(remaining > 0, remaining, 1.0), 1.0), 0.0)
    weights = np.where(total[:, None] > 0, spend / np.where(total > 0, total, 1.0)[:, None], 0.0)
    return np.concatenate([fraction[:, None], weights], axis=1)


def step_batch(
    state: BatchState, actions: Any, config: BudgetEnvConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Advance N episodes by one day (in place). Returns the reward (N,) and the day's funnel.

    This is the one step function behind both :class:`BudgetEnv` and :class:`BatchedBudgetEnv`.
    """
    if state.t >= config.horizon_days:
        raise ConfigError("the episode is over: call reset() before step()")
    actions = validate_actions(actions, state.n, state.params.n_channels)
    spend = actions_to_spend(actions, state.remaining)
    holiday = state.holidays[:, state.t]
    day = simulate_funnel(state.params, spend, holiday, rng)
    rewards = reward(day["clicks"], spend, config.cost_weight)
    state.remaining = np.maximum(state.remaining - spend.sum(axis=1), 0.0)
    state.last_clicks = day["clicks"].astype(float)
    state.last_spend = spend
    state.t += 1
    return rewards, {**day, "spend": spend}


class BatchedBudgetEnv:
    """N budget episodes stepped together in NumPy; same dynamics as :class:`BudgetEnv`.

    All episodes have the same length, so they start and end on the same call; ``step`` returns
    ``done=True`` on the last day and the caller resets.
    """

    def __init__(self, params: ChannelParams, n_envs: int, config: BudgetEnvConfig | None = None) -> None:
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
            self.params, self.config, self.calendar, self.n_envs, self.rng, budgets=budgets, starts=starts, draws=draws
        )
        return observe(self.state, self.config)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, bool, dict[str, np.ndarray]]:
        """One day for every episode: (observations, rewards, done, funnel of the day)."""
        if self.state is None:
            raise ConfigError("call reset() before step()")
        rewards, info = step_batch(self.state, actions, self.config, self.rng)
        done = self.state.t >= self.config.horizon_days
        return observe(self.state, self.config), rewards, done, info


class BudgetEnv(gym.Env):
    """One budget period as a :class:`gymnasium.Env` (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, params: ChannelParams, config: BudgetEnvConfig | None = None) -> None:
        super().__init__()
        self.params = params
        self.config = config or BudgetEnvConfig()
        self.calendar = self.config.holiday_calendar()
        k = params.n_channels
        low = np.zeros(obs_dim(k), dtype=np.float32)
        high = np.full(obs_dim(k), np.inf, dtype=np.float32)
        high[:5] = 1.0
        high[5] = float(self.config.horizon_days)  # pace ratio is at most T (all budget left, one day)
        high[6] = 1.0
        self.observation_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = gym.spaces.Box(low=0.0, high=1.0, shape=(k + 1,), dtype=np.float32)
        self.state: BatchState | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode. ``options`` may fix ``budget``, ``start`` (calendar day) and ``draw``."""
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"budget", "start", "draw"}
        if unknown:
            raise ConfigError(f"unknown reset option(s) {sorted(unknown)}; known: budget, start, draw")
        self.state = reset_batch(
            self.params, self.config, self.calendar, 1, self.np_random,
            budgets=options.get("budget"), starts=options.get("start"), draws=options.get("draw"),
        )
        return observe(self.state, self.config)[0], self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.state is None:
            raise ConfigError("call reset() before step()")
        array = np.asarray(action, dtype=np.float64)
        if array.shape != (self.params.n_channels + 1,):
            raise SchemaError(f"action must have shape ({self.params.n_channels + 1},); got {array.shape}")
        rewards, day = step_batch(self.state, array[None, :], self.config, self.np_random)
        terminated = self.state.t >= self.config.horizon_days
        info = self._info()
        info.update({name: value[0] for name, value in day.items()})
        return observe(self.state, self.config)[0], float(rewards[0]), terminated, False, info

    def _info(self) -> dict[str, Any]:
        assert self.state is not None
        return {
            "remaining": float(self.state.remaining[0]),
            "budget": float(self.state.budget[0]),
            "draw": int(self.state.draw_index[0]),
        }


# --- posteriors and reference policies ----------------------------------------------------------


def synthetic_posterior(
    truth: ChannelParams, n_draws: int, scale: float, rng: np.random.Generator, *, shift: bool = True
) -> ChannelParams:
    """Stand-in posterior: draws around a centre that itself misses the truth (as real posteriors do).

    With ``shift=True`` the centre is ``truth + scale * N(0, 1)`` on each location parameter,
    then draws are ``centre + scale * N(0, 1)``: a calibrated-looking posterior of width ``scale``
    (in log units) whose mean differs from the truth. Dispersions and conversion are kept.
    """
    if truth.n_draws is not None:
        raise SchemaError("truth must be a single parameter set (K,)")
    if n_draws < 1 or scale < 0 or not np.isfinite(scale):
        raise ConfigError(f"need n_draws >= 1 and a finite scale >= 0; got {n_draws}, {scale}")
    k = truth.n_channels
    located = ("imp_intercept", "imp_spend", "imp_holiday", "clk_intercept", "clk_impressions", "clk_holiday")
    fields: dict[str, Any] = {}
    for name in truth.ARRAY_FIELDS:
        value = np.asarray(getattr(truth, name))
        if name in located:
            centre = value + (scale * rng.standard_normal(k) if shift else 0.0)
            fields[name] = centre + scale * rng.standard_normal((n_draws, k))
        else:
            fields[name] = np.broadcast_to(value, (n_draws, k)).copy()
    # elasticities stay positive: a channel whose spend lowers impressions is not in this model
    for name in ("imp_spend", "clk_impressions"):
        fields[name] = np.abs(fields[name])
    return dataclasses.replace(truth, **fields)


def even_policy(obs: np.ndarray, state: BatchState, config: BudgetEnvConfig) -> np.ndarray:
    """Spend the remaining budget evenly over the days left, split evenly over channels."""
    days_left = config.horizon_days - state.t
    k = state.params.n_channels
    return np.concatenate([np.full((state.n, 1), 1.0 / days_left), np.full((state.n, k), 1.0 / k)], axis=1)


def static_plan_policy(shares: np.ndarray) -> Any:
    """Even pacing with fixed channel ``shares`` (e.g. an optimizer's answer)."""
    shares = np.asarray(shares, dtype=float)
    if shares.ndim != 1 or np.any(shares < 0) or not np.isclose(shares.sum(), 1.0):
        raise SchemaError(f"shares must be a non-negative vector summing to 1; got {shares}")

    def policy(obs: np.ndarray, state: BatchState, config: BudgetEnvConfig) -> np.ndarray:
        days_left = config.horizon_days - state.t
        return np.concatenate([np.full((state.n, 1), 1.0 / days_left), np.tile(shares, (state.n, 1))], axis=1)

    return policy


def human_policy(
    rng: np.random.Generator,
    shares: np.ndarray = HUMAN_SHARES,
    holiday_uplift: float = 0.3,
    noise_sd: float = 0.35,
) -> Any:
    """The historical marketer of :func:`pulse_lib.funnel.human_spend`, acting in the environment.

    Budget paced evenly (budget / T a day), fixed ``shares``, +30% on holidays, log-normal
    day-to-day noise; capped by what is left. Uses its own ``rng`` so it does not disturb the
    environment's random stream.
    """
    shares = np.asarray(shares, dtype=float)

    def policy(obs: np.ndarray, state: BatchState, config: BudgetEnvConfig) -> np.ndarray:
        daily = state.budget / config.horizon_days
        lift = 1.0 + holiday_uplift * state.holidays[:, state.t]
        noise = rng.lognormal(-0.5 * noise_sd**2, noise_sd, size=(state.n, shares.size))
        spend = (daily * lift)[:, None] * shares * noise
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


def expected_daily_value(params: ChannelParams, spend: np.ndarray, cost_weight: float = DEFAULT_COST_WEIGHT) -> np.ndarray:
    """Plug-in daily value of spend (..., K) on a normal day: sum_k log1p(E[clicks | E[impressions]]) - cost.

    A smooth stand-in for the expected reward, used by the planners below. With posterior draws
    (S, K) it returns one value per draw.
    """
    spend = np.asarray(spend, dtype=float)
    imp = np.exp(params.imp_intercept + params.imp_spend * np.log1p(spend))
    clicks = np.exp(params.clk_intercept + params.clk_impressions * np.log1p(imp / 1000.0))
    return np.log1p(clicks).sum(axis=-1) - cost_weight * spend.sum(axis=-1)


def plan_shares(params: ChannelParams, daily_budget: float, cost_weight: float = DEFAULT_COST_WEIGHT) -> np.ndarray:
    """Channel shares that maximise the plug-in daily value, averaged over draws if any (scipy SLSQP).

    The whole daily budget is split (the talk's marketers spend their budget); with a single
    parameter set this is the plan of that set, with draws (S, K) the robust (Bayes) plan.
    """
    from scipy.optimize import minimize

    if daily_budget <= 0:
        raise ConfigError(f"daily_budget must be > 0, got {daily_budget}")
    k = params.n_channels

    def negative_value(shares: np.ndarray) -> float:
        return -float(np.mean(expected_daily_value(params, daily_budget * np.clip(shares, 0, None), cost_weight)))

    start = np.full(k, 1.0 / k)
    result = minimize(
        negative_value, start, method="SLSQP", bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda s: s.sum() - 1.0}], options={"ftol": 1e-12, "maxiter": 500},
    )
    if not result.success:
        raise ConfigError(f"the planner did not converge: {result.message}")
    shares = np.clip(result.x, 0.0, None)
    return shares / shares.sum()


def planner_policy(params: ChannelParams, config: BudgetEnvConfig | None = None, grid_points: int = 9) -> Any:
    """Even pacing with the channel split of :func:`plan_shares` for each episode's budget.

    Shares are planned on ``grid_points`` daily budgets spanning ``config.budget_range`` and
    interpolated linearly (they change slowly with the budget). With the true parameters this is
    the book's oracle; with the posterior mean, the plug-in plan; with draws, the robust plan.
    """
    config = config or BudgetEnvConfig()
    if grid_points < 2:
        raise ConfigError(f"grid_points must be >= 2, got {grid_points}")
    daily_grid = np.linspace(*config.budget_range, grid_points) / config.horizon_days
    table = np.stack([plan_shares(params, d, config.cost_weight) for d in daily_grid])

    def shares_for(daily: np.ndarray) -> np.ndarray:
        shares = np.stack([np.interp(daily, daily_grid, table[:, k]) for k in range(table.shape[1])], axis=1)
        return shares / shares.sum(axis=1, keepdims=True)

    def policy(obs: np.ndarray, state: BatchState, cfg: BudgetEnvConfig) -> np.ndarray:
        days_left = cfg.horizon_days - state.t
        shares = shares_for(state.budget / cfg.horizon_days)
        return np.concatenate([np.full((state.n, 1), 1.0 / days_left), shares], axis=1)

    policy.shares_table = table  # type: ignore[attr-defined]
    policy.daily_grid = daily_grid  # type: ignore[attr-defined]
    return policy
