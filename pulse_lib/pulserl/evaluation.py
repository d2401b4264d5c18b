"""Off-policy evaluation of PulseRL policies on a logged transition table.

Wraps :mod:`pulse_lib.ope` for tables (importance sampling family), and adds two
model-based
estimators: a *direct method* with a learned reward model (the paper's "reward
    predictor"),
and *fitted Q evaluation* (FQE, Le et al. 2019) for stochastic target policies. d3rlpy's
``DiscreteFQE`` evaluates the greedy policy of a d3rlpy algorithm; the version here
takes any
policy ``obs -> P(send)``, which the IS estimators need anyway.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pulse_lib import ope
from pulse_lib.errors import ConfigError
from pulse_lib.pulserl import data as D
from pulse_lib.pulserl import simulator as S

Policy = Callable[[np.ndarray], np.ndarray]


def soften(policy: Policy, epsilon: float) -> Policy:
    """``(1 - epsilon) * policy + epsilon * uniform``: a stochastic version of a policy.

    Importance sampling needs the target to give positive probability to logged actions;
    a deterministic target zeroes the weight of every episode that strays from it once.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"epsilon must be in [0, 1], got {epsilon}")

    def softened(obs: np.ndarray) -> np.ndarray:
        return (1.0 - epsilon) * np.asarray(policy(obs), dtype=float) + epsilon * 0.5

    return softened


def target_probabilities(table: pd.DataFrame, policy: Policy) -> np.ndarray:
    """The target policy's probability of each row's logged action.

    The policy must return one send probability in [0, 1] per row (else a
    :class:`~pulse_lib.errors.SchemaError` naming the row).
    """
    p_send = S.check_policy_output(policy(D.observations(table)), len(table))
    return np.where(table["action"].to_numpy() == 1, p_send, 1.0 - p_send)


def importance_sampling_estimates(
    table: pd.DataFrame, policy: Policy, gamma: float
) -> dict[str, ope.OPEEstimate]:
    """IS, WIS, PDIS and WPDIS estimates of ``policy``'s value from a logged table."""
    pi = target_probabilities(table, policy)
    args = (
        table["eps_id"].to_numpy(),
        table["t"].to_numpy(),
        table["reward"].to_numpy(),
        pi,
        table["action_prob"].to_numpy(),
    )
    return {
        name: estimator(*args, gamma=gamma)
        for name, estimator in ope.TRAJECTORY_ESTIMATORS.items()
    }


#: Kish's effective sample size of importance weights: the one in :mod:`pulse_lib.ope`
#: (NaN or negative weights are a SchemaError there, not an ESS of 0).
effective_sample_size = ope.effective_sample_size


def trajectory_weights(table: pd.DataFrame, policy: Policy) -> np.ndarray:
    """Per-episode importance weight ``prod_t pi/mu`` (sorted by ``eps_id``)."""
    w = target_probabilities(table, policy) / table["action_prob"].to_numpy()
    return pd.Series(w).groupby(table["eps_id"].to_numpy()).prod().to_numpy()


class RewardModel:
    """A reward predictor ``r_hat(s, a)``: gradient-boosted trees on features plus
    action."""

    def __init__(self, seed: int = 0, max_iter: int = 200) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.model = HistGradientBoostingRegressor(max_iter=max_iter, random_state=seed)

    @staticmethod
    def _design(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        return np.column_stack([obs, action])

    def fit(self, table: pd.DataFrame) -> RewardModel:
        self.model.fit(
            self._design(D.observations(table), table["action"].to_numpy()),
            table["reward"].to_numpy(),
        )
        return self

    def predict(self, obs: np.ndarray, action: int) -> np.ndarray:
        return self.model.predict(self._design(obs, np.full(obs.shape[0], action)))


def direct_method(
    table: pd.DataFrame, policy: Policy, reward_model: RewardModel, gamma: float
) -> ope.OPEEstimate:
    """DM with a reward model on the *logged* states: per episode ``sum_t gamma^t
    E_pi[r_hat(s_t, a)]``.

    This is the paper's direct method. It ignores that the target policy would have led
    to other states (and other episode lengths), so it is biased for sequential
    problems.
    """
    obs = D.observations(table)
    p_send = np.asarray(policy(obs), dtype=float)
    expected = (1 - p_send) * reward_model.predict(
        obs, 0
    ) + p_send * reward_model.predict(obs, 1)
    per_episode = (
        pd.Series(expected * gamma ** table["t"].to_numpy())
        .groupby(table["eps_id"].to_numpy())
        .sum()
    )
    est = ope.direct_method(per_episode.to_numpy())
    return ope.OPEEstimate(value=est.value, terms=est.terms, name="DM")


@dataclass(frozen=True)
class FQEResult:
    """A fitted-Q evaluation with the evidence that it converged."""

    estimate: ope.OPEEstimate  #: the value; terms are per first state (one per episode)
    #: the estimate after each fitted iteration (the convergence trace)
    values: np.ndarray
    losses: np.ndarray  #: mean squared TD error of each iteration's last 10 steps
    #: the last ``patience`` iterations moved the estimate by less than ``tol``
    converged: bool
    iterations: int  #: fitted iterations run


def fitted_q_evaluation(
    table: pd.DataFrame,
    policy: Policy,
    gamma: float,
    **kwargs: Any,
) -> ope.OPEEstimate:
    """FQE's estimate only (see :func:`fit_fqe`); warns when it did not converge."""
    result = fit_fqe(table, policy, gamma, **kwargs)
    if not result.converged:
        warnings.warn(
            f"FQE did not converge in {result.iterations} iterations (last "
            "values "
            f"{np.round(result.values[-3:], 4).tolist()}); raise "
            "n_iterations or steps_per_iteration",
            RuntimeWarning,
            stacklevel=2,
        )
    return result.estimate


def fit_fqe(
    table: pd.DataFrame,
    policy: Policy,
    gamma: float,
    *,
    n_iterations: int | None = None,
    steps_per_iteration: int = 60,
    hidden: tuple[int, ...] = (64, 64),
    learning_rate: float = 1e-3,
    batch_size: int = 512,
    loss: str = "mse",
    time_feature: bool = True,
    tol: float = 0.01,
    patience: int = 3,
    seed: int = 0,
) -> FQEResult:
    """Fitted Q evaluation (Le et al. 2019) as *fitted iterations*, with a convergence
    check.

    Iteration ``k`` freezes ``Q_{k-1}`` and fits ``Q_k(s, a)`` to ``r + gamma * sum_a'
    pi(a'|s') Q_{k-1}(s', a')`` by ``steps_per_iteration`` minibatch steps. The estimate
    is the mean over first-day states of ``sum_a pi(a|s_0) Q(s_0, a)``.

    Three things the earlier version got wrong, each of which biased it low:

    - ``loss="mse"``: FQE estimates an *expectation*. A Huber (smooth L1) loss regresses
      towards the median, and funnel rewards are rare and positive (median 0), so it
      shrinks every value. ``"huber"`` is kept to show the effect.
    - ``time_feature=True``: episodes have a finite horizon and the 63 features do not
      say how many days are left, so one ``Q(s, a)`` averages over "28 days left" and "1
      day left". The days left, ``(H - t) / H``, is given to the network as an input.
    - iterations: a horizon-``H`` value needs at least ``H`` backups; the default runs
      ``H + 12`` and the trace shows whether the value stopped moving (``converged``:
      the last ``patience`` iterations changed it by less than ``tol`` relative to its
      size).
    """
    if loss not in ("mse", "huber"):
        raise ConfigError(f"loss must be 'mse' or 'huber', got {loss!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t = table["t"].to_numpy(np.int64)
    horizon = int(t.max()) + 1
    obs_np, next_np = D.observations(table), D.observations(table, next_=True)
    if time_feature:
        obs_np = np.column_stack([obs_np, (horizon - t) / horizon]).astype(np.float32)
        next_np = np.column_stack([next_np, (horizon - t - 1) / horizon]).astype(
            np.float32
        )
    obs, next_obs = (
        torch.as_tensor(np.array(obs_np)),
        torch.as_tensor(np.array(next_np)),
    )
    actions = torch.as_tensor(table["action"].to_numpy(np.int64))
    rewards = torch.as_tensor(table["reward"].to_numpy(np.float32))
    not_done = torch.as_tensor(1.0 - table["done"].to_numpy(np.float32))
    p_next = torch.as_tensor(
        np.asarray(policy(D.observations(table, next_=True)), dtype=np.float32)
    )
    pi_next = torch.stack([1 - p_next, p_next], dim=1)
    first = t == 0
    s0 = obs[torch.as_tensor(first)]
    p0 = np.asarray(policy(D.observations(table)[first]), dtype=float)
    layers: list[nn.Module] = []
    width = obs.shape[1]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    net = nn.Sequential(*layers, nn.Linear(width, 2))
    optim = torch.optim.Adam(net.parameters(), lr=learning_rate)
    regress = nn.functional.mse_loss if loss == "mse" else nn.functional.smooth_l1_loss
    n = obs.shape[0]
    n_iterations = n_iterations or horizon + 12
    values, losses = [], []

    def current_terms() -> np.ndarray:
        with torch.no_grad():
            q0 = net(s0).numpy()
        return (1 - p0) * q0[:, 0] + p0 * q0[:, 1]

    for _ in range(n_iterations):
        frozen = copy.deepcopy(net)
        recent = []
        for step in range(steps_per_iteration):
            idx = torch.as_tensor(rng.integers(0, n, batch_size))
            with torch.no_grad():
                y = rewards[idx] + gamma * not_done[idx] * (
                    pi_next[idx] * frozen(next_obs[idx])
                ).sum(dim=1)
            q = net(obs[idx]).gather(1, actions[idx, None]).squeeze(1)
            err = regress(q, y)
            optim.zero_grad(set_to_none=True)
            err.backward()
            optim.step()
            if step >= steps_per_iteration - 10:
                recent.append(float(((q.detach() - y) ** 2).mean()))
        losses.append(float(np.mean(recent)))
        values.append(float(current_terms().mean()))
    trace = np.asarray(values)
    scale = max(1.0, abs(trace[-1]))
    converged = bool(
        len(trace) > patience
        and np.all(np.abs(np.diff(trace[-patience - 1 :])) < tol * scale)
    )
    est = ope.direct_method(current_terms())
    return FQEResult(
        ope.OPEEstimate(value=est.value, terms=est.terms, name="FQE"),
        trace,
        np.asarray(losses),
        converged,
        len(trace),
    )


#: Names of the send-history summaries :func:`send_history` builds (the columns, in
#: order).
HISTORY_FEATURES: tuple[str, ...] = (
    "sent_yesterday",
    "sent_last_3_days",
    "sent_last_7_days",
    "sent_so_far",
    "sends_decayed_0.5",
    "sends_decayed_0.8",
)


def send_history(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Summaries of each user's earlier messages, at ``s`` (before the row's action) and
    at ``s'``.

    The 63 features do not record how often a user was messaged, yet messages build
    fatigue
    that changes what the next message does. A team can compute the history from its own
    logs: per row, the share of the last 1, 3 and 7 days with a message, the messages so
        far
    over the horizon, and exponentially decayed counts (decay 0.5 and 0.8, scaled by
    ``1 - decay`` to lie in [0, 1]). The ``s'`` versions include the row's own action.
    Episodes are identified by ``eps_id`` and ordered by ``t``, which must run 0, 1, 2,
    ...
    within each episode. Returns two ``(rows, len(HISTORY_FEATURES))`` arrays.
    """
    for column in ("eps_id", "t", "action"):
        if column not in table.columns:
            raise ConfigError(
                f"send history needs column {column!r}; the table lacks it"
            )
    codes, _ = pd.factorize(table["eps_id"].to_numpy())
    t = table["t"].to_numpy(np.int64)
    if (t < 0).any():
        raise ConfigError(f"column 't' row {int(np.flatnonzero(t < 0)[0])} is negative")
    n_eps, horizon = (
        int(codes.max()) + 1 if codes.size else 0,
        int(t.max()) + 1 if t.size else 0,
    )
    lengths = np.bincount(codes, minlength=n_eps)
    top = np.full(n_eps, -1)
    np.maximum.at(top, codes, t)
    if (top + 1 != lengths).any():
        bad = int(np.flatnonzero(top + 1 != lengths)[0])
        raise ConfigError(
            f"episode {table['eps_id'].to_numpy()[codes == bad][0]!r}: "
            "steps 't' must run "
            f"0..{lengths[bad] - 1} once each; got max t {top[bad]} for "
            f"{lengths[bad]} rows"
        )
    sent = np.zeros((n_eps, horizon))
    sent[codes, t] = table["action"].to_numpy(np.float64)
    total = np.cumsum(sent, axis=1)  # messages up to and including day t

    def window(k: int) -> np.ndarray:
        shifted = np.zeros_like(total)
        shifted[:, k:] = total[:, :-k] if k < horizon else 0.0
        return (total - shifted) / k

    decayed = []
    for decay in (0.5, 0.8):
        d = np.zeros_like(sent)
        running = np.zeros(n_eps)
        for day in range(horizon):
            running = decay * running + sent[:, day]
            d[:, day] = running * (1 - decay)
        decayed.append(d)
    # at s'
    after = np.stack(
        [window(1), window(3), window(7), total / horizon, *decayed], axis=2
    )
    before = np.zeros_like(after)
    before[:, 1:] = after[:, :-1]
    return before[codes, t], after[codes, t]


@dataclass(frozen=True)
class _LinearFQEProblem:
    """The pieces of the LSTD-Q system of :func:`fit_fqe_linear`, kept for refitting."""

    block: np.ndarray  # phi(s, a) per row, (rows, 2k)
    # gamma * sum_a' pi(a'|s') phi(s', a') per row (0 after a terminal)
    block_next: np.ndarray
    rewards: np.ndarray
    phi_first: np.ndarray  # phi(s_0) of each episode's first row, (episodes, k)
    p_first: np.ndarray  # pi(send | s_0) per episode
    first_episode: np.ndarray  # episode code of each first row
    episode: np.ndarray  # episode code (0..E-1) per row
    k: int


def history_state(
    table: pd.DataFrame,
    segment_feature: str | None = "user_obs_age_group",
    max_segments: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """The send history (:func:`send_history`) and its interaction with user segments,
    at ``s`` and ``s'``: the extra state columns FQE-linear uses by default.

    The same messages tire some users far more than others, so a linear ``Q`` needs the
    history *per segment*: each history column is multiplied by a one-hot of
    ``segment_feature``'s distinct values (the age group by default: the marketing
    team's own rule already treats age groups differently). ``None`` gives the history
    alone.
    """
    before, after = send_history(table)
    if segment_feature is None:
        return before, after
    if segment_feature not in table.columns:
        raise ConfigError(
            f"segment_feature {segment_feature!r} is not a column of the table"
        )
    values = table[segment_feature].to_numpy(np.float64)
    levels = np.unique(values)
    if levels.size > max_segments:
        raise ConfigError(
            f"segment_feature {segment_feature!r} has {levels.size} "
            "distinct values; at most "
            f"{max_segments} segments are allowed (it must be a "
            "category, not a measurement)"
        )
    onehot = (values[:, None] == levels[None, :]).astype(np.float64)
    n = len(table)
    return (
        (before[:, :, None] * onehot[:, None, :]).reshape(n, -1),
        (after[:, :, None] * onehot[:, None, :]).reshape(n, -1),
    )


def _linear_fqe_problem(
    table: pd.DataFrame,
    policy: Policy,
    gamma: float,
    extra: tuple[np.ndarray, np.ndarray] | None,
) -> _LinearFQEProblem:
    t = table["t"].to_numpy(np.int64)
    horizon = int(t.max()) + 1

    def design(obs: np.ndarray, days_left: np.ndarray) -> np.ndarray:
        d = days_left[:, None]
        return np.hstack([np.ones_like(d), obs, d, d**2, obs * d]).astype(np.float64)

    obs, next_obs = D.observations(table), D.observations(table, next_=True)
    state, next_state = obs.astype(np.float64), next_obs.astype(np.float64)
    if extra is not None:
        before, after = (np.asarray(x, dtype=np.float64) for x in extra)
        if (
            before.ndim != 2
            or before.shape != after.shape
            or before.shape[0] != len(table)
        ):
            raise ConfigError(
                f"extra state columns must be two ({len(table)}, m) "
                "arrays (at s and s'); got "
                f"shapes {before.shape} and {after.shape}"
            )
        if not (np.isfinite(before).all() and np.isfinite(after).all()):
            raise ConfigError("extra state columns must be finite")
        state, next_state = np.hstack([state, before]), np.hstack([next_state, after])
    phi = design(state, (horizon - t) / horizon)
    phi_next = design(next_state, (horizon - t - 1) / horizon)
    actions = table["action"].to_numpy()
    for a in (0, 1):
        if not (actions == a).any():
            raise ConfigError(
                f"FQE needs logged examples of action {a}; the table has none"
            )
    not_done = 1.0 - table["done"].to_numpy(np.float64)
    p_next = np.asarray(policy(next_obs), dtype=float)
    first = t == 0
    k, n = phi.shape[1], phi.shape[0]
    block = np.zeros((n, 2 * k))  # phi(s, a): the action's block holds the features
    block[actions == 0, :k] = phi[actions == 0]
    block[actions == 1, k:] = phi[actions == 1]
    discount = (gamma * not_done)[:, None]
    block_next = np.hstack(
        [
            phi_next * ((1 - p_next)[:, None] * discount),
            phi_next * (p_next[:, None] * discount),
        ]
    )
    codes, _ = pd.factorize(table["eps_id"].to_numpy())
    return _LinearFQEProblem(
        block,
        block_next,
        table["reward"].to_numpy(np.float64),
        phi[first],
        np.asarray(policy(obs[first]), dtype=float),
        codes[first],
        codes,
        k,
    )


def _extra_state(
    table: pd.DataFrame,
    history: bool,
    segment_feature: str | None,
    extra: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    parts = ([history_state(table, segment_feature)] if history else []) + (
        [extra] if extra is not None else []
    )
    if not parts:
        return None
    return np.hstack([np.asarray(p[0], float) for p in parts]), np.hstack(
        [np.asarray(p[1], float) for p in parts]
    )


def _first_state_values(problem: _LinearFQEProblem, weights: np.ndarray) -> np.ndarray:
    """``sum_a pi(a|s_0) Q(s_0, a)`` per episode for one weight vector, or per row of
    a stack."""
    w = np.atleast_2d(weights).reshape(-1, 2, problem.k)
    q0 = np.einsum("ek,bak->bea", problem.phi_first, w)
    values = (1 - problem.p_first) * q0[..., 0] + problem.p_first * q0[..., 1]
    return values if np.ndim(weights) > 1 else values[0]


def fit_fqe_linear(
    table: pd.DataFrame,
    policy: Policy,
    gamma: float,
    *,
    history: bool = True,
    segment_feature: str | None = "user_obs_age_group",
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    ridge: float = 1e-4,
    tol: float = 5e-3,
) -> FQEResult:
    """FQE with a *linear* Q per action in ``[1, x, d, d^2, x * d]`` (``d`` = share of
    days left, ``x`` = the 63 features plus, with ``history=True``, the send history per
    segment of :func:`history_state` with ``segment_feature``, plus any ``extra``
    columns given as ``(at s, at s')``), solved at its fixed point directly (LSTD-Q, the
    limit of linear fitted iterations).

    Why the history: fatigue from earlier messages is hidden, so the 63 features alone
    are
    not a Markov state. Logged under a uniform coin, users carry fatigue a "send less"
    target would never give them, and a Q on the features alone learns the fatigued
    users'
    future: FQE came out low for every target (``benchmarks/pulserl_ope_accuracy.py``
        has
    the controlled comparison). ``history=False`` keeps the features-only version.

    Fitted iterations of a linear FQE contract only at rate about ``gamma``: with
    ``gamma = 0.99`` hundreds of them are needed. Solving ``A w = b`` with ``A = Phi^T
    (Phi - gamma * Phi'_pi)`` and ``b = Phi^T r`` gives the same limit in one step.
    ``converged`` checks it: one more fitted backup from the solution must move the
    estimate by less than ``tol`` (relative). ``values`` holds ``[solution, one
    backup]``.
    """
    problem = _linear_fqe_problem(
        table, policy, gamma, _extra_state(table, history, segment_feature, extra)
    )
    block, block_next, rewards, k = (
        problem.block,
        problem.block_next,
        problem.rewards,
        problem.k,
    )
    n = block.shape[0]
    lhs = block.T @ (block - block_next) + ridge * n * np.eye(2 * k)
    w = np.linalg.solve(lhs, block.T @ rewards)
    terms = _first_state_values(problem, w)
    # one fitted backup from the solution: the same ridge regression of the bootstrapped
    # target
    y = rewards + block_next @ w
    backup = np.linalg.solve(block.T @ block + ridge * n * np.eye(2 * k), block.T @ y)
    values = np.array([terms.mean(), _first_state_values(problem, backup).mean()])
    converged = bool(abs(values[1] - values[0]) < tol * max(1.0, abs(values[0])))
    residual = float(((y - block @ w) ** 2).mean())
    est = ope.direct_method(terms)
    return FQEResult(
        ope.OPEEstimate(value=est.value, terms=est.terms, name="FQE-linear"),
        values,
        np.asarray([residual]),
        converged,
        1,
    )


def fqe_linear_bootstrap(
    table: pd.DataFrame,
    policy: Policy,
    gamma: float,
    *,
    history: bool = True,
    segment_feature: str | None = "user_obs_age_group",
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    ridge: float = 1e-4,
    n_boot: int = 200,
    seed: int = 0,
    chunk: int = 64,
) -> np.ndarray:
    """``n_boot`` bootstrap draws of FQE-linear's estimate, **refitting** the model on
    each.

    Holding the fitted ``Q`` fixed and resampling its per-episode values leaves out the
    model's own estimation error, and such intervals covered the truth far less than 95
    % of the time. Here every draw resamples whole episodes with replacement and solves
    the LSTD-Q system again. That is cheap because the system is a sum over episodes:
    ``A = sum_e c_e A_e``, ``b = sum_e c_e b_e`` with ``c_e`` the draw's counts, so the
    per-episode pieces are computed once (``chunk`` episodes at a time, to bound
    memory). The model options are those of :func:`fit_fqe_linear`.
    """
    if n_boot < 2:
        raise ConfigError(f"n_boot must be at least 2, got {n_boot}")
    problem = _linear_fqe_problem(
        table, policy, gamma, _extra_state(table, history, segment_feature, extra)
    )
    block, diff, rewards, k = (
        problem.block,
        problem.block - problem.block_next,
        problem.rewards,
        problem.k,
    )
    order = np.argsort(problem.episode, kind="stable")
    episode = problem.episode[order]
    n_eps = int(episode.max()) + 1
    starts = np.searchsorted(episode, np.arange(n_eps + 1))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_eps, np.full(n_eps, 1.0 / n_eps), size=n_boot).astype(
        np.float64
    )
    lhs = np.zeros((n_boot, (2 * k) ** 2))
    rhs = np.zeros((n_boot, 2 * k))
    for lo in range(0, n_eps, chunk):
        hi = min(lo + chunk, n_eps)
        a_parts = np.empty((hi - lo, (2 * k) ** 2))
        b_parts = np.empty((hi - lo, 2 * k))
        for e in range(lo, hi):
            rows = order[starts[e] : starts[e + 1]]
            a_parts[e - lo] = (block[rows].T @ diff[rows]).ravel()
            b_parts[e - lo] = block[rows].T @ rewards[rows]
        lhs += counts[:, lo:hi] @ a_parts
        rhs += counts[:, lo:hi] @ b_parts
    n_rows = counts @ np.diff(starts).astype(np.float64)
    systems = lhs.reshape(n_boot, 2 * k, 2 * k) + ridge * n_rows[
        :, None, None
    ] * np.eye(2 * k)
    weights = np.linalg.solve(systems, rhs[..., None])[..., 0]
    # (n_boot, episodes in first-row order)
    values = _first_state_values(problem, weights)
    first_counts = counts[:, problem.first_episode]
    return (first_counts * values).sum(axis=1) / first_counts.sum(axis=1)


def estimate_with_intervals(
    table: pd.DataFrame,
    policy: Policy,
    gamma: float,
    *,
    reward_model: RewardModel | None = None,
    fqe: dict[str, Any] | None = None,
    fqe_linear: bool = False,
    n_boot: int = 1000,
    fqe_linear_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Every estimator's value and a bootstrap-over-episodes interval, one row each.

    IS, WIS, PDIS, WPDIS: episodes resampled and every estimator recomputed. FQE-linear:
    episodes resampled and the model refitted on each draw
    (:func:`fqe_linear_bootstrap`,
    ``min(n_boot, fqe_linear_boot)`` draws). DM and the neural FQE: their per-episode
    terms
    resampled with the fitted model held fixed (so their intervals omit the model's own
    error: check their coverage before trusting them). ``fqe=None`` skips the neural
        FQE;
    pass ``{}`` for its defaults.
    """
    rows = []
    pi = target_probabilities(table, policy)
    args = (
        table["eps_id"].to_numpy(),
        table["t"].to_numpy(),
        table["reward"].to_numpy(),
        pi,
        table["action_prob"].to_numpy(),
    )
    intervals = ope.bootstrap_trajectory_intervals(
        *args, gamma=gamma, n_boot=n_boot, level=level, seed=seed
    )
    for name, estimator in ope.TRAJECTORY_ESTIMATORS.items():
        est = estimator(*args, gamma=gamma)
        rows.append(
            {
                "estimator": name,
                "value": est.value,
                "low": intervals[name][0],
                "high": intervals[name][1],
            }
        )
    if reward_model is not None:
        dm = direct_method(table, policy, reward_model, gamma)
        lo, hi = ope.bootstrap_mean_interval(
            dm.terms, n_boot=n_boot, level=level, seed=seed
        )
        rows.append({"estimator": "DM", "value": dm.value, "low": lo, "high": hi})
    if fqe_linear:
        result = fit_fqe_linear(table, policy, gamma)
        draws = fqe_linear_bootstrap(
            table, policy, gamma, n_boot=min(n_boot, fqe_linear_boot), seed=seed
        )
        lo, hi = ope.percentile_interval(draws, level)
        rows.append(
            {
                "estimator": "FQE-linear",
                "value": result.estimate.value,
                "low": lo,
                "high": hi,
                "converged": result.converged,
            }
        )
    if fqe is not None:
        result = fit_fqe(table, policy, gamma, **{"seed": seed, **fqe})
        lo, hi = ope.bootstrap_mean_interval(
            result.estimate.terms, n_boot=n_boot, level=level, seed=seed
        )
        rows.append(
            {
                "estimator": "FQE",
                "value": result.estimate.value,
                "low": lo,
                "high": hi,
                "converged": result.converged,
            }
        )
    return pd.DataFrame(rows)


def ltv_evaluation_reward(
    table: pd.DataFrame, reward_shift: float | None = None
) -> np.ndarray:
    """The released code's evaluation reward (``get_ltv_reward`` in
    ``src/train_model/custom_estimators.py`` of ``dlb-rl/pulse-rl``), per row.

    ``reward + shift + 0.001 + 0.033 * activated(s')``, where ``shift`` makes every
    logged reward positive (``-min(reward) + 1e-6`` when the minimum is not positive, as
    the released ``evaluation.py`` computes it over a dataset) and ``activated(s')`` is
    the next observation's ``obs_user_activated`` flag: a small bonus per day as an
    active user.
    """
    rewards = table["reward"].to_numpy(np.float64)
    if reward_shift is None:
        low = round(float(rewards.min()), 10)
        reward_shift = -low + 1e-6 if low <= 0 else 0.0
    activated = table["next_obs_user_activated"].to_numpy(np.float64)
    return rewards + reward_shift + 0.001 + 0.033 * activated
