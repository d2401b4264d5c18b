"""Off-policy evaluation of PulseRL policies on a logged transition table.

Wraps :mod:`pulse_lib.ope` for tables (importance sampling family), and adds two model-based
estimators: a *direct method* with a learned reward model (the paper's "reward predictor"),
and *fitted Q evaluation* (FQE, Le et al. 2019) for stochastic target policies. d3rlpy's
``DiscreteFQE`` evaluates the greedy policy of a d3rlpy algorithm; the version here takes any
policy ``obs -> P(send)``, which the IS estimators need anyway.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

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


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of importance weights."""
    w = np.asarray(weights, dtype=float)
    total = float((w**2).sum())
    return float(w.sum() ** 2 / total) if total > 0 else 0.0


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


def fitted_q_evaluation(
    table: pd.DataFrame,
    policy: Policy,
    gamma: float,
    *,
    n_steps: int = 2_000,
    hidden: tuple[int, ...] = (32, 32),
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    target_update_interval: int = 50,
    seed: int = 0,
) -> ope.OPEEstimate:
    """FQE: regress ``Q(s, a)`` on ``r + gamma * sum_a' pi(a'|s') Q_target(s', a')``; the
    estimate is the mean over first-day states of ``sum_a pi(a|s_0) Q(s_0, a)``.

    Terms are per episode (one first state each).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    obs = torch.as_tensor(np.array(D.observations(table)))
    next_obs = torch.as_tensor(np.array(D.observations(table, next_=True)))
    actions = torch.as_tensor(np.array(table["action"].to_numpy(np.int64)))
    rewards = torch.as_tensor(np.array(table["reward"].to_numpy(np.float32)))
    not_done = torch.as_tensor(np.array(1.0 - table["done"].to_numpy(np.float32)))
    p_next = torch.as_tensor(np.asarray(policy(next_obs.numpy()), dtype=np.float32))
    pi_next = torch.stack([1 - p_next, p_next], dim=1)
    layers: list[nn.Module] = []
    width = obs.shape[1]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    net = nn.Sequential(*layers, nn.Linear(width, 2))
    target = copy.deepcopy(net)
    optim = torch.optim.Adam(net.parameters(), lr=learning_rate)
    n = obs.shape[0]
    for step in range(1, n_steps + 1):
        idx = torch.as_tensor(rng.integers(0, n, batch_size))
        with torch.no_grad():
            y = rewards[idx] + gamma * not_done[idx] * (pi_next[idx] * target(next_obs[idx])).sum(dim=1)
        q = net(obs[idx]).gather(1, actions[idx, None]).squeeze(1)
        loss = nn.functional.smooth_l1_loss(q, y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if step % target_update_interval == 0:
            target.load_state_dict(net.state_dict())
    first = table["t"].to_numpy() == 0
    s0 = obs[torch.as_tensor(first)]
    with torch.no_grad():
        q0 = net(s0).numpy()
    p0 = np.asarray(policy(s0.numpy()), dtype=float)
    values = (1 - p0) * q0[:, 0] + p0 * q0[:, 1]
    est = ope.direct_method(values)
    return ope.OPEEstimate(value=est.value, terms=est.terms, name="FQE")
