"""REME: off-policy evaluation of a λ-conditioned policy with a multi-head network
(BCORLE(λ), 4.3).

Like R-BCQ's Q-network, but the TD target uses the *evaluated* policy's action instead
of a max:

``Q̂(s, a, λ) <- x + Σ_k α_k Q̂_k(s', π(s', λ), λ)``

trained twice over, once with ``x = r`` (retention) and once with ``x = c`` (cost), in
one network with two outputs per head. The budget is a spend over the 30 days, so there
is no discount: the day is in the state and the episode ends on day 30. We let the
network predict the value *per remaining day*, ``Q̂(s, a) = (H - t) f(s, a)``: the
target becomes ``f(s, a) <- (x + (H - t - 1) f(s', π(s'))) / (H - t)``, a number near
the daily retention or cost, so with the output layer warm-started at the logged daily
means (:meth:`REME.warm_start`) an untrained network is already roughly right and 30
days of bootstrapping converge in a few thousand steps instead of creeping up from zero.
``f(s_0, π(s_0))`` is retention / cost per user-day. ``H`` is read from the data (the
day of the next state on terminal rows), never assumed. One training evaluates the
policy at every λ of the grid. ``n_heads=1`` with a one-value grid is fitted-Q
evaluation (FQE, Le et al., 2019).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from pulse_lib.coupons.dataset import STATE_SCALE, Batch, LambdaSampler, data_horizon
from pulse_lib.coupons.rbcq import MultiHeadQ, random_convex_weights, to_tensors
from pulse_lib.coupons.simulator import N_ACTIONS, STATE_DIM, check_initial_states
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.validation import check_fields

#: The evaluated policy, in torch: (scaled states, λ per row) -> action indices.
TorchPolicy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class REMEConfig:
    """Every hyperparameter of the evaluator."""

    n_heads: int = 10  # K: heads mixed by REM (1 head and a one-value λ grid: FQE)
    hidden: int = 64  # units in each of the two hidden layers
    lr: float = 1e-3  # Adam learning rate
    batch_size: int = 256  # transitions (each with its own λ) per update
    huber_delta: float = 1.0  # Huber loss switches from squared to linear here
    target_update_every: int = 20  # updates between hard copies into the target network
    horizon: int | None = None  # episode length H; None: read from the data by fit()

    def __post_init__(self) -> None:
        counts = ("n_heads", "hidden", "batch_size", "target_update_every", "horizon")
        check_fields(
            self,
            integer=counts,
            positive=(*counts, "lr", "huber_delta"),
            optional=("horizon",),
        )


@dataclass(frozen=True)
class ValueEstimate:
    """Estimated retention and cost per user-day of a policy at one λ."""

    lam: float
    retention: float
    cost: float


class REME:
    """Multi-head evaluator of reward and cost values for a λ-conditioned policy."""

    def __init__(
        self,
        policy: TorchPolicy,
        config: REMEConfig = REMEConfig(),
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        torch.manual_seed(seed)
        self.policy, self.config, self.device = policy, config, device
        # two outputs (reward, cost) per action and head
        self.q = MultiHeadQ(config.n_heads, config.hidden, 2 * N_ACTIONS).to(device)
        self.q_target = MultiHeadQ(config.n_heads, config.hidden, 2 * N_ACTIONS).to(
            device
        )
        self.q_target.load_state_dict(self.q.state_dict())
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.n_updates = 0
        self.train_seconds = 0.0
        self.horizon: int | None = config.horizon

    def warm_start(
        self, dataset_rewards: np.ndarray, dataset_costs: np.ndarray
    ) -> None:
        """Start every head's per-day values at the logged mean reward and cost per day.

        The output layer's bias is set to those means (and its weights scaled down), so
        before any update the evaluator predicts the logging policy's daily retention
        and spend -- an error of (policy - logging) rather than (policy - 0) for the
        30-day bootstrapping to remove.
        """
        with torch.no_grad():
            for net in (self.q, self.q_target):
                last = net.body[-1]
                bias = last.bias.view(self.config.n_heads, 2, N_ACTIONS)
                bias[:, 0, :] = float(np.mean(dataset_rewards))
                bias[:, 1, :] = float(np.mean(dataset_costs))
                last.weight.mul_(0.1)

    def set_horizon(self, horizon: int) -> None:
        """Fix the episode length (from the data); refuse one that contradicts the
        config."""
        if self.config.horizon is not None and self.config.horizon != horizon:
            raise ConfigError(
                f"the config says horizon {self.config.horizon} but the "
                "data's episodes last "
                f"{horizon} days"
            )
        self.horizon = int(horizon)

    def _values(
        self, net: MultiHeadQ, obs: torch.Tensor, lam: torch.Tensor
    ) -> torch.Tensor:
        """``(batch, K, 2, A)``: reward and cost values per head and action."""
        return net(obs, lam).view(-1, self.config.n_heads, 2, N_ACTIONS)

    def loss(self, b: dict[str, torch.Tensor], alpha: torch.Tensor) -> torch.Tensor:
        """Huber TD loss of the α-mixture, reward and cost together, target action
        from the policy."""
        cfg = self.config
        with torch.no_grad():
            next_action = self.policy(b["next_obs"], b["lam"]).long()
            v_next = self._values(self.q_target, b["next_obs"], b["lam"])
            v_next = torch.einsum("bkxa,k->bxa", v_next, alpha)  # (batch, 2, A)
            v_next = v_next.gather(
                2, next_action.view(-1, 1, 1).expand(-1, 2, 1)
            ).squeeze(2)
            signal = torch.stack([b["rewards"], b["costs"]], dim=1)
            remaining = self.remaining_days(b["obs"]).unsqueeze(1)  # H - t, at least 1
            target = (
                signal
                + (1.0 - b["terminals"]).unsqueeze(1) * (remaining - 1.0) * v_next
            ) / remaining
        q = torch.einsum("bkxa,k->bxa", self._values(self.q, b["obs"], b["lam"]), alpha)
        q_taken = q.gather(2, b["actions"].view(-1, 1, 1).expand(-1, 2, 1)).squeeze(2)
        return F.huber_loss(q_taken, target, delta=cfg.huber_delta)

    def remaining_days(self, obs_scaled: torch.Tensor) -> torch.Tensor:
        """``H - t`` from the (scaled) day in the state, clipped to at least one day."""
        if self.horizon is None:
            raise ConfigError(
                "the horizon is unknown: call fit() (it reads it from "
                "the data) or set_horizon()"
            )
        day = torch.round(obs_scaled[:, 0] / float(STATE_SCALE[0]))
        return (self.horizon - day).clamp(min=1.0)

    def update(self, batch: Batch) -> float:
        """One gradient step on a minibatch; returns the loss."""
        start = time.perf_counter()
        alpha = random_convex_weights(self.config.n_heads, self.generator).to(
            self.device
        )
        loss = self.loss(to_tensors(batch, self.device), alpha)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.n_updates += 1
        if self.n_updates % self.config.target_update_every == 0:
            self.q_target.load_state_dict(self.q.state_dict())
        self.train_seconds += time.perf_counter() - start
        return loss.item()

    def fit(
        self,
        sampler: LambdaSampler,
        n_steps: int,
        rng: np.random.Generator,
        progress: bool = False,
    ) -> list[float]:
        """``n_steps`` updates on minibatches from ``sampler``; returns every loss."""
        from tqdm.auto import trange

        self.set_horizon(data_horizon(sampler.dataset))
        if self.n_updates == 0:
            self.warm_start(sampler.dataset.rewards, sampler.dataset.costs)
        return [
            self.update(sampler.sample(self.config.batch_size, rng))
            for _ in trange(n_steps, disable=not progress, desc="REME", leave=False)
        ]

    @torch.no_grad()
    def estimate(self, initial_states: np.ndarray, lam: float) -> ValueEstimate:
        """Retention and cost per user-day of the policy at ``λ``, averaged over
        ``initial_states``."""
        check_initial_states(initial_states)
        obs = torch.as_tensor(initial_states * STATE_SCALE, device=self.device)
        lam_t = torch.full((obs.shape[0],), float(lam), device=self.device)
        action = self.policy(obs, lam_t).long()
        values = self._values(self.q, obs, lam_t).mean(dim=1)  # average head, (n, 2, A)
        taken = (
            values.gather(2, action.view(-1, 1, 1).expand(-1, 2, 1))
            .squeeze(2)
            .mean(dim=0)
        )
        return ValueEstimate(float(lam), float(taken[0]), float(taken[1]))

    @torch.no_grad()
    def totals(self, states: np.ndarray, actions: np.ndarray, lam: float) -> np.ndarray:
        """``(n, 2)``: estimated remaining-episode totals of retention and cost after
        taking ``actions`` in ``states``."""
        if (
            states.ndim != 2
            or states.shape[1] != STATE_DIM
            or actions.shape != (states.shape[0],)
        ):
            raise SchemaError(
                f"need states (n, {STATE_DIM}) and actions (n,), got "
                f"{states.shape} and {actions.shape}"
            )
        obs = torch.as_tensor(states * STATE_SCALE, device=self.device)
        lam_t = torch.full((obs.shape[0],), float(lam), device=self.device)
        per_day = self._values(self.q, obs, lam_t).mean(dim=1)
        idx = (
            torch.as_tensor(actions, device=self.device)
            .long()
            .view(-1, 1, 1)
            .expand(-1, 2, 1)
        )
        return (
            (per_day.gather(2, idx).squeeze(2) * self.remaining_days(obs).unsqueeze(1))
            .cpu()
            .numpy()
        )


def initial_states(observations: np.ndarray) -> np.ndarray:
    """The day-0 states of a dataset (where every episode starts)."""
    return observations[observations[:, 0] == 0]
