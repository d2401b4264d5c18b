"""A coupon-allocation simulator in the setting of BCORLE(λ) (Zhang et al., NeurIPS
2021).

The published setting: ``N`` users followed for 30 days; every day each user receives
one coupon whose value is one of 21 values 0.1, 0.2, ..., 2.1; three user types (low
retention below 0.2, uniform, high retention 0.8-1.0). The state is 44 numbers: the day,
the user type, how many coupons of each value the user has received, and how many of
those were followed by a return the next day. The reward is the next-day return (0 or
1); the cost is the coupon's value.

The response model below is ours (the paper does not publish one): a user's base return
probability ``p0`` is drawn by type; a coupon of value ``v`` lifts it with diminishing
returns, ``p = b + (1 - b) * g_type * (1 - exp(-v / v_scale))``; and a habit term moves
the base toward the user's own past return rate, ``b_t = p0 + habit * (mean past returns
- p0)``, so today's coupon changes tomorrow's state and the problem is sequential.
Everything is vectorised over users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.validation import check_array, check_fields, check_probabilities

#: Number of coupon values and the values themselves (0.1 .. 2.1).
N_ACTIONS: int = 21
COUPON_VALUES: np.ndarray = np.round(0.1 + 0.1 * np.arange(N_ACTIONS), 10)
#: User types, in the order of the state's ``user_type`` field.
USER_TYPES: tuple[str, ...] = ("low", "uniform", "high")
#: State layout: day, user type, 21 coupon counts, 21 return counts.
STATE_DIM: int = 2 + 2 * N_ACTIONS

#: A policy maps a batch of states ``(n, 44)`` to coupon indices ``(n,)`` in ``0..20``.
Policy = Callable[[np.ndarray], np.ndarray]


def check_initial_states(initial_states: np.ndarray) -> None:
    """Start states: a non-empty ``(n, STATE_DIM)`` array, else a ``SchemaError``."""
    if (
        initial_states.ndim != 2
        or initial_states.shape[1] != STATE_DIM
        or len(initial_states) == 0
    ):
        raise SchemaError(
            f"initial_states must have shape (n>0, {STATE_DIM}), got "
            f"{initial_states.shape}"
        )


@dataclass(frozen=True)
class CouponSimConfig:
    """Every setting of the simulator (defaults: the published size and our response
    model)."""

    n_users: int = 10_000  # users simulated (the published 10,000)
    horizon: int = 30  # days per episode (the published 30)
    # low, uniform, high retention
    type_shares: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    #: Range of the base return probability ``p0`` for each type (uniform within it).
    p0_ranges: tuple[tuple[float, float], ...] = ((0.0, 0.2), (0.0, 1.0), (0.8, 1.0))
    #: Coupon sensitivity ``g`` per type: the fraction of the headroom ``1 - b`` a huge
    #: coupon fills.
    sensitivity: tuple[float, float, float] = (0.6, 0.5, 0.3)
    #: Value scale of the diminishing lift ``1 - exp(-v / v_scale)``.
    v_scale: float = 0.8
    #: Weight of the user's own past return rate in today's base probability.
    habit: float = 0.4
    #: The 21 coupon values (action index -> value), each >= 0.
    coupon_values: tuple[float, ...] = field(
        default_factory=lambda: tuple(COUPON_VALUES.tolist())
    )

    def __post_init__(self) -> None:
        check_fields(
            self,
            integer=("n_users", "horizon"),
            positive=("n_users", "horizon", "v_scale"),
            ranges={"habit": (0.0, 1.0, "[)")},
        )
        check_probabilities(
            "CouponSimConfig.type_shares",
            self.type_shares,
            shape=(3,),
            rows_sum_to_one=True,
            atol=1e-9,
            error=ConfigError,
        )
        check_array(
            "CouponSimConfig.p0_ranges",
            self.p0_ranges,
            shape=(3, 2),
            low=0.0,
            high=1.0,
            error=ConfigError,
        )
        check_array(
            "CouponSimConfig.sensitivity",
            self.sensitivity,
            shape=(3,),
            low=0.0,
            high=1.0,
            error=ConfigError,
        )
        check_array(
            "CouponSimConfig.coupon_values",
            self.coupon_values,
            shape=(N_ACTIONS,),
            low=0.0,
            error=ConfigError,
        )
        if self.n_users < 1 or self.horizon < 1:
            raise ConfigError(
                f"n_users and horizon must be >= 1, got {self.n_users}, {self.horizon}"
            )
        if (
            len(self.type_shares) != 3
            or abs(sum(self.type_shares) - 1) > 1e-9
            or min(self.type_shares) < 0
        ):
            raise ConfigError(
                "type_shares must be 3 non-negative shares summing to "
                f"1, got {self.type_shares}"
            )
        for lo, hi in self.p0_ranges:
            if not 0 <= lo <= hi <= 1:
                raise ConfigError(
                    f"p0 range ({lo}, {hi}) must satisfy 0 <= lo <= hi <= 1"
                )
        if not all(0 <= g <= 1 for g in self.sensitivity):
            raise ConfigError(
                f"sensitivity values must lie in [0, 1], got {self.sensitivity}"
            )
        if not 0 <= self.habit < 1:
            raise ConfigError(f"habit must lie in [0, 1), got {self.habit}")
        if len(self.coupon_values) != N_ACTIONS:
            raise ConfigError(
                f"expected {N_ACTIONS} coupon values, got {len(self.coupon_values)}"
            )


@dataclass
class UserPopulation:
    """The hidden per-user parameters: type index and base return probability."""

    user_type: np.ndarray  # (n,) int in {0, 1, 2}
    p0: np.ndarray  # (n,) float in [0, 1]


def sample_users(
    config: CouponSimConfig, rng: np.random.Generator, n_users: int | None = None
) -> UserPopulation:
    """Draw ``n_users`` (default ``config.n_users``) users: a type, then ``p0``
    within the type's range."""
    n = config.n_users if n_users is None else n_users
    user_type = rng.choice(3, size=n, p=np.asarray(config.type_shares))
    ranges = np.asarray(config.p0_ranges)
    p0 = rng.uniform(ranges[user_type, 0], ranges[user_type, 1])
    return UserPopulation(user_type=user_type, p0=p0)


def encode_state(
    day: int, user_type: np.ndarray, coupons: np.ndarray, returns: np.ndarray
) -> np.ndarray:
    """The 44-number state, as float32: ``[day, type, coupons per value (21), returns
    per value (21)]``."""
    n = user_type.shape[0]
    state = np.empty((n, STATE_DIM), dtype=np.float32)
    state[:, 0] = day
    state[:, 1] = user_type
    state[:, 2 : 2 + N_ACTIONS] = coupons
    state[:, 2 + N_ACTIONS :] = returns
    return state


def return_probability(
    config: CouponSimConfig,
    p0: np.ndarray,
    user_type: np.ndarray,
    past_rate: np.ndarray | None,
    action: np.ndarray,
) -> np.ndarray:
    """Probability that each user returns tomorrow, given today's coupon index
    ``action``.

    ``past_rate`` is the user's fraction of past days followed by a return (``None`` on
    day 0).
    """
    values = np.asarray(config.coupon_values)[action]
    base = p0 if past_rate is None else p0 + config.habit * (past_rate - p0)
    g = np.asarray(config.sensitivity)[user_type]
    lift = g * (1.0 - np.exp(-values / config.v_scale))
    return np.clip(base + (1.0 - base) * lift, 0.0, 1.0)


@dataclass
class Episodes:
    """Logged user-days, flattened user-major: row ``u * horizon + t`` is user ``u``
    on day ``t``."""

    observations: np.ndarray  # (M, 44) float32
    actions: np.ndarray  # (M,) int64
    rewards: np.ndarray  # (M,) float32: next-day return
    costs: np.ndarray  # (M,) float32: coupon value
    next_observations: np.ndarray  # (M, 44) float32
    terminals: np.ndarray  # (M,) float32: 1 on the last day
    # (M, 21) float32: logging policy's action probabilities
    behaviour_probs: np.ndarray | None
    propensities: np.ndarray | None  # (M,) float32: probability of the logged action
    # (M,) int: hidden type (for analysis only, also in the state)
    user_type: np.ndarray
    # (M,) float: hidden base probability (for analysis only, never a model input)
    p0: np.ndarray
    horizon: int

    def __len__(self) -> int:
        return int(self.actions.shape[0])


#: A stochastic policy maps states ``(n, 44)`` to action probabilities ``(n, 21)``.
StochasticPolicy = Callable[[np.ndarray], np.ndarray]


def simulate(
    config: CouponSimConfig,
    policy: Policy | None = None,
    *,
    rng: np.random.Generator,
    stochastic_policy: StochasticPolicy | None = None,
    n_users: int | None = None,
) -> Episodes:
    """Run ``n_users`` users for ``config.horizon`` days under a policy; return every
    transition.

    Give exactly one of ``policy`` (deterministic: states -> indices) or
    ``stochastic_policy`` (states -> probabilities; the probabilities are recorded as
    propensities).
    """
    if (policy is None) == (stochastic_policy is None):
        raise ConfigError("give exactly one of policy= or stochastic_policy=")
    users = sample_users(config, rng, n_users)
    n, horizon = users.user_type.shape[0], config.horizon
    coupons = np.zeros((n, N_ACTIONS), dtype=np.float32)
    returns = np.zeros((n, N_ACTIONS), dtype=np.float32)
    n_returned = np.zeros(n)
    obs = np.empty((horizon, n, STATE_DIM), dtype=np.float32)
    nxt = np.empty_like(obs)
    act = np.empty((horizon, n), dtype=np.int64)
    rew = np.empty((horizon, n), dtype=np.float32)
    probs_all = (
        np.empty((horizon, n, N_ACTIONS), dtype=np.float32)
        if stochastic_policy
        else None
    )
    rows = np.arange(n)
    for t in range(horizon):
        state = encode_state(t, users.user_type, coupons, returns)
        obs[t] = state
        if stochastic_policy is not None:
            probs = _check_probs(stochastic_policy(state), n)
            probs_all[t] = probs
            # inverse-CDF sampling, one uniform per user (vectorised)
            a = (
                (probs.cumsum(axis=1) < rng.random((n, 1)))
                .sum(axis=1)
                .clip(max=N_ACTIONS - 1)
            )
        else:
            a = _check_actions(policy(state), n)
        past = None if t == 0 else n_returned / t
        p = return_probability(config, users.p0, users.user_type, past, a)
        came_back = (rng.random(n) < p).astype(np.float32)
        coupons[rows, a] += 1
        returns[rows, a] += came_back
        n_returned += came_back
        act[t], rew[t] = a, came_back
        nxt[t] = encode_state(t + 1, users.user_type, coupons, returns)

    # user-major order keeps each user's days contiguous (episode = user)
    def flat(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(
            np.swapaxes(x, 0, 1).reshape(n * horizon, *x.shape[2:])
        )

    actions = flat(act)
    terminals = np.zeros((n, horizon), dtype=np.float32)
    terminals[:, -1] = 1
    values = np.asarray(config.coupon_values, dtype=np.float32)
    bprobs = flat(probs_all) if probs_all is not None else None
    return Episodes(
        observations=flat(obs),
        actions=actions,
        rewards=flat(rew),
        costs=values[actions],
        next_observations=flat(nxt),
        terminals=terminals.reshape(-1),
        behaviour_probs=bprobs,
        propensities=None
        if bprobs is None
        else bprobs[np.arange(actions.size), actions],
        user_type=np.repeat(users.user_type, horizon),
        p0=np.repeat(users.p0, horizon),
        horizon=horizon,
    )


def _check_probs(probs: np.ndarray, n: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n, N_ACTIONS):
        raise SchemaError(
            f"a stochastic policy must return shape ({n}, {N_ACTIONS}), "
            f"got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise SchemaError("policy probabilities contain NaN, inf or negative values")
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > 1e-5)
    if bad.size:
        raise SchemaError(
            f"policy probabilities of row {bad[0]} sum to {sums[bad[0]]:.6f}, not 1"
        )
    return probs


def _check_actions(actions: np.ndarray, n: int) -> np.ndarray:
    actions = np.asarray(actions)
    if actions.shape != (n,):
        raise SchemaError(f"a policy must return shape ({n},), got {actions.shape}")
    if actions.size and (actions.min() < 0 or actions.max() >= N_ACTIONS):
        raise SchemaError(
            f"coupon indices must lie in 0..{N_ACTIONS - 1}, got "
            f"{actions.min()}..{actions.max()}"
        )
    return actions.astype(np.int64)


def logging_policy(
    epsilon: float = 0.3,
    centres: tuple[float, float, float] = (1.2, 0.9, 0.5),
    width: float = 0.5,
    config: CouponSimConfig | None = None,
) -> StochasticPolicy:
    """The historical (behaviour) policy: a per-type bell over coupon values mixed with
    uniform.

    Marketers gave larger coupons to low-retention users; ``epsilon`` of the mass is
    uniform, so every action has probability at least ``epsilon / 21`` (needed by
    importance sampling).
    """
    if not 0 < epsilon <= 1:
        raise ConfigError(f"epsilon must lie in (0, 1], got {epsilon}")
    values = np.asarray((config or CouponSimConfig()).coupon_values)
    bells = np.exp(
        -0.5 * ((values[None, :] - np.asarray(centres)[:, None]) / width) ** 2
    )
    table = (1 - epsilon) * bells / bells.sum(
        axis=1, keepdims=True
    ) + epsilon / N_ACTIONS

    def probs(states: np.ndarray) -> np.ndarray:
        return table[states[:, 1].astype(int)]

    return probs


@dataclass(frozen=True)
class PolicyValue:
    """A policy's true per-user-day retention and cost, with Monte-Carlo standard
    errors."""

    retention: float
    cost: float
    retention_se: float
    cost_se: float
    n_users: int


def evaluate_policy(
    config: CouponSimConfig,
    policy: Policy | None = None,
    *,
    n_users: int = 50_000,
    seed: int = 12345,
    stochastic_policy: StochasticPolicy | None = None,
) -> PolicyValue:
    """Ground truth by Monte Carlo: run ``n_users`` fresh users; mean return rate and
    cost per user-day.

    The standard errors are over users (each user's 30-day mean is one independent
    draw).
    """
    eps = simulate(
        config,
        policy,
        rng=np.random.default_rng(seed),
        stochastic_policy=stochastic_policy,
        n_users=n_users,
    )
    per_user_r = eps.rewards.reshape(n_users, config.horizon).mean(axis=1)
    per_user_c = eps.costs.reshape(n_users, config.horizon).mean(axis=1)
    return PolicyValue(
        retention=float(per_user_r.mean()),
        cost=float(per_user_c.mean()),
        retention_se=float(per_user_r.std(ddof=1) / np.sqrt(n_users)),
        cost_se=float(per_user_c.std(ddof=1) / np.sqrt(n_users)),
        n_users=n_users,
    )


def exact_type_retention(
    config: CouponSimConfig, user_type: int, action: int, n_quad: int = 64
) -> float:
    """Exact expected retention per user-day of users of one type who always get coupon
    ``action``.

    Such a policy ignores the history, so a user's number of past returns ``k`` is a
    Markov chain with ``p_t(k) = return_probability(p0, past_rate=k/t)``; we propagate
    its distribution day by day and integrate over ``p0`` (uniform on the type's range)
    with Gauss-Legendre quadrature.
    """
    if user_type not in (0, 1, 2) or not 0 <= action < N_ACTIONS:
        raise ConfigError(
            "user_type must be 0, 1 or 2 and action in "
            f"0..{N_ACTIONS - 1}; got {user_type}, {action}"
        )
    nodes, weights = np.polynomial.legendre.leggauss(n_quad)
    lo, hi = config.p0_ranges[user_type]
    p0 = lo + (hi - lo) * (nodes + 1) / 2  # quadrature nodes mapped to [lo, hi]
    w = weights / 2  # uniform density on [lo, hi] times the Jacobian: sums to one
    types = np.full(n_quad, user_type)
    actions = np.full(n_quad, action)
    ks = np.arange(config.horizon + 1)
    dist = np.zeros((n_quad, config.horizon + 1))
    dist[:, 0] = 1.0  # distribution of the number of past returns
    expected = np.zeros(n_quad)
    for t in range(config.horizon):
        if t == 0:
            p = np.repeat(
                return_probability(config, p0, types, None, actions)[:, None],
                ks.size,
                axis=1,
            )
        else:
            p = return_probability(
                config, p0[:, None], types[:, None], ks[None, :] / t, actions[:, None]
            )
        expected += (dist * p).sum(axis=1)
        new = dist * (1 - p)
        new[:, 1:] += (dist * p)[:, :-1]
        dist = new
    return float(np.sum(w * expected) / config.horizon)


def exact_retention_table(config: CouponSimConfig) -> np.ndarray:
    """``(3, 21)`` table: exact retention per user-day of each type under each
    constant coupon."""
    return np.array(
        [
            [exact_type_retention(config, k, a) for a in range(N_ACTIONS)]
            for k in range(3)
        ]
    )


def exact_retention_by_type(
    config: CouponSimConfig, actions_by_type: tuple[int, int, int]
) -> float:
    """Exact retention per user-day of the policy giving type ``k`` the coupon
    ``actions_by_type[k]``."""
    return float(
        sum(
            share * exact_type_retention(config, k, actions_by_type[k])
            for k, share in enumerate(config.type_shares)
            if share > 0
        )
    )
