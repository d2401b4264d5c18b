"""Online runs on the journey simulator: the loop chapters 12 and 13 share.

A run goes round by round: a batch of users shows up, the policy picks one action each
among the live ones, the simulator answers, the learner (if it learns) updates. Actions
are added and retired on the catalog's schedule. Every round records the realised
reward, the expected reward of the chosen actions and of the best live action (so regret
needs no extra sampling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pulse_lib.errors import ConfigError
from pulse_lib.nba.bounds import all_lower_bounds, bootstrap_counts
from pulse_lib.nba.hybrid import HybridLinearBandit, IntentPolicySelector
from pulse_lib.nba.rules import BusinessRules, ContactHistory
from pulse_lib.nba.simulator import (
    OBJECTIVES,
    JourneySimulator,
    LoggedData,
    LoggingPolicy,
    ObjectiveWeights,
    bandit_logs,
    default_catalog,
    epsilon_greedy,
)

__all__ = [
    "STRATEGIES",
    "BoundsWorld",
    "RunResult",
    "bound_replication",
    "bounds_world",
    "cross_fitted_q",
    "make_learner",
    "run_online",
    "run_strategy",
]

#: The four strategies compared in chapter 12.
STRATEGIES: tuple[str, ...] = ("logging", "offline-only", "online-only", "hybrid")


@dataclass
class RunResult:
    """Per-round traces of one online run (arrays of length ``n_rounds``)."""

    reward: np.ndarray  # mean realised reward of the batch
    expected: np.ndarray  # mean true expected reward of the chosen actions
    oracle: np.ndarray  # mean true expected reward of the best live action
    action_counts: np.ndarray  # (n_rounds, K) how often each action was chosen
    best_counts: np.ndarray  # (n_rounds, K) how often each action was the best live one
    signals: np.ndarray  # (n_rounds, len(OBJECTIVES)) mean realised objective signals
    # (n_rounds,) share of the batch contacted (rules only)
    contacted: np.ndarray | None = None

    @property
    def regret(self) -> np.ndarray:
        """Per-round regret against the best live action, in expectation."""
        return self.oracle - self.expected


def make_learner(
    sim: JourneySimulator,
    weights: ObjectiveWeights,
    exploration: str = "ts",
    alpha: float = 0.5,
    prior_precision: float = 1.0,
    round_: int = 0,
    seed: int = 0,
) -> HybridLinearBandit:
    """A hybrid bandit over the simulator's contexts, with the actions live at
    ``round_``."""
    learner = HybridLinearBandit(
        sim.context_width,
        sim.catalog.features.shape[1],
        objectives=OBJECTIVES,
        weights=weights.learned,
        cost_weight=weights.cost,
        exploration=exploration,
        alpha=alpha,
        prior_precision=prior_precision,
        seed=seed,
    )
    for a in np.flatnonzero(sim.catalog.live_mask(round_)):
        learner.add_action(int(a), sim.catalog.features[a], sim.catalog.costs[a])
    return learner


def run_online(
    sim: JourneySimulator,
    policy: HybridLinearBandit | IntentPolicySelector | LoggingPolicy,
    weights: ObjectiveWeights,
    n_rounds: int,
    batch: int,
    rng: np.random.Generator,
    start_round: int = 0,
    learn: bool = True,
    progress: bool = False,
    rules: BusinessRules | None = None,
) -> RunResult:
    """Run ``policy`` online for ``n_rounds`` rounds of ``batch`` users.

    A learner (bandit or selector) gets the catalog's add/retire events as they happen
    and, if ``learn``, an update after each round. A :class:`LoggingPolicy` just acts.

    With ``rules``, each user's eligible actions are the live ones the rules allow
    (:class:`~pulse_lib.nba.rules.ContactHistory`, fresh for the run); a user with none
    is not contacted and adds zero to the batch's reward, expected reward and oracle
    alike (the oracle is the best *eligible* action), so regret compares policies under
    the same rules.
    """
    if n_rounds < 1 or batch < 1:
        raise ConfigError(f"need n_rounds >= 1 and batch >= 1, got {n_rounds}, {batch}")
    learners = _learners(policy)
    events = [
        e for e in sim.catalog.events() if start_round < e[0] < start_round + n_rounds
    ]
    K = len(sim.catalog)
    reward, expected, oracle = (np.zeros(n_rounds) for _ in range(3))
    counts = np.zeros((n_rounds, K), dtype=np.int64)
    best_counts = np.zeros((n_rounds, K), dtype=np.int64)
    signals = np.zeros((n_rounds, len(OBJECTIVES)))
    contacted = np.ones(n_rounds)
    if rules is not None and rules.n_ids != K:
        raise ConfigError(
            f"rules.n_ids is {rules.n_ids} but the catalog has {K} actions"
        )
    history = ContactHistory(rules, sim.stage.shape[0]) if rules is not None else None
    rounds = range(start_round, start_round + n_rounds)
    if progress:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc="rounds", leave=False)
    for i, t in enumerate(rounds):
        for when, kind, a in events:
            if when == t:
                for learner in learners:
                    if kind == "add":
                        learner.add_action(
                            a, sim.catalog.features[a], sim.catalog.costs[a]
                        )
                    else:
                        learner.retire_action(a)
        live = sim.catalog.live_mask(t)
        users = sim.sample_users(batch, rng)
        if history is not None:
            mask = history.eligible(users, t, live)
            # one message per user per round: a user drawn twice is contacted once
            first = np.zeros(batch, dtype=bool)
            first[np.unique(users, return_index=True)[1]] = True
            ok = mask.any(axis=1) & first
            users, mask = users[ok], mask[ok]
            contacted[i] = ok.mean()
        else:
            mask = np.broadcast_to(live, (batch, K))
        x = sim.contexts(users)
        r_true = sim.expected_reward(x, weights)
        r_live = np.where(mask, r_true, -np.inf)
        best_counts[i] = (
            np.bincount(r_live.argmax(axis=1), minlength=K) if users.size else 0
        )
        if users.size == 0:
            continue
        if isinstance(policy, LoggingPolicy):
            actions, _ = policy.sample(x, mask if history is not None else live, rng)
        else:
            actions = policy.choose(
                x, mask if history is not None else np.flatnonzero(live)
            )
        expected[i] = r_true[np.arange(users.shape[0]), actions].sum() / batch
        oracle[i] = r_live.max(axis=1).sum() / batch
        out = sim.step(users, actions, rng)
        if history is not None:
            history.record(users, actions, t)
        reward[i] = out.reward(weights).sum() / batch
        counts[i] = np.bincount(actions, minlength=K)
        signals[i] = out.signals().sum(axis=0) / batch
        if learn and learners:
            policy.update(x, actions, out.signals())
    return RunResult(
        reward,
        expected,
        oracle,
        counts,
        best_counts,
        signals,
        contacted if history is not None else None,
    )


def _learners(policy: object) -> list[HybridLinearBandit]:
    if isinstance(policy, HybridLinearBandit):
        return [policy]
    if isinstance(policy, IntentPolicySelector):
        return list(policy.policies.values())
    if isinstance(policy, LoggingPolicy):
        return []
    if all(
        hasattr(policy, m) for m in ("choose", "update", "add_action", "retire_action")
    ):
        return [policy]  # e.g. pulse_lib.nba.vw.VWContextualBandit
    raise ConfigError(f"unsupported policy type {type(policy).__name__}")


def run_strategy(
    strategy: str,
    sim: JourneySimulator,
    logs: LoggedData,
    logging_policy: LoggingPolicy,
    weights: ObjectiveWeights,
    n_rounds: int,
    batch: int,
    seed: int,
    start_round: int,
    exploration: str = "ts",
    alpha: float = 0.5,
    warm_weighting: str = "none",
    max_weight: float = 20.0,
) -> RunResult:
    """One of :data:`STRATEGIES`, from a fresh copy of the population's stages.

    - ``logging``: keep running the historical rule;
    - ``offline-only``: fit on the logs, then act greedily and never update;
    - ``online-only``: start from the prior, explore and learn online;
    - ``hybrid``: fit on the logs, then explore and learn online.

    ``warm_weighting="ips"`` weights the logged rows by clipped inverse propensities
    (``min(1/mu, max_weight)``, see :meth:`HybridLinearBandit.warm_start`).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    sim.reset()
    rng = np.random.default_rng(seed)
    if strategy == "logging":
        return run_online(
            sim, logging_policy, weights, n_rounds, batch, rng, start_round
        )
    explore = "greedy" if strategy == "offline-only" else exploration
    learner = make_learner(sim, weights, explore, alpha, round_=start_round, seed=seed)
    if strategy in ("offline-only", "hybrid"):
        # Warm start only on logged actions still live: a retired action's rows are
        # dropped
        # on purpose, a choice the chapter states; unknown actions would raise.
        keep = np.isin(logs.actions, learner.active_actions)
        learner.warm_start(
            logs.contexts[keep],
            logs.actions[keep],
            logs.outcomes.signals()[keep],
            logs.propensities[keep],
            weighting=warm_weighting,
            max_weight=max_weight,
        )
    return run_online(
        sim,
        learner,
        weights,
        n_rounds,
        batch,
        rng,
        start_round,
        learn=strategy != "offline-only",
    )


# --------------------------------------------------------------------------- chapter
# 13's world


@dataclass
class BoundsWorld:
    """The off-policy evaluation problem of chapter 13: a current policy and
    candidates."""

    sim: JourneySimulator  # stages frozen; contexts drawn i.i.d. from its users
    current: LoggingPolicy  # the policy that logs the data
    weights: ObjectiveWeights  # business weights of the reward
    live: np.ndarray  # (K,) the live actions
    # name -> (n, K) probabilities
    candidates: dict[str, Callable[[np.ndarray], np.ndarray]]
    truth: dict[str, float]  # true value of each candidate
    max_weight: dict[str, float]  # largest pi/mu over all users and live actions
    reward_range: tuple[float, float]  # every reward lies in it
    v_current: float  # true value of the current policy


def bounds_world(
    n_users: int = 5_000, seed: int = 0, n_train: int = 5_000
) -> BoundsWorld:
    """The current (historical) policy and six candidates a team might propose.

    The learned candidate is the hybrid model fitted on a separate log of ``n_train``
    decisions, acting greedily with 10% uniform exploration; the others mix the current
    policy with it or with one action, and one bets everything on an action the current
    policy rarely takes.
    """
    catalog = default_catalog()
    sim = JourneySimulator(catalog, n_users=n_users, seed=seed)
    weights = ObjectiveWeights(target=1.0, progress=0.3, cost=1.0)
    current = LoggingPolicy(catalog)
    live = catalog.live_mask(0)
    x_all = sim.contexts()
    pi0_all = current.probabilities(x_all, live)
    train = bandit_logs(sim, current, n_train, np.random.default_rng(99))
    learned = make_learner(sim, weights, exploration="greedy")
    learned.warm_start(
        train.contexts, train.actions, train.outcomes.signals(), train.propensities
    )
    K = len(catalog)

    def learned_probs(x: np.ndarray, eps: float = 0.1) -> np.ndarray:
        mean, ids = learned.expected_reward(x)
        full = np.full((x.shape[0], K), -np.inf)
        full[:, ids] = mean
        return epsilon_greedy(full, eps, live)

    def only(name: str, x: np.ndarray) -> np.ndarray:
        p = np.zeros((x.shape[0], K))
        p[:, catalog.index(name)] = 1.0
        return p

    def mix(
        share: float, other: Callable[[np.ndarray], np.ndarray]
    ) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: (1 - share) * current.probabilities(x, live) + share * other(x)

    candidates = {
        "learned (ε = 0.1)": learned_probs,
        "cautious mix (80% current, 20% learned)": mix(0.2, learned_probs),
        "small step (95% current, 5% learned)": mix(0.05, learned_probs),
        "near tie (97% current, 3% web_banner)": mix(
            0.03, lambda x: only("web_banner", x)
        ),
        "banner blast (50% web_banner)": mix(0.5, lambda x: only("web_banner", x)),
        "sms blast (100% sms_discount, rarely logged)": lambda x: only(
            "sms_discount", x
        ),
    }
    truth = {
        name: sim.policy_value(f(x_all), x_all, weights)
        for name, f in candidates.items()
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        max_weight = {
            name: float(np.max(f(x_all)[:, live] / pi0_all[:, live]))
            for name, f in candidates.items()
        }
    reward_range = (
        float(-weights.cost * catalog.costs.max()),
        float(weights.target + weights.progress),
    )
    return BoundsWorld(
        sim,
        current,
        weights,
        live,
        candidates,
        truth,
        max_weight,
        reward_range,
        sim.policy_value(pi0_all, x_all, weights),
    )


def cross_fitted_q(world: BoundsWorld, logs: LoggedData, folds: int = 2) -> np.ndarray:
    """``q_hat(x_i, a)`` for every logged row and action, each row predicted out of
    fold."""
    K = len(world.sim.catalog)
    q = np.zeros((len(logs), K))
    fold = np.arange(len(logs)) % folds
    for f in range(folds):
        fit, predict = fold != f, fold == f
        model = make_learner(world.sim, world.weights, exploration="greedy")
        model.warm_start(
            logs.contexts[fit],
            logs.actions[fit],
            logs.outcomes.signals()[fit],
            logs.propensities[fit],
        )
        mean, ids = model.expected_reward(logs.contexts[predict])
        q[np.ix_(predict, ids)] = mean
    return q


def bound_replication(
    world: BoundsWorld,
    n_logs: int,
    rng: np.random.Generator,
    names: list[str] | None = None,
    n_boot: int = 0,
    delta: float = 0.05,
) -> list[dict[str, object]]:
    """One fresh log of the current policy; every estimate and bound for each candidate.

    Returns one record per (candidate, estimator, method) with the value, the
    candidate's true value and the current policy's on-policy mean reward on this log.
    ``n_boot=0`` skips the bootstrap bounds.
    """
    logs = bandit_logs(world.sim, world.current, n_logs, rng)
    rewards = logs.rewards(world.weights)
    counts = bootstrap_counts(len(logs), n_boot, rng) if n_boot else None
    q = cross_fitted_q(world, logs)
    rows = np.arange(len(logs))
    current_on_policy = float(rewards.mean())
    records = []
    for name in names or list(world.candidates):
        probs = world.candidates[name](logs.contexts)
        bounds = all_lower_bounds(
            rewards,
            probs[rows, logs.actions],
            logs.propensities,
            q[rows, logs.actions],
            (probs * q).sum(axis=1),
            reward_range=world.reward_range,
            max_weight=world.max_weight[name],
            delta=delta,
            counts=counts,
            rng=rng,
            bootstrap=bool(n_boot),
        )
        for (estimator, method), value in bounds.items():
            records.append(
                {
                    "n_logs": n_logs,
                    "candidate": name,
                    "estimator": estimator,
                    "method": method,
                    "value": value,
                    "truth": world.truth[name],
                    "current_on_policy": current_on_policy,
                }
            )
    return records
