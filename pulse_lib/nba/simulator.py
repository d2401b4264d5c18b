"""A customer-journey simulator for next-best-action (NBA) decisions.

Users carry a few numeric features and sit in one of four journey stages (prospect ->
engaged -> customer -> loyal). At each decision the marketer sends one action (an offer
or message on a channel). The action changes two probabilities, each a separate
objective signal:

- ``target``: the user performs the target event (say, a purchase) this step;
- ``progress``: the user moves to the next stage.

Each action also has a known ``cost``. A scalar reward is a business-weighted sum
``w_target * target + w_progress * progress - w_cost * cost``
(:class:`ObjectiveWeights`), so a reader can change the weights without touching the
simulator.

The true effect of action ``a`` on objective ``o`` for a context ``x`` is logistic:

    P(o | x, a) = sigmoid(c_o + x . (W_o phi_a) + x . gamma_{o,a})

with ``phi_a`` the action's features (channel and offer type one-hots), ``W_o`` shared
by all actions (so actions on the same channel or of the same offer type behave alike)
and ``gamma_{o,a}`` a per-action deviation. This is the structure of the hybrid linear
bandit of Li et al. (2010), in logit space; the learner sees only sampled 0/1 outcomes.

Everything is vectorised over users; the expected reward of every (context, action) pair
is available (:meth:`JourneySimulator.expected_outcomes`), so the true value of any
policy is computable (:meth:`JourneySimulator.policy_value`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.validation import check_probabilities

__all__ = [
    "CHANNELS",
    "OBJECTIVES",
    "OFFERS",
    "STAGES",
    "Action",
    "ActionCatalog",
    "JourneySimulator",
    "LoggedData",
    "LoggingPolicy",
    "ObjectiveWeights",
    "Outcomes",
    "bandit_logs",
    "default_catalog",
    "epsilon_greedy",
    "sample_categorical",
    "simulate_logs",
]

STAGES: tuple[str, ...] = ("prospect", "engaged", "customer", "loyal")
CHANNELS: tuple[str, ...] = ("email", "sms", "push", "web")
OFFERS: tuple[str, ...] = ("content", "discount", "loyalty")
#: The learned objective signals (cost is known per action, not learned).
OBJECTIVES: tuple[str, ...] = ("target", "progress")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Action:
    """One action: an offer type on a channel, live during rounds ``[start, end)``."""

    name: str
    channel: str
    offer: str
    cost: float
    start: int = 0
    end: int | None = None  # None: never retired

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ConfigError(
                f"action {self.name!r}: unknown channel "
                f"{self.channel!r}; use one of {CHANNELS}"
            )
        if self.offer not in OFFERS:
            raise ConfigError(
                f"action {self.name!r}: unknown offer {self.offer!r}; "
                f"use one of {OFFERS}"
            )
        if not np.isfinite(self.cost) or self.cost < 0:
            raise ConfigError(
                f"action {self.name!r}: cost must be finite and >= 0, got {self.cost!r}"
            )
        if self.end is not None and self.end <= self.start:
            raise ConfigError(
                f"action {self.name!r}: end {self.end} must be after start {self.start}"
            )

    def live(self, t: int) -> bool:
        """Whether the action may be sent at round ``t``."""
        return self.start <= t and (self.end is None or t < self.end)


class ActionCatalog:
    """Every action that ever exists, with its schedule; ids are positions in this
    list."""

    def __init__(self, actions: Sequence[Action]):
        if len(actions) == 0:
            raise ConfigError("an ActionCatalog needs at least one action")
        names = [a.name for a in actions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"duplicate action names in the catalog: {dupes}")
        self.actions: tuple[Action, ...] = tuple(actions)
        self.names: tuple[str, ...] = tuple(names)
        self.costs: np.ndarray = np.array([a.cost for a in actions])
        self.features: np.ndarray = np.stack([self.action_features(a) for a in actions])

    def __len__(self) -> int:
        return len(self.actions)

    @staticmethod
    def action_features(action: Action) -> np.ndarray:
        """``phi_a``: one-hot channel then one-hot offer type (width 7)."""
        phi = np.zeros(len(CHANNELS) + len(OFFERS))
        phi[CHANNELS.index(action.channel)] = 1.0
        phi[len(CHANNELS) + OFFERS.index(action.offer)] = 1.0
        return phi

    def live_mask(self, t: int) -> np.ndarray:
        """Boolean mask of the actions live at round ``t``."""
        return np.array([a.live(t) for a in self.actions])

    def index(self, name: str) -> int:
        """The id of the action called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(
                f"no action named {name!r}; the catalog has {list(self.names)}"
            ) from None

    def events(self) -> list[tuple[int, str, int]]:
        """Schedule changes as ``(round, "add"|"retire", action_id)``, sorted by
        round."""
        out = [(a.start, "add", i) for i, a in enumerate(self.actions) if a.start > 0]
        out += [
            (a.end, "retire", i)
            for i, a in enumerate(self.actions)
            if a.end is not None
        ]
        return sorted(out)


def default_catalog(
    new_action_round: int = 2_000, retire_round: int = 3_000
) -> ActionCatalog:
    """The book's 12-action catalog: 11 live from round 0, one added and one retired
    later."""
    return ActionCatalog(
        [
            Action("newsletter", "email", "content", 0.002),
            Action("promo_email", "email", "discount", 0.05),
            Action("push_reminder", "push", "content", 0.001),
            Action("sms_discount", "sms", "discount", 0.06),
            Action("web_banner", "web", "content", 0.0),
            Action("loyalty_email", "email", "loyalty", 0.02),
            Action("web_discount", "web", "discount", 0.05),
            Action("sms_content", "sms", "content", 0.01),
            Action("push_loyalty", "push", "loyalty", 0.01),
            Action("web_loyalty", "web", "loyalty", 0.02),
            # seasonal, retired
            Action("summer_sms", "sms", "discount", 0.06, end=retire_round),
            # launched later
            Action("app_points", "push", "loyalty", 0.015, start=new_action_round),
        ]
    )


# --------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class ObjectiveWeights:
    """Business weights that turn the objective signals into one reward."""

    target: float = 1.0
    progress: float = 0.3
    cost: float = 1.0

    def __post_init__(self) -> None:
        for name in ("target", "progress", "cost"):
            value = getattr(self, name)
            if not np.isfinite(value):
                raise ConfigError(
                    f"objective weight {name!r} must be finite, got {value!r}"
                )

    @property
    def learned(self) -> np.ndarray:
        """Weights of the learned signals, in the order of :data:`OBJECTIVES`."""
        return np.array([self.target, self.progress])


@dataclass(frozen=True)
class Outcomes:
    """Per-decision objective signals: 0/1 events (or their probabilities) and the
    cost."""

    target: np.ndarray
    progress: np.ndarray
    cost: np.ndarray

    def signals(self) -> np.ndarray:
        """The learned signals as an ``(n, len(OBJECTIVES))`` matrix."""
        return np.column_stack([self.target, self.progress])

    def reward(self, weights: ObjectiveWeights) -> np.ndarray:
        """The scalar business reward of each decision under ``weights``."""
        return (
            weights.target * self.target
            + weights.progress * self.progress
            - weights.cost * self.cost
        )


@dataclass(frozen=True)
class LoggedData:
    """Historical decisions: contexts, action ids, logging propensities and outcomes."""

    contexts: np.ndarray  # (n, d)
    actions: np.ndarray  # (n,) int action ids
    # (n,) probability the logging policy gave the logged action
    propensities: np.ndarray
    outcomes: Outcomes
    # (n,) round of each row
    rounds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def __post_init__(self) -> None:
        validate_logs(self.contexts, self.actions, self.propensities)
        n = self.contexts.shape[0]
        for name in ("target", "progress", "cost"):
            arr = np.asarray(getattr(self.outcomes, name))
            if arr.shape != (n,):
                raise SchemaError(
                    f"outcome {name!r} has shape {arr.shape}, expected ({n},)"
                )

    def __len__(self) -> int:
        return int(self.contexts.shape[0])

    def rewards(self, weights: ObjectiveWeights) -> np.ndarray:
        """Scalar rewards of the logged decisions under ``weights``."""
        return self.outcomes.reward(weights)


def validate_logs(
    contexts: np.ndarray, actions: np.ndarray, propensities: np.ndarray
) -> None:
    """Raise :class:`SchemaError` naming the first problem in logged decisions."""
    contexts = np.asarray(contexts)
    if contexts.ndim != 2:
        raise SchemaError(
            f"contexts must be 2-D (rows x features), got shape {contexts.shape}"
        )
    n = contexts.shape[0]
    bad_rows = np.flatnonzero(~np.isfinite(contexts).all(axis=1))
    if bad_rows.size:
        raise SchemaError(
            f"contexts row {int(bad_rows[0])} has a NaN or infinite value"
        )
    actions = np.asarray(actions)
    if actions.shape != (n,):
        raise SchemaError(
            f"actions has shape {actions.shape}, expected ({n},) to match contexts"
        )
    if not np.issubdtype(actions.dtype, np.integer):
        raise SchemaError(
            f"actions must be integer action ids, got dtype {actions.dtype}"
        )
    props = np.asarray(propensities, dtype=float)
    if props.shape != (n,):
        raise SchemaError(f"propensities has shape {props.shape}, expected ({n},)")
    bad = np.flatnonzero(~np.isfinite(props) | (props <= 0) | (props > 1))
    if bad.size:
        i = int(bad[0])
        raise SchemaError(
            f"propensity at row {i} is {props[i]!r}: logging propensities must be in "
            "(0, 1] "
            "(a zero or missing propensity makes importance weights undefined)"
        )


# --------------------------------------------------------------------------- simulator


class JourneySimulator:
    """A population of users moving through :data:`STAGES`, answering actions from a
    catalog.

    Args: catalog: the actions. n_users: population size. n_features: numeric user
        features (standard normal). seed: seed of the *world* (true effects and
        population); sampling during a run uses the generator passed to each call.
        lapse: per-step probability that a user drops back one stage (keeps the
        population from piling up in ``loyal``).
    """

    def __init__(
        self,
        catalog: ActionCatalog,
        n_users: int = 5_000,
        n_features: int = 5,
        seed: int = 0,
        lapse: float = 0.03,
    ):
        if n_users < 1 or n_features < 1:
            raise ConfigError(
                f"need n_users >= 1 and n_features >= 1, got {n_users}, {n_features}"
            )
        if not 0.0 <= lapse < 1.0:
            raise ConfigError(f"lapse must be in [0, 1), got {lapse!r}")
        self.catalog = catalog
        self.n_features = n_features
        self.lapse = lapse
        world = np.random.default_rng(seed)
        self.user_features = world.standard_normal((n_users, n_features))
        self.stage = world.choice(len(STAGES), size=n_users, p=[0.5, 0.3, 0.15, 0.05])
        self._initial_stage = self.stage.copy()
        d, p = self.context_width, catalog.features.shape[1]
        # Shared effects W_o (d x p): feature effects drawn at random, plus a designed
        # stage x
        # offer pattern (content moves prospects, discounts convert the engaged, loyalty
        # offers
        # work on customers) so that the best action depends on the stage.
        stage_rows = slice(1 + n_features, d)
        self.W = {o: 0.25 * world.standard_normal((d, p)) for o in OBJECTIVES}
        offer_cols = slice(len(CHANNELS), p)
        self.W["target"][stage_rows, offer_cols] += np.array(
            [
                [-0.6, 0.2, -0.8],  # prospect
                [-0.3, 0.6, -0.4],  # engaged
                [0.0, 0.3, 0.5],  # customer
                [0.1, -0.2, 0.8],  # loyal
            ]
        )
        self.W["progress"][stage_rows, offer_cols] += np.array(
            [
                [0.8, 0.0, -0.8],
                [0.2, 0.5, -0.3],
                [-0.2, 0.0, 0.7],
                [0.0, 0.0, 0.0],
            ]
        )
        # Per-action deviations gamma_{o,a}: what the shared part cannot explain.
        self.gamma = {
            o: 0.35 * world.standard_normal((len(catalog), d)) for o in OBJECTIVES
        }
        self.base = {"target": -2.6, "progress": -2.0}
        # Two actions the logging policy neglects are excellent for some users: the skew
        # trap.
        for name, row, lift in (
            ("web_loyalty", 1 + n_features + 2, 1.4),
            ("sms_content", 1 + n_features + 1, 1.2),
        ):
            if name in catalog.names:
                a = catalog.index(name)
                self.gamma["target"][a, row] += lift
                # feature 0 users respond too
                self.gamma["progress"][a, 1] += 0.4 * lift

    # -- contexts
    # ---------------------------------------------------------------------------

    @property
    def context_width(self) -> int:
        """``d``: bias + numeric features + one-hot stage."""
        return 1 + self.n_features + len(STAGES)

    def contexts(self, users: np.ndarray | None = None) -> np.ndarray:
        """Context vectors ``x`` (bias, features, stage one-hot) of ``users`` (all if
        None)."""
        idx = np.arange(self.stage.shape[0]) if users is None else np.asarray(users)
        x = np.zeros((idx.shape[0], self.context_width))
        x[:, 0] = 1.0
        x[:, 1 : 1 + self.n_features] = self.user_features[idx]
        x[np.arange(idx.shape[0]), 1 + self.n_features + self.stage[idx]] = 1.0
        return x

    def sample_users(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` user indices drawn uniformly with replacement (who shows up this
        round)."""
        return rng.integers(0, self.stage.shape[0], size=n)

    def reset(self) -> None:
        """Put every user back in their initial stage."""
        self.stage = self._initial_stage.copy()

    # -- truth
    # ------------------------------------------------------------------------------

    def _check_contexts(self, contexts: np.ndarray) -> np.ndarray:
        x = np.asarray(contexts, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.context_width:
            raise SchemaError(
                f"contexts must have shape (n, {self.context_width}), got {x.shape}"
            )
        return x

    def expected_outcomes(self, contexts: np.ndarray) -> dict[str, np.ndarray]:
        """True probabilities ``P(o | x, a)`` for every context and action: ``(n, K)``
        each.

        ``progress`` is zero for users already ``loyal`` (the last stage).
        """
        x = self._check_contexts(contexts)
        phi = self.catalog.features
        out = {}
        for o in OBJECTIVES:
            logits = self.base[o] + x @ (self.W[o] @ phi.T) + x @ self.gamma[o].T
            out[o] = _sigmoid(logits)
        # loyal users cannot progress
        out["progress"] = out["progress"] * (1.0 - x[:, [-1]])
        return out

    def expected_reward(
        self, contexts: np.ndarray, weights: ObjectiveWeights
    ) -> np.ndarray:
        """True expected scalar reward ``r(x, a)`` of every action: ``(n, K)``."""
        p = self.expected_outcomes(contexts)
        return (
            weights.target * p["target"]
            + weights.progress * p["progress"]
            - weights.cost * self.catalog.costs
        )

    def policy_value(
        self, action_probs: np.ndarray, contexts: np.ndarray, weights: ObjectiveWeights
    ) -> float:
        """True value ``mean_x sum_a pi(a|x) r(x, a)`` of a policy given as ``(n,
        K)`` probabilities."""
        r = self.expected_reward(contexts, weights)
        # each in [0, 1]
        probs = check_probabilities("action_probs", action_probs, shape=r.shape)
        if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-6):
            row = int(np.argmax(np.abs(probs.sum(axis=1) - 1.0)))
            raise SchemaError(
                f"action_probs row {row} sums to {probs[row].sum()!r}, not 1"
            )
        return float(np.mean(np.sum(probs * r, axis=1)))

    # -- dynamics
    # ---------------------------------------------------------------------------

    def step(
        self, users: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> Outcomes:
        """Send ``actions[i]`` to ``users[i]``; sample outcomes and move users along
        the journey."""
        users = np.asarray(users)
        actions = np.asarray(actions)
        if actions.shape != users.shape:
            raise SchemaError(
                f"actions shape {actions.shape} differs from users shape {users.shape}"
            )
        if actions.size and (actions.min() < 0 or actions.max() >= len(self.catalog)):
            bad = actions[(actions < 0) | (actions >= len(self.catalog))][0]
            raise SchemaError(
                f"unknown action id {int(bad)}; the catalog has ids "
                f"0..{len(self.catalog) - 1}"
            )
        x = self.contexts(users)
        p = self.expected_outcomes(x)
        rows = np.arange(users.shape[0])
        target = (rng.random(users.shape[0]) < p["target"][rows, actions]).astype(float)
        progress = (rng.random(users.shape[0]) < p["progress"][rows, actions]).astype(
            float
        )
        lapse = (rng.random(users.shape[0]) < self.lapse) & (progress == 0)
        # A user drawn twice in one batch moves once: the batch is one simultaneous
        # send.
        self.stage[users] = np.clip(
            self.stage[users] + progress.astype(int) - lapse.astype(int),
            0,
            len(STAGES) - 1,
        )
        return Outcomes(
            target=target, progress=progress, cost=self.catalog.costs[actions]
        )


# --------------------------------------------------------------------------- logging
# policy


class LoggingPolicy:
    """The historical rule: a softmax over fixed preferences that favours a few actions.

    ``pi_0(a | x) = (1 - eps) softmax(pref + stage_bonus(x))_a + eps / K_live``; the
    floor ``eps`` keeps every live action's propensity positive (tiny for the neglected
    ones), so importance weighting is possible but noisy.
    """

    def __init__(
        self,
        catalog: ActionCatalog,
        favoured: Sequence[str] = ("newsletter", "promo_email", "web_banner"),
        favour: float = 3.0,
        eps: float = 0.05,
    ):
        if not 0.0 < eps <= 1.0:
            raise ConfigError(
                f"eps must be in (0, 1], got {eps!r}: a zero floor "
                "leaves actions unlogged"
            )
        self.catalog = catalog
        self.eps = eps
        self.pref = np.zeros(len(catalog))
        for name in favoured:
            self.pref[catalog.index(name)] = favour
        self.n_stages = len(STAGES)

    def probabilities(self, contexts: np.ndarray, live: np.ndarray) -> np.ndarray:
        """``(n, K)`` action probabilities; zero for actions not live (or not eligible).

        ``live`` is a boolean mask, ``(K,)`` for everyone or ``(n, K)`` per user
        (eligibility from business rules): the policy renormalises over each user's
        eligible actions, so the propensities it logs are those of the policy that
        really ran.
        """
        x = np.asarray(contexts, dtype=float)
        live = np.asarray(live)
        K = len(self.catalog)
        if (
            live.dtype != bool
            or live.shape[-1] != K
            or live.ndim not in (1, 2)
            or (live.ndim == 2 and live.shape[0] != x.shape[0])
        ):
            raise SchemaError(
                f"live must be a boolean mask of shape ({K},) or "
                f"({x.shape[0]}, {K}), "
                f"got shape {live.shape} dtype {live.dtype}"
            )
        empty = np.flatnonzero(~np.atleast_2d(live).any(axis=1))
        if empty.size:
            raise ConfigError(
                f"no live action to choose from (row {int(empty[0])} of "
                "the mask is all False)"
            )
        live2 = np.atleast_2d(live)
        # Marketers send discounts a little more to engaged users: mild context
        # dependence.
        engaged = x[:, -self.n_stages + 1][:, None]
        is_discount = np.array(
            [a.offer == "discount" for a in self.catalog.actions], dtype=float
        )
        logits = self.pref[None, :] + 0.8 * engaged * is_discount[None, :]
        logits = np.where(live2, logits, -np.inf)
        soft = np.exp(logits - logits.max(axis=1, keepdims=True))
        soft /= soft.sum(axis=1, keepdims=True)
        return (1.0 - self.eps) * soft + self.eps * live2 / live2.sum(
            axis=1, keepdims=True
        )

    def sample(
        self, contexts: np.ndarray, live: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw one action per context; return ``(actions, propensities)``."""
        probs = self.probabilities(contexts, live)
        actions = sample_categorical(probs, rng)
        return actions, probs[np.arange(actions.shape[0]), actions]


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of an ``(n, K)`` probability matrix (inverse-CDF,
    vectorised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), probs.shape[1] - 1)


def simulate_logs(
    sim: JourneySimulator,
    policy: LoggingPolicy,
    n_rounds: int,
    batch: int,
    rng: np.random.Generator,
    start_round: int = 0,
) -> LoggedData:
    """Run the logging policy for ``n_rounds`` rounds of ``batch`` users and record
    everything."""
    xs, acts, props, outs, rounds = [], [], [], [], []
    for t in range(start_round, start_round + n_rounds):
        users = sim.sample_users(batch, rng)
        x = sim.contexts(users)
        a, p = policy.sample(x, sim.catalog.live_mask(t), rng)
        outs.append(sim.step(users, a, rng))
        xs.append(x)
        acts.append(a)
        props.append(p)
        rounds.append(np.full(batch, t))
    outcomes = Outcomes(
        *(
            np.concatenate([getattr(o, f) for o in outs])
            for f in ("target", "progress", "cost")
        )
    )
    return LoggedData(
        np.concatenate(xs),
        np.concatenate(acts),
        np.concatenate(props),
        outcomes,
        np.concatenate(rounds),
    )


def bandit_logs(
    sim: JourneySimulator,
    policy: LoggingPolicy,
    n: int,
    rng: np.random.Generator,
    round_: int = 0,
) -> LoggedData:
    """``n`` logged decisions on users drawn uniformly from the population, stages
    frozen.

    Unlike :func:`simulate_logs` nothing moves along the journey, so every row is an
    i.i.d. draw from one context distribution: the setting in which the true value of a
    policy, :meth:`JourneySimulator.policy_value` on all users, is exactly what OPE
    estimates.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    users = sim.sample_users(n, rng)
    x = sim.contexts(users)
    a, prop = policy.sample(x, sim.catalog.live_mask(round_), rng)
    p = sim.expected_outcomes(x)
    rows = np.arange(n)
    outcomes = Outcomes(
        target=(rng.random(n) < p["target"][rows, a]).astype(float),
        progress=(rng.random(n) < p["progress"][rows, a]).astype(float),
        cost=sim.catalog.costs[a],
    )
    return LoggedData(x, a, prop, outcomes, np.full(n, round_))


def epsilon_greedy(
    scores: np.ndarray, eps: float, live: np.ndarray | None = None
) -> np.ndarray:
    """``(n, K)`` probabilities: ``1 - eps`` on the best live action, ``eps`` spread
    over live ones."""
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2:
        raise SchemaError(
            f"scores must be 2-D (contexts x actions), got shape {s.shape}"
        )
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"eps must be in [0, 1], got {eps!r}")
    live = (
        np.ones(s.shape[1], dtype=bool)
        if live is None
        else np.asarray(live, dtype=bool)
    )
    best = np.argmax(np.where(live[None, :], s, -np.inf), axis=1)
    probs = np.tile(eps * live / live.sum(), (s.shape[0], 1))
    probs[np.arange(s.shape[0]), best] += 1.0 - eps
    return probs
