"""Off-policy evaluation of PulseRL policies on a logged transition table.

Wraps :mod:`pulse_lib.ope` for tables (importance sampling family), and adds two model-based
estimators: a *direct method* with a learned reward model (the paper's "reward predictor"),
and *fitted Q evaluation* (FQE, Le et al. 2019) for stochastic target policies. d3rlpy's
``DiscreteFQE`` evaluates the greedy policy of a d3rlpy algorithm; the version here takes any
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
    """The target policy's probability of each row's logged action."""
    p_send = np.asarray(policy(D.observations(table)), dtype=float)
    return np.where(table["action"].to_numpy() == 1, p_send, 1.0 - p_send)


def importance_sampling_estimates(table: pd.DataFrame, policy: Policy, gamma: float) -> dict[str, ope.OPEEstimate]:
    """IS, WIS, PDIS and WPDIS estimates of ``policy``'s value from a logged table."""
    pi = target_probabilities(table, policy)
    args = (table["eps_id"].to_numpy(), table["t"].to_numpy(), table["reward"].to_numpy(), pi,
            table["action_prob"].to_numpy())
    return {name: estimator(*args, gamma=gamma) for name, estimator in ope.TRAJECTORY_ESTIMATORS.items()}


#: Kish's effective sample size of importance weights: the one in :mod:`pulse_lib.ope`
#: (NaN or negative weights are a SchemaError there, not an ESS of 0).
effective_sample_size = ope.effective_sample_size


def trajectory_weights(table: pd.DataFrame, policy: Policy) -> np.ndarray:
    """Per-episode importance weight ``prod_t pi/mu`` (sorted by ``eps_id``)."""
    w = target_probabilities(table, policy) / table["action_prob"].to_numpy()
    return pd.Series(w).groupby(table["eps_id"].to_numpy()).prod().to_numpy()


class RewardModel:
    """A reward predictor ``r_hat(s, a)``: gradient-boosted trees on features plus action."""

    def __init__(self, seed: int = 0, max_iter: int = 200) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.model = HistGradientBoostingRegressor(max_iter=max_iter, random_state=seed)

    @staticmethod
    def _design(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        return np.column_stack([obs, action])

    def fit(self, table: pd.DataFrame) -> RewardModel:
        self.model.fit(self._design(D.observations(table), table["action"].to_numpy()), table["reward"].to_numpy())
        return self

    def predict(self, obs: np.ndarray, action: int) -> np.ndarray:
        return self.model.predict(self._design(obs, np.full(obs.shape[0], action)))


def direct_method(table: pd.DataFrame, policy: Policy, reward_model: RewardModel, gamma: float) -> ope.OPEEstimate:
    """DM with a reward model on the *logged* states: per episode ``sum_t gamma^t E_pi[r_hat(s_t, a)]``.

    This is the paper's direct method. It ignores that the target policy would have led to
    other states (and other episode lengths), so it is biased for sequential problems.
    """
    obs = D.observations(table)
    p_send = np.asarray(policy(obs), dtype=float)
    expected = (1 - p_send) * reward_model.predict(obs, 0) + p_send * reward_model.predict(obs, 1)
    per_episode = pd.Series(expected * gamma ** table["t"].to_numpy()).groupby(table["eps_id"].to_numpy()).sum()
    est = ope.direct_method(per_episode.to_numpy())
    return ope.OPEEstimate(value=est.value, terms=est.terms, name="DM")


@dataclass(frozen=True)
class FQEResult:
    """A fitted-Q evaluation with the evidence that it converged."""

    estimate: ope.OPEEstimate  #: the value; terms are per first state (one per episode)
    values: np.ndarray  #: the estimate after each fitted iteration (the convergence trace)
    losses: np.ndarray  #: mean squared TD error of each iteration's last 10 steps
    converged: bool  #: the last ``patience`` iterations moved the estimate by less than ``tol``
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
        warnings.warn(f"FQE did not converge in {result.iterations} iterations (last values "
                      f"{np.round(result.values[-3:], 4).tolist()}); raise n_iterations or steps_per_iteration",
                      RuntimeWarning, stacklevel=2)
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
    """Fitted Q evaluation (Le et al. 2019) as *fitted iterations*, with a convergence check.

    Iteration ``k`` freezes ``Q_{k-1}`` and fits ``Q_k(s, a)`` to
    ``r + gamma * sum_a' pi(a'|s') Q_{k-1}(s', a')`` by ``steps_per_iteration`` minibatch
    steps. The estimate is the mean over first-day states of ``sum_a pi(a|s_0) Q(s_0, a)``.

    Three things the earlier version got wrong, each of which biased it low:

    - ``loss="mse"``: FQE estimates an *expectation*. A Huber (smooth L1) loss regresses
      towards the median, and funnel rewards are rare and positive (median 0), so it shrinks
      every value. ``"huber"`` is kept to show the effect.
    - ``time_feature=True``: episodes have a finite horizon and the 63 features do not say
      how many days are left, so one ``Q(s, a)`` averages over "28 days left" and "1 day
      left". The days left, ``(H - t) / H``, is given to the network as an input.
    - iterations: a horizon-``H`` value needs at least ``H`` backups; the default runs
      ``H + 12`` and the trace shows whether the value stopped moving (``converged``: the
      last ``patience`` iterations changed it by less than ``tol`` relative to its size).
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
        next_np = np.column_stack([next_np, (horizon - t - 1) / horizon]).astype(np.float32)
    obs, next_obs = torch.as_tensor(np.array(obs_np)), torch.as_tensor(np.array(next_np))
    actions = torch.as_tensor(table["action"].to_numpy(np.int64))
    rewards = torch.as_tensor(table["reward"].to_numpy(np.float32))
    not_done = torch.as_tensor(1.0 - table["done"].to_numpy(np.float32))
    p_next = torch.as_tensor(np.asarray(policy(D.observations(table, next_=True)), dtype=np.float32))
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
                y = rewards[idx] + gamma * not_done[idx] * (pi_next[idx] * frozen(next_obs[idx])).sum(dim=1)
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
    converged = bool(len(trace) > patience and np.all(np.abs(np.diff(trace[-patience - 1:])) < tol * scale))
    est = ope.direct_method(current_terms())
    return FQEResult(ope.OPEEstimate(value=est.value, terms=est.terms, name="FQE"), trace, np.asarray(losses),
                     converged, len(trace))


def fit_fqe_linear(
    table: pd.DataFrame,
    policy: Policy,
    gamma: float,
    *,
    ridge: float = 1e-4,
    tol: float = 5e-3,
) -> FQEResult:
    """FQE with a *linear* Q per action in ``[1, s, d, d^2, s * d]`` (``d`` = share of days left),
    solved at its fixed point directly (LSTD-Q, the limit of linear fitted iterations).

    Fitted iterations of a linear FQE contract only at rate about ``gamma``: with
    ``gamma = 0.99`` hundreds of them are needed (the first version of this function stopped
    at 48 and was still 10 % low). Solving ``A w = b`` with
    ``A = Phi^T (Phi - gamma * Phi'_pi)`` and ``b = Phi^T r`` gives the same limit in one
    step. ``converged`` checks it: one more fitted backup from the solution must move the
    estimate by less than ``tol`` (relative). ``values`` holds ``[solution, one backup]``.
    Its bias is the linear model's (``benchmarks/pulserl_ope_accuracy.py`` measures it).
    """
    t = table["t"].to_numpy(np.int64)
    horizon = int(t.max()) + 1

    def design(obs: np.ndarray, days_left: np.ndarray) -> np.ndarray:
        d = days_left[:, None]
        return np.hstack([np.ones_like(d), obs, d, d**2, obs * d]).astype(np.float64)

    phi = design(D.observations(table), (horizon - t) / horizon)
    phi_next = design(D.observations(table, next_=True), (horizon - t - 1) / horizon)
    actions = table["action"].to_numpy()
    for a in (0, 1):
        if not (actions == a).any():
            raise ConfigError(f"FQE needs logged examples of action {a}; the table has none")
    rewards = table["reward"].to_numpy(np.float64)
    not_done = 1.0 - table["done"].to_numpy(np.float64)
    p_next = np.asarray(policy(D.observations(table, next_=True)), dtype=float)
    first = t == 0
    p0 = np.asarray(policy(D.observations(table)[first]), dtype=float)
    k = phi.shape[1]
    n = phi.shape[0]
    block = np.zeros((n, 2 * k))  # phi(s, a): the action's block holds the features
    block[actions == 0, :k] = phi[actions == 0]
    block[actions == 1, k:] = phi[actions == 1]
    discount = (gamma * not_done)[:, None]
    block_next = np.hstack([phi_next * ((1 - p_next)[:, None] * discount), phi_next * (p_next[:, None] * discount)])
    lhs = block.T @ (block - block_next) + ridge * n * np.eye(2 * k)
    w = np.linalg.solve(lhs, block.T @ rewards)

    def estimate(weights: np.ndarray) -> np.ndarray:
        q0 = phi[first] @ weights.reshape(2, k).T
        return (1 - p0) * q0[:, 0] + p0 * q0[:, 1]

    terms = estimate(w)
    # one fitted backup from the solution: regress the bootstrapped target per action
    y = rewards + block_next @ w
    backup = np.concatenate([np.linalg.lstsq(phi[actions == a], y[actions == a], rcond=None)[0] for a in (0, 1)])
    values = np.array([terms.mean(), estimate(backup).mean()])
    converged = bool(abs(values[1] - values[0]) < tol * max(1.0, abs(values[0])))
    residual = float(((y - block @ w) ** 2).mean())
    est = ope.direct_method(terms)
    return FQEResult(ope.OPEEstimate(value=est.value, terms=est.terms, name="FQE-linear"), values,
                     np.asarray([residual]), converged, 1)


def estimate_with_intervals(
    table: pd.DataFrame,
    policy: Policy,
    gamma: float,
    *,
    reward_model: RewardModel | None = None,
    fqe: dict[str, Any] | None = None,
    fqe_linear: bool = False,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Every estimator's value and a bootstrap-over-episodes interval, one row each.

    IS, WIS, PDIS, WPDIS: episodes resampled and every estimator recomputed. DM and FQE:
    their per-episode terms resampled with the fitted model held fixed (so their intervals
    omit the model's own error: check their coverage before trusting them). ``fqe=None``
    skips FQE; pass ``{}`` for its defaults.
    """
    rows = []
    pi = target_probabilities(table, policy)
    args = (table["eps_id"].to_numpy(), table["t"].to_numpy(), table["reward"].to_numpy(), pi,
            table["action_prob"].to_numpy())
    intervals = ope.bootstrap_trajectory_intervals(*args, gamma=gamma, n_boot=n_boot, level=level, seed=seed)
    for name, estimator in ope.TRAJECTORY_ESTIMATORS.items():
        est = estimator(*args, gamma=gamma)
        rows.append(dict(estimator=name, value=est.value, low=intervals[name][0], high=intervals[name][1]))
    if reward_model is not None:
        dm = direct_method(table, policy, reward_model, gamma)
        lo, hi = ope.bootstrap_mean_interval(dm.terms, n_boot=n_boot, level=level, seed=seed)
        rows.append(dict(estimator="DM", value=dm.value, low=lo, high=hi))
    if fqe_linear:
        result = fit_fqe_linear(table, policy, gamma)
        lo, hi = ope.bootstrap_mean_interval(result.estimate.terms, n_boot=n_boot, level=level, seed=seed)
        rows.append(dict(estimator="FQE-linear", value=result.estimate.value, low=lo, high=hi,
                         converged=result.converged))
    if fqe is not None:
        result = fit_fqe(table, policy, gamma, **{"seed": seed, **fqe})
        lo, hi = ope.bootstrap_mean_interval(result.estimate.terms, n_boot=n_boot, level=level, seed=seed)
        rows.append(dict(estimator="FQE", value=result.estimate.value, low=lo, high=hi,
                         converged=result.converged))
    return pd.DataFrame(rows)


def ltv_evaluation_reward(table: pd.DataFrame, reward_shift: float | None = None) -> np.ndarray:
    """The released code's evaluation reward (``get_ltv_reward`` in
    ``src/train_model/custom_estimators.py`` of ``dlb-rl/pulse-rl``), per row.

    ``reward + shift + 0.001 + 0.033 * activated(s')``, where ``shift`` makes every logged
    reward positive (``-min(reward) + 1e-6`` when the minimum is not positive, as the
    released ``evaluation.py`` computes it over a dataset) and ``activated(s')`` is the
    next observation's ``obs_user_activated`` flag: a small bonus per day as an active user.
    """
    rewards = table["reward"].to_numpy(np.float64)
    if reward_shift is None:
        low = round(float(rewards.min()), 10)
        reward_shift = -low + 1e-6 if low <= 0 else 0.0
    activated = table["next_obs_user_activated"].to_numpy(np.float64)
    return rewards + reward_shift + 0.001 + 0.033 * activated
