"""A model-based evaluator of coupon policies: learn the next-day response, roll the
policy out.

In the coupon problem everything in a transition but one bit is known: the next state is
the day plus one, the chosen coupon counted, and the return counted *if the user came
back*. The reward is that bit and the cost is the coupon's value. So a classifier of
``P(return | s, a)`` fitted on the logged data is a complete model of the environment,
and a policy's retention and spend can be estimated by simulating it from the logged
day-0 states -- the policy acts on its *own* states, the situation where a TD evaluator
trained on logged states (REME, FQE) extrapolates.

The classifier sees a few summaries of the state (a modelling choice, stated): the day,
the user type, the user's return rate so far, the mean coupon received so far, and the
value of today's coupon. If the response depended on the history in a way these miss,
the estimate would be biased; :meth:`ResponseModel.log_loss` on held-out users and the
chapter's comparison with the simulator measure that. The model does not depend on the
evaluated policy, so one fit serves every λ and every learner; a rollout is a few
forward passes per day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pulse_lib.coupons.dataset import STATE_SCALE, CouponDataset, data_horizon
from pulse_lib.coupons.simulator import (
    COUPON_VALUES,
    N_ACTIONS,
    STATE_DIM,
    Policy,
    check_initial_states,
)
from pulse_lib.errors import ConfigError, SchemaError

#: Number of summary features the classifier sees (see :func:`features`).
N_FEATURES: int = 8


@dataclass(frozen=True)
class ResponseModelConfig:
    """Every setting of the response classifier and its rollouts."""

    hidden: int = 64  # units in each of the two hidden layers
    lr: float = 3e-3  # Adam learning rate
    batch_size: int = 1024  # logged transitions per update
    n_steps: int = 3_000  # gradient updates of the classifier
    # simulated users per estimate (drawn from the logged day-0 states)
    n_rollouts: int = 10_000
    # also give the classifier the 42 scaled per-value counts of the state
    full_state: bool = False

    def __post_init__(self) -> None:
        if (
            min(self.hidden, self.batch_size, self.n_steps, self.n_rollouts) < 1
            or self.lr <= 0
        ):
            raise ConfigError(
                "hidden, batch_size, n_steps, n_rollouts must be >= 1 "
                f"and lr > 0: {self}"
            )


def features(states: np.ndarray, actions: np.ndarray, horizon: int) -> np.ndarray:
    """``(n, 8)`` float32 summaries: day / H, type one-hot (3), first day, return rate
    so far, mean coupon received so far, today's coupon value."""
    if (
        states.ndim != 2
        or states.shape[1] != STATE_DIM
        or actions.shape != (states.shape[0],)
    ):
        raise SchemaError(
            f"need states (n, {STATE_DIM}) and actions (n,), got "
            f"{states.shape} and {actions.shape}"
        )
    day = states[:, 0]
    coupons = states[:, 2 : 2 + N_ACTIONS]
    returns = states[:, 2 + N_ACTIONS :]
    given = coupons.sum(axis=1)
    seen = np.maximum(given, 1.0)
    out = np.empty((states.shape[0], N_FEATURES), dtype=np.float32)
    out[:, 0] = day / horizon
    out[:, 1:4] = np.eye(3, dtype=np.float32)[states[:, 1].astype(int)]
    out[:, 4] = given == 0
    out[:, 5] = returns.sum(axis=1) / seen
    out[:, 6] = (coupons * COUPON_VALUES[None, :]).sum(axis=1) / seen
    out[:, 7] = COUPON_VALUES[actions]
    return out


@dataclass(frozen=True)
class RolloutEstimate:
    """Estimated retention and cost per user-day of a policy, with Monte-Carlo standard
    errors (over simulated users; the classifier's own error is not in them)."""

    retention: float
    cost: float
    retention_se: float
    cost_se: float


class ResponseModel:
    """``P(return | s, a)`` learned from logged data, and rollouts of any policy
    through it."""

    def __init__(
        self, config: ResponseModelConfig = ResponseModelConfig(), seed: int = 0
    ) -> None:
        torch.manual_seed(seed)
        self.config, self.seed = config, seed
        h = config.hidden
        n_in = N_FEATURES + (2 * N_ACTIONS if config.full_state else 0)
        self.net = nn.Sequential(
            nn.Linear(n_in, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1)
        )
        self.horizon: int | None = None
        self.n_updates = 0
        self.train_seconds = 0.0

    def fit(self, dataset: CouponDataset, rng: np.random.Generator) -> list[float]:
        """``config.n_steps`` Adam updates of the binary cross-entropy; returns every
        loss."""
        self.horizon = data_horizon(dataset)
        x = torch.as_tensor(self._inputs(dataset.observations, dataset.actions))
        y = torch.as_tensor(dataset.rewards, dtype=torch.float32)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        losses = []
        start = time.perf_counter()
        for _ in range(self.config.n_steps):
            idx = torch.as_tensor(rng.integers(0, len(dataset), self.config.batch_size))
            loss = F.binary_cross_entropy_with_logits(
                self.net(x[idx]).squeeze(1), y[idx]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            self.n_updates += 1
        self.train_seconds += time.perf_counter() - start
        return losses

    def _require_fit(self) -> int:
        if self.horizon is None:
            raise ConfigError("the response model is not fitted: call fit() first")
        return self.horizon

    def _inputs(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        x = features(states, actions, self._require_fit())
        if not self.config.full_state:
            return x
        return np.concatenate([x, states[:, 2:] * STATE_SCALE[2:]], axis=1)

    @torch.no_grad()
    def probability(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Predicted probability that each user returns the next day."""
        x = torch.as_tensor(self._inputs(states, actions))
        return torch.sigmoid(self.net(x).squeeze(1)).numpy()

    def log_loss(self, dataset: CouponDataset) -> float:
        """Mean binary cross-entropy on (held-out) logged transitions."""
        p = np.clip(
            self.probability(dataset.observations, dataset.actions), 1e-7, 1 - 1e-7
        )
        y = dataset.rewards
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    def rollout(
        self, policy: Policy, initial_states: np.ndarray, seed: int = 0
    ) -> RolloutEstimate:
        """Simulate ``policy`` for the horizon from ``n_rollouts`` day-0 states drawn
        from ``initial_states``.

        The same ``seed`` gives the same users and the same uniform draws, so estimates
        at two λ differ only through the policies (common random numbers: a smoother
        cost curve to bisect).
        """
        horizon = self._require_fit()
        check_initial_states(initial_states)
        if np.any(initial_states[:, 0] != 0):
            raise SchemaError(
                "initial_states must all be day-0 states (the rollout "
                "runs the whole horizon)"
            )
        rng = np.random.default_rng(seed)
        n = self.config.n_rollouts
        state = initial_states[rng.integers(0, len(initial_states), n)].copy()
        uniforms = rng.random((horizon, n))
        rows = np.arange(n)
        ret = np.zeros(n)
        cost = np.zeros(n)
        for t in range(horizon):
            action = np.asarray(policy(state))
            if action.shape != (n,) or action.min() < 0 or action.max() >= N_ACTIONS:
                raise SchemaError(
                    "the policy returned actions of shape "
                    f"{action.shape}, outside 0..{N_ACTIONS - 1}"
                )
            back = (uniforms[t] < self.probability(state, action)).astype(np.float32)
            ret += back
            cost += COUPON_VALUES[action]
            state[rows, 2 + action] += 1
            state[rows, 2 + N_ACTIONS + action] += back
            state[:, 0] = t + 1
        ret /= horizon
        cost /= horizon
        root = np.sqrt(n)
        return RolloutEstimate(
            float(ret.mean()),
            float(cost.mean()),
            float(ret.std(ddof=1) / root),
            float(cost.std(ddof=1) / root),
        )


__all__ = [
    "N_FEATURES",
    "ResponseModel",
    "ResponseModelConfig",
    "RolloutEstimate",
    "features",
]
