"""A surrogate of the PulseRL problem: users, daily send/no-send decisions, funnel
events.

The real logs cannot be downloaded here, so the book runs on this generator by default.
It has the release's schema (63 features in the release's order, binary action, logged
propensities) and a *ground truth* the real data lacks: any policy can be run online on
fresh users, which is what lets the chapters check offline RL and off-policy evaluation
against the truth.

The dynamics (see ``datasets/pulserl/DATACARD.md``): each user walks a
debt-renegotiation funnel — sign-up (registration), debt located, debt visualised, deal
— and may become an active app user. A message raises the daily chance of the next event
for *responsive* users and lowers it for *fatigue-prone* ones; fatigue builds with every
message and decays daily, and a tired user who gets one more message may opt out of the
channel (the episode ends with a penalty). Responsiveness and fatigue-proneness are
hidden, but depend on observed features (age group, score, objective), so a policy can
learn whom to contact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.pulserl.features import (
    ADDRESS_STATES,
    FEATURE_INDEX,
    FEATURE_NAMES,
    N_FEATURES,
    NEXT_FEATURE_NAMES,
    RECENCY_EVENTS,
)
from pulse_lib.validation import check_fields, parse_date

#: A policy maps observations ``(n, 63)`` to the probability of sending, shape ``(n,)``.
Policy = Callable[[np.ndarray], np.ndarray]

_STATE_WEIGHTS = np.array(
    [
        2,
        1,
        1,
        1,
        1,
        3,
        3,
        7,
        4,
        3,
        2,
        3,
        3,
        10,
        2,
        2,
        4,
        2,
        4,
        2,
        6,
        9,
        2,
        6,
        4,
        1,
        22,
        1,
        1,
        1,
        0.5,
        0.5,
    ],
    dtype=float,
)
_STATE_WEIGHTS /= _STATE_WEIGHTS.sum()


@dataclass(frozen=True)
class SimulatorConfig:
    """Every constant of the surrogate dynamics, visible and changeable."""

    horizon: int = 28  #: days per episode (the logging window of one user)
    #: discount of returns: the released code's gamma (quantile.gin)
    gamma: float = 0.99
    reward_registration: float = 1.0  #: a sign-up (registration) event
    reward_visualization: float = 0.5  #: the user looks at a located debt
    reward_deal: float = 3.0  #: a renegotiation deal
    reward_activation: float = 1.0  #: the user becomes an active app user
    #: per day as an active user: the released LTV bonus
    reward_active_day: float = 0.033
    penalty_opt_out: float = 5.0  #: a user who leaves the channel: lost future contact
    send_cost: float = 0.01  #: each message costs money and attention
    fatigue_decay: float = 0.7  #: fatigue carried to the next day
    #: how much fatigue (times proneness) lowers every event's logit
    fatigue_drag: float = 0.15
    opt_out_base: float = -7.0  #: logit of opting out on a message at zero fatigue
    #: rise of that logit per unit of fatigue x proneness
    opt_out_per_fatigue: float = 2.5
    #: hidden: share of fatigue-prone users in age groups 4-5
    prone_share_old: float = 0.85
    prone_share_other: float = 0.05  #: hidden: share of fatigue-prone users elsewhere
    start_date: str = "2020-10-27"  #: first day of the release's logs

    def __post_init__(self) -> None:
        check_fields(
            self,
            integer=("horizon",),
            positive=("horizon",),
            ranges={"gamma": (0.0, 1.0, "(]")},
            finite=(
                "reward_registration",
                "reward_visualization",
                "reward_deal",
                "reward_activation",
                "reward_active_day",
                "opt_out_base",
            ),
            non_negative=(
                "penalty_opt_out",
                "send_cost",
                "fatigue_drag",
                "opt_out_per_fatigue",
            ),
            probability=("fatigue_decay", "prone_share_old", "prone_share_other"),
        )
        parse_date("SimulatorConfig.start_date", self.start_date, "%Y-%m-%d")


@dataclass
class Users:
    """The full (observed and hidden) state of a batch of users; arrays of length
    ``n``."""

    age_group: np.ndarray
    address: np.ndarray
    gender: np.ndarray
    objective_signup: np.ndarray  # bool: goal is sign-up (else a debt agreement)
    score: np.ndarray
    original_value: np.ndarray
    current_value: np.ndarray
    max_delay: np.ndarray
    registered: np.ndarray
    activated: np.ndarray
    located: np.ndarray
    visualized: np.ndarray
    deals: np.ndarray
    # (n, 4) days since activation, location, visualization, deal
    days_since: np.ndarray
    responsiveness: np.ndarray  # hidden: lift of a message on event logits
    fatigue_proneness: np.ndarray  # hidden: how much accumulated fatigue hurts
    fatigue: np.ndarray  # hidden, dynamic
    # not opted out
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def n(self) -> int:
        return int(self.score.shape[0])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class PulseSimulator:
    """The surrogate environment, vectorised over users (numpy only, so it is fast)."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()

    # ------------------------------------------------------------------ users and
    # observations
    def sample_users(self, n_users: int, rng: np.random.Generator) -> Users:
        """Draw ``n_users`` fresh users at the start of their logging window."""
        if n_users < 1:
            raise ConfigError(f"n_users must be positive, got {n_users}")
        n = n_users
        age = rng.choice(6, size=n, p=[0.12, 0.26, 0.24, 0.18, 0.12, 0.08])
        signup = rng.random(n) < 0.5
        score = rng.beta(2.0, 3.0, n)
        original = np.exp(rng.normal(7.0, 1.0, n))
        delay = rng.integers(30, 2000, n).astype(float)
        registered = ~signup
        located = registered & (rng.random(n) < 0.6)
        visualized = located & (rng.random(n) < 0.4)
        activated = registered & (rng.random(n) < 0.3)
        deals = np.where(visualized & (rng.random(n) < 0.15), 1.0, 0.0)
        has = np.stack([activated, located, visualized, deals > 0], axis=1)
        days = np.where(has, rng.integers(1, 400, (n, 4)), 10_000).astype(float)
        young = (2.5 - age) / 2.5  # +1 for the youngest group, -1 for the oldest
        old = age >= 4
        # a message lifts every user's next event at first (older users too: they read
        # it) ...
        responsiveness = (
            0.8 * young + 1.0 * score + 0.9 + 0.9 * old + rng.normal(0.0, 0.3, n)
        )
        # ... but a hidden trait, far more common among older users, makes repeated
        # messages
        # pile up into fatigue and opt-outs. Age shows the risk, not who carries it.
        c = self.config
        prone = rng.random(n) < np.where(old, c.prone_share_old, c.prone_share_other)
        proneness = np.where(prone, 1.0, 0.02) + rng.uniform(0.0, 0.06, n)
        return Users(
            age_group=age,
            address=rng.choice(len(ADDRESS_STATES), size=n, p=_STATE_WEIGHTS),
            gender=rng.choice(3, size=n, p=[0.48, 0.50, 0.02]),
            objective_signup=signup,
            score=score,
            original_value=original,
            current_value=original * (1.0 + delay / 365.0 * rng.uniform(0.05, 0.3, n)),
            max_delay=delay,
            registered=registered,
            activated=activated,
            located=located,
            visualized=visualized,
            deals=deals,
            days_since=days,
            responsiveness=responsiveness,
            fatigue_proneness=proneness,
            fatigue=np.zeros(n),
            active=np.ones(n, bool),
        )

    @staticmethod
    def observe(users: Users) -> np.ndarray:
        """The 63 observed features, float32, each scaled to about [0, 1]."""
        obs = np.zeros((users.n, N_FEATURES), dtype=np.float32)
        rows = np.arange(users.n)
        obs[:, FEATURE_INDEX["user_obs_age_group"]] = users.age_group / 5.0
        obs[rows, FEATURE_INDEX["user_obs_add_0_RO"] + users.address] = 1.0
        obs[rows, FEATURE_INDEX["user_obs_gen_0_FEMALE"] + users.gender] = 1.0
        obs[:, FEATURE_INDEX["obs_objective_agreement"]] = ~users.objective_signup
        obs[:, FEATURE_INDEX["obs_objective_signup"]] = users.objective_signup
        obs[:, FEATURE_INDEX["obs_score"]] = users.score
        obs[:, FEATURE_INDEX["obs_user_activated"]] = users.activated
        obs[:, FEATURE_INDEX["obs_user_registered"]] = users.registered
        obs[:, FEATURE_INDEX["obs_debt_located"]] = users.located
        obs[:, FEATURE_INDEX["obs_debt_visualized"]] = users.visualized
        obs[:, FEATURE_INDEX["obs_deals"]] = np.minimum(users.deals, 5.0) / 5.0
        for k, event in enumerate(RECENCY_EVENTS):
            days = users.days_since[:, k]
            obs[:, FEATURE_INDEX[f"obs_last_{event}"]] = np.minimum(days, 365.0) / 365.0
            obs[:, FEATURE_INDEX[f"obs_last_{event}_week"]] = days <= 7
            obs[:, FEATURE_INDEX[f"obs_last_{event}_month"]] = days <= 30
            obs[:, FEATURE_INDEX[f"obs_last_{event}_year"]] = days <= 365
        obs[:, FEATURE_INDEX["obs_total_original_value"]] = (
            np.log1p(users.original_value) / 12.0
        )
        obs[:, FEATURE_INDEX["obs_total_current_value"]] = (
            np.log1p(users.current_value) / 12.0
        )
        obs[:, FEATURE_INDEX["obs_max_days_of_delay"]] = users.max_delay / 2000.0
        return obs

    # ------------------------------------------------------------------ dynamics
    def step(
        self, users: Users, actions: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance one day in place. Returns ``(rewards, opted_out)`` for every user.

        Users who already opted out get reward 0 and stay out.
        """
        c = self.config
        a = np.asarray(actions).astype(float)
        if a.shape != (users.n,) or not np.isin(a, (0.0, 1.0)).all():
            raise SchemaError(
                f"actions must be 0/1 with shape ({users.n},), got shape {a.shape}"
            )
        a = a * users.active
        # a message lifts the chance of the next event for responsive users, less so
        # when tired;
        # accumulated fatigue depresses engagement whether or not a message is sent
        # today
        lift = (
            a
            * users.responsiveness
            * np.exp(-0.3 * users.fatigue * users.fatigue_proneness)
        )
        drag = c.fatigue_drag * users.fatigue_proneness * users.fatigue
        u = rng.random((users.n, 5))
        reward = -c.send_cost * a
        register = ~users.registered & (
            u[:, 0] < _sigmoid(-4.6 + 1.5 * users.score + lift - drag)
        )
        locate = users.registered & ~users.located & (u[:, 1] < 0.25)
        visualize = (
            users.located & ~users.visualized & (u[:, 2] < _sigmoid(-4.0 + lift - drag))
        )
        deal = users.visualized & (
            u[:, 3]
            < _sigmoid(
                -4.4 + 1.2 * users.score - 1.5 * (users.deals > 0) + 0.8 * lift - drag
            )
        )
        activate = (
            users.registered
            & ~users.activated
            & (u[:, 4] < _sigmoid(-4.5 + lift - drag))
        )
        opt_out = (a > 0) & (
            rng.random(users.n)
            < _sigmoid(
                c.opt_out_base
                + c.opt_out_per_fatigue * users.fatigue_proneness * users.fatigue
            )
        )
        for event in (register, locate, visualize, deal, activate):
            event &= users.active
        reward += (
            c.reward_registration * register
            + c.reward_visualization * visualize
            + c.reward_deal * deal
            + c.reward_activation * activate
            - c.penalty_opt_out * opt_out
            + c.reward_active_day * (users.activated | activate) * users.active
        )
        users.registered |= register
        users.located |= locate
        users.visualized |= visualize
        users.activated |= activate
        users.deals += deal
        users.days_since += 1.0
        for k, event in enumerate((activate, locate, visualize, deal)):
            users.days_since[event, k] = 0.0
        users.fatigue = c.fatigue_decay * users.fatigue + a
        users.active &= ~opt_out
        return reward * (a >= 0), opt_out

    # ------------------------------------------------------------------ rollouts
    def rollout(
        self,
        policy: Policy,
        n_users: int,
        seed: int,
        *,
        first_action: int | None = None,
        record: bool = False,
        hidden: bool = False,
    ) -> RolloutResult:
        """Run ``policy`` online on ``n_users`` fresh users for one horizon.

        ``first_action`` forces the action on day 0 (then ``policy`` takes over): the
        Monte-Carlo estimate of ``Q^policy(s_0, a)``. With ``record=True`` the
        transitions are returned as a table with logged propensities (what a logging
        policy would store). ``hidden=True`` (with ``record``) adds the hidden state no
        real log has, for diagnosis only: ``hidden_fatigue`` / ``next_hidden_fatigue``
        (before and after the day), ``hidden_proneness`` and ``hidden_responsiveness``.
        """
        c = self.config
        rng = np.random.default_rng(seed)
        users = self.sample_users(n_users, rng)
        obs = self.observe(users)
        obs0 = obs.copy()
        returns = np.zeros(n_users)
        discount = 1.0
        pieces: list[pd.DataFrame] = []
        for t in range(c.horizon):
            p_send = check_policy_output(policy(obs), n_users)
            actions = (rng.random(n_users) < p_send).astype(np.int64)
            if t == 0 and first_action is not None:
                if first_action not in (0, 1):
                    raise ConfigError(
                        f"first_action must be 0 or 1, got {first_action!r}"
                    )
                actions[:] = first_action
            alive = users.active.copy()
            fatigue_before = users.fatigue.copy()
            rewards, opted_out = self.step(users, actions, rng)
            returns += discount * rewards
            discount *= c.gamma
            next_obs = self.observe(users)
            if record:
                done = opted_out | (t == c.horizon - 1)
                prob = np.where(actions == 1, p_send, 1.0 - p_send)
                idx = np.flatnonzero(alive)
                frame = _transition_frame(
                    idx,
                    t,
                    obs[idx],
                    actions[idx],
                    rewards[idx],
                    done[idx],
                    prob[idx],
                    next_obs[idx],
                )
                if hidden:
                    frame["hidden_fatigue"] = fatigue_before[idx]
                    frame["next_hidden_fatigue"] = users.fatigue[idx]
                    frame["hidden_proneness"] = users.fatigue_proneness[idx]
                    frame["hidden_responsiveness"] = users.responsiveness[idx]
                pieces.append(frame)
            obs = next_obs
            if not users.active.any():
                break
        table = None
        if record:
            table = pd.concat(pieces, ignore_index=True).sort_values(
                ["eps_id", "t"], kind="stable"
            )
            table = table.reset_index(drop=True)
        return RolloutResult(
            returns=returns, first_observations=obs0, transitions=table
        )

    def evaluate(
        self, policy: Policy, n_users: int, seed: int, *, level: float = 0.95
    ) -> PolicyValue:
        """Mean discounted return of ``policy`` on fresh users, with a normal CI over
        users."""
        returns = self.rollout(policy, n_users, seed).returns
        return PolicyValue.from_samples(returns, level)


@dataclass(frozen=True)
class RolloutResult:
    """Per-user discounted returns, the day-0 observations, and (optionally) the
    transitions."""

    returns: np.ndarray
    first_observations: np.ndarray
    transitions: pd.DataFrame | None


@dataclass(frozen=True)
class PolicyValue:
    """A mean with its confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def from_samples(cls, samples: np.ndarray, level: float = 0.95) -> PolicyValue:
        x = np.asarray(samples, dtype=float)
        half = (
            float(stats.norm.ppf(0.5 + level / 2) * x.std(ddof=1) / np.sqrt(x.size))
            if x.size > 1
            else float("nan")
        )
        return cls(
            float(x.mean()), float(x.mean()) - half, float(x.mean()) + half, int(x.size)
        )


def check_policy_output(p: np.ndarray, n: int) -> np.ndarray:
    """``p`` as floats if it is one send probability in [0, 1] per user, else a
    :class:`SchemaError` naming the first bad row."""
    p = np.asarray(p, dtype=float)
    if p.shape != (n,):
        raise SchemaError(
            "a policy must return one send probability per user: shape "
            f"({n},), got {p.shape}"
        )
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        bad = int(np.flatnonzero(~(np.isfinite(p) & (p >= 0) & (p <= 1)))[0])
        raise SchemaError(
            f"a policy returned send probability {float(p[bad])!r} for user "
            f"{bad}; must be in [0, 1]"
        )
    return p


def _transition_frame(
    idx: np.ndarray,
    t: int,
    obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    done: np.ndarray,
    prob: np.ndarray,
    next_obs: np.ndarray,
) -> pd.DataFrame:
    columns: dict[str, np.ndarray] = {
        "eps_id": idx.astype(np.int64),
        "t": np.full(idx.size, t, np.int32),
        "action": actions.astype(np.int8),
        "reward": rewards.astype(np.float64),
        "done": done.astype(bool),
        "action_prob": prob.astype(np.float64),
    }
    columns.update({name: obs[:, j] for j, name in enumerate(FEATURE_NAMES)})
    columns.update({name: next_obs[:, j] for j, name in enumerate(NEXT_FEATURE_NAMES)})
    return pd.DataFrame(columns)


# ---------------------------------------------------------------------- reference
# policies


def marketer_rule(obs: np.ndarray) -> np.ndarray:
    """The marketing team's deterministic rule set (0/1): good, but improvable.

    Never message the two oldest age groups (experience says they complain and
    unsubscribe) or users who already closed a deal; message users whose debt is located
    but not yet seen (one click from a deal), sign-up prospects with a score above 0.4,
    and registered users in the three youngest age groups. Everyone else (low-score
    prospects, registered users aged 3) is left alone, which leaves value on the table.
    """
    obs = np.asarray(obs)
    f = FEATURE_INDEX
    age = obs[:, f["user_obs_age_group"]] * 5.0
    registered = obs[:, f["obs_user_registered"]] > 0.5
    send = (~registered & (obs[:, f["obs_score"]] > 0.4)) | (registered & (age < 2.5))
    send |= (obs[:, f["obs_debt_located"]] > 0.5) & (
        obs[:, f["obs_debt_visualized"]] < 0.5
    )
    send &= (age < 3.5) & (obs[:, f["obs_deals"]] <= 0)
    return send.astype(float)


#: Exploration of the default logging policy (``heuristic``, the ``500k_dataset``
#: stand-in).
DEFAULT_EPSILON = 0.1


def logging_policy(epsilon: float) -> Policy:
    """The marketer's rule with exploration: ``(1 - epsilon) * rule + epsilon *
    uniform``.

    ``epsilon = 1`` is the uniform coin; ``epsilon -> 0`` the deterministic rule, under
    which
    the opposite of the rule's action in each state is logged with probability
    ``epsilon / 2``: the knob of the coverage sweep.
    """
    if not 0.0 < epsilon <= 1.0:
        raise ConfigError(
            "epsilon must be in (0, 1] (a logged propensity must stay "
            f"positive), got {epsilon}"
        )

    def policy(obs: np.ndarray) -> np.ndarray:
        return (1.0 - epsilon) * marketer_rule(obs) + 0.5 * epsilon

    policy.__name__ = f"logging_policy_eps{epsilon:g}"
    return policy


def heuristic_policy(obs: np.ndarray) -> np.ndarray:
    """The logging policy of the training set: the marketer's rule with
    ``DEFAULT_EPSILON`` exploration (propensities 0.05 or 0.95)."""
    return logging_policy(DEFAULT_EPSILON)(obs)


def uniform_policy(obs: np.ndarray) -> np.ndarray:
    """The logging policy of the evaluation set (``10k_uniform_dataset_users``): a
    coin flip."""
    return np.full(np.asarray(obs).shape[0], 0.5)


def always_send(obs: np.ndarray) -> np.ndarray:
    """Send to everyone every day."""
    return np.ones(np.asarray(obs).shape[0])


def never_send(obs: np.ndarray) -> np.ndarray:
    """Never send."""
    return np.zeros(np.asarray(obs).shape[0])


LOGGING_POLICIES: dict[str, Policy] = {
    "heuristic": heuristic_policy,
    "uniform": uniform_policy,
}


def generate_logged_dataset(
    n_users: int,
    seed: int,
    logging_policy: str = "heuristic",
    config: SimulatorConfig | None = None,
    *,
    epsilon: float | None = None,
) -> pd.DataFrame:
    """Logged transitions of ``n_users`` users under a named logging policy.

    ``"heuristic"`` mimics the release's ``500k_dataset`` (a production policy),
    ``"uniform"`` its ``10k_uniform_dataset_users`` (random sends, for off-policy
    evaluation). One episode per user; columns ``eps_id, t, action, reward, done,
    action_prob``, the 63 features and the 63 ``next_`` features. ``epsilon`` (only with
    ``"heuristic"``) sets the logger's exploration (:func:`logging_policy`); the default
    is :data:`DEFAULT_EPSILON`.
    """
    if logging_policy not in LOGGING_POLICIES:
        raise ConfigError(
            f"unknown logging policy {logging_policy!r}; choose one of "
            f"{sorted(LOGGING_POLICIES)}"
        )
    policy = LOGGING_POLICIES[logging_policy]
    if epsilon is not None:
        if logging_policy != "heuristic":
            raise ConfigError(
                "epsilon applies to the 'heuristic' logging policy, not "
                f"{logging_policy!r}"
            )
        policy = globals()["logging_policy"](epsilon)
    result = PulseSimulator(config).rollout(policy, n_users, seed, record=True)
    assert result.transitions is not None
    return result.transitions
