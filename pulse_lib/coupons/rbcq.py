"""R-BCQ: discrete BCQ with a REM multi-head Q-network, conditioned on λ (BCORLE(λ),
Section 4.2).

One readable file in the spirit of CleanRL: every hyperparameter is a field of
:class:`RBCQConfig`.

* **BCQ** (Fujimoto et al., 2019; discrete version): a behaviour model ``G(a | s, λ)``
  is fitted by cross-entropy to the logged actions; the greedy step may only choose
  actions whose probability, relative to the most likely action, reaches the threshold
  ``τ`` -- so the policy stays where the data has support.
* **REM** (Agarwal et al., 2020): ``K`` Q-heads; every minibatch draws convex weights
  ``α`` on the simplex and trains the mixture ``Σ α_k Q_k`` with a Huber TD loss.
* **λ-conditioning**: λ is an input of both networks and the reward is ``r - λ c``, so
  one training serves every λ of the grid.
* **One objective**: the problem (Chapter 9), the budget and REME count retention and
  spend per user-day over the whole episode, *undiscounted*; so does R-BCQ. The day is
  in the state and the episode ends on day ``H`` (read from the data), so an
  undiscounted value is well defined. As in REME the network predicts the value *per
  remaining day*, ``Q(s, a) = (H - t) f(s, a)``, and the target is ``f(s, a) <- (r - λc
  + (H - t - 1) f(s', a*)) / (H - t)``: numbers near a daily reward, so 30 days of
  bootstrapping start from the right scale. Scaling by ``H - t > 0`` does not change
  which action is best in a state.

``n_heads=1`` gives plain discrete BCQ; ``bcq_threshold=0`` gives plain REM; both are
baselines.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pulse_lib.coupons.dataset import STATE_SCALE, Batch, LambdaSampler, data_horizon
from pulse_lib.coupons.simulator import N_ACTIONS, STATE_DIM, Policy
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.validation import check_fields


@dataclass(frozen=True)
class RBCQConfig:
    """Every hyperparameter of R-BCQ (defaults: the paper's 10 heads and BCQ
    threshold 0.3)."""

    n_heads: int = 10  # K: Q-heads mixed by REM
    hidden: int = 64  # units in each of the two hidden layers
    lr: float = 3e-4  # Adam learning rate (Q-network and behaviour model)
    batch_size: int = 256  # transitions (each with its own λ) per update
    bcq_threshold: float = 0.3  # τ: eligible if G(a|s,λ) / max_a' G(a'|s,λ) >= τ
    huber_delta: float = 1.0  # Huber loss switches from squared to linear here
    # hard copy of the online network into the target network
    target_update_every: int = 200
    # the λ range the networks were trained on (act() refuses outside it)
    lambda_low: float = 0.0
    lambda_high: float = 1.0  # upper end of that λ range
    horizon: int | None = None  # episode length H; None: read from the data by fit()

    def __post_init__(self) -> None:
        counts = ("n_heads", "hidden", "batch_size", "target_update_every", "horizon")
        check_fields(
            self,
            integer=counts,
            positive=(*counts, "lr", "huber_delta"),
            optional=("horizon",),
            probability=("bcq_threshold",),
            non_negative=("lambda_low",),
            finite=("lambda_high",),
        )
        if self.lambda_low > self.lambda_high:
            raise ConfigError(
                f"lambda_low={self.lambda_low} > lambda_high={self.lambda_high}"
            )


def mlp(n_in: int, n_out: int, hidden: int) -> nn.Sequential:
    """Two hidden ReLU layers: enough for a 45-number input."""
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_out),
    )


class MultiHeadQ(nn.Module):
    """``Q_k(s, a, λ)`` for ``K`` heads: input ``[s, λ]`` (45 numbers), output
    ``(batch, K, 21)``."""

    def __init__(
        self, n_heads: int, hidden: int, n_outputs_per_head: int = N_ACTIONS
    ) -> None:
        super().__init__()
        self.n_heads, self.n_out = n_heads, n_outputs_per_head
        self.body = mlp(STATE_DIM + 1, n_heads * n_outputs_per_head, hidden)

    def forward(self, obs: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, lam.unsqueeze(-1)], dim=-1)
        return self.body(x).view(-1, self.n_heads, self.n_out)


def random_convex_weights(
    n_heads: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """REM's mixture weights: ``u_k ~ U(0, 1)`` normalised to sum to one (a point on
    the simplex)."""
    u = torch.rand(n_heads, generator=generator)
    return u / u.sum()


def mix(q: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``Σ_k α_k Q_k``: ``(batch, K, A)`` and ``(K,)`` -> ``(batch, A)``."""
    return torch.einsum("bka,k->ba", q, alpha)


def eligible_mask(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """BCQ's action filter: ``G(a|s) / max_a' G(a'|s) >= τ`` (computed in log space
    for stability)."""
    log_probs = F.log_softmax(logits, dim=-1)
    ratio = torch.exp(log_probs - log_probs.max(dim=-1, keepdim=True).values)
    return ratio >= threshold


def to_tensors(batch: Batch, device: str) -> dict[str, torch.Tensor]:
    """Numpy minibatch -> torch tensors on ``device``."""
    return {
        "obs": torch.as_tensor(batch.obs, device=device),
        "actions": torch.as_tensor(batch.actions, device=device),
        "rewards": torch.as_tensor(batch.rewards, device=device),
        "costs": torch.as_tensor(batch.costs, device=device),
        "next_obs": torch.as_tensor(batch.next_obs, device=device),
        "terminals": torch.as_tensor(batch.terminals, device=device),
        "lam": torch.as_tensor(batch.lam, device=device),
    }


class RBCQ:
    """The learner: ``update`` takes one minibatch; ``fit`` runs many; ``policy(λ)``
    acts in the simulator."""

    def __init__(
        self, config: RBCQConfig = RBCQConfig(), device: str = "cpu", seed: int = 0
    ) -> None:
        torch.manual_seed(seed)
        self.config, self.device = config, device
        self.q = MultiHeadQ(config.n_heads, config.hidden).to(device)
        self.q_target = MultiHeadQ(config.n_heads, config.hidden).to(device)
        self.q_target.load_state_dict(self.q.state_dict())
        # G(a | s, λ)
        self.behaviour = mlp(STATE_DIM + 1, N_ACTIONS, config.hidden).to(device)
        self.optimizer = torch.optim.Adam(
            [*self.q.parameters(), *self.behaviour.parameters()], lr=config.lr
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.n_updates = 0
        self.train_seconds = 0.0
        self.horizon: int | None = config.horizon

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

    def remaining_days(self, obs_scaled: torch.Tensor) -> torch.Tensor:
        """``H - t`` from the (scaled) day in the state, clipped to at least one day."""
        if self.horizon is None:
            raise ConfigError(
                "the horizon is unknown: call fit() (it reads it from "
                "the data) or set_horizon()"
            )
        day = torch.round(obs_scaled[:, 0] / float(STATE_SCALE[0]))
        return (self.horizon - day).clamp(min=1.0)

    def behaviour_logits(self, obs: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Logits of the behaviour model ``G(a | s, λ)``."""
        return self.behaviour(torch.cat([obs, lam.unsqueeze(-1)], dim=-1))

    def losses(
        self, b: dict[str, torch.Tensor], alpha: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TD loss of the α-mixture (Huber) and the behaviour model's cross-entropy,
        on one batch."""
        cfg = self.config
        reward = b["rewards"] - b["lam"] * b["costs"]  # the Lagrangian reward r - λc
        with torch.no_grad():
            # choose a' with the online mixture among BCQ-eligible actions; evaluate it
            # with the target
            eligible = eligible_mask(
                self.behaviour_logits(b["next_obs"], b["lam"]), cfg.bcq_threshold
            )
            q_next_online = mix(self.q(b["next_obs"], b["lam"]), alpha).masked_fill(
                ~eligible, -torch.inf
            )
            next_action = q_next_online.argmax(dim=-1, keepdim=True)
            q_next = (
                mix(self.q_target(b["next_obs"], b["lam"]), alpha)
                .gather(1, next_action)
                .squeeze(1)
            )
            remaining = self.remaining_days(b["obs"])  # undiscounted, per remaining day
            target = (
                reward + (1.0 - b["terminals"]) * (remaining - 1.0) * q_next
            ) / remaining
        q_taken = (
            mix(self.q(b["obs"], b["lam"]), alpha)
            .gather(1, b["actions"].unsqueeze(1))
            .squeeze(1)
        )
        td_loss = F.huber_loss(q_taken, target, delta=cfg.huber_delta)
        bc_loss = F.cross_entropy(
            self.behaviour_logits(b["obs"], b["lam"]), b["actions"]
        )
        return td_loss, bc_loss

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on a minibatch; returns the two losses."""
        start = time.perf_counter()
        alpha = random_convex_weights(self.config.n_heads, self.generator).to(
            self.device
        )
        td_loss, bc_loss = self.losses(to_tensors(batch, self.device), alpha)
        self.optimizer.zero_grad(set_to_none=True)
        (td_loss + bc_loss).backward()
        self.optimizer.step()
        self.n_updates += 1
        if self.n_updates % self.config.target_update_every == 0:
            self.q_target.load_state_dict(self.q.state_dict())
        self.train_seconds += time.perf_counter() - start
        return {"td_loss": td_loss.item(), "bc_loss": bc_loss.item()}

    def fit(
        self,
        sampler: LambdaSampler,
        n_steps: int,
        rng: np.random.Generator,
        progress: bool = False,
        log_every: int = 100,
    ) -> list[dict[str, float]]:
        """``n_steps`` updates on minibatches from ``sampler``; returns the losses
        every ``log_every`` steps."""
        from tqdm.auto import trange

        self.set_horizon(data_horizon(sampler.dataset))
        history = []
        for step in trange(n_steps, disable=not progress, desc="R-BCQ", leave=False):
            out = self.update(sampler.sample(self.config.batch_size, rng))
            if step % log_every == 0 or step == n_steps - 1:
                history.append({"step": step, **out})
        return history

    @torch.no_grad()
    def greedy(self, obs_scaled: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Greedy BCQ action under the mean of the heads (REM acts with the average
        head)."""
        eligible = eligible_mask(
            self.behaviour_logits(obs_scaled, lam), self.config.bcq_threshold
        )
        q = self.q(obs_scaled, lam).mean(dim=1).masked_fill(~eligible, -torch.inf)
        return q.argmax(dim=-1)

    def check_lambda(self, lam: float) -> None:
        """Refuse a λ outside the trained range (the network never saw it)."""
        lo, hi = self.config.lambda_low, self.config.lambda_high
        if not np.isfinite(lam) or lam < lo - 1e-9 or lam > hi + 1e-9:
            raise ConfigError(f"λ={lam} lies outside the trained range [{lo}, {hi}]")

    def policy(self, lam: float) -> Policy:
        """A simulator policy (raw 44-number states -> coupon indices) for this λ."""
        self.check_lambda(lam)

        def act(states: np.ndarray) -> np.ndarray:
            if states.ndim != 2 or states.shape[1] != STATE_DIM:
                raise SchemaError(
                    f"states must have shape (n, {STATE_DIM}), got {states.shape}"
                )
            obs = torch.as_tensor(states * STATE_SCALE, device=self.device)
            lam_t = torch.full((states.shape[0],), float(lam), device=self.device)
            return self.greedy(obs, lam_t).cpu().numpy()

        return act

    def hyperparameters(self) -> dict[str, float | int]:
        """Every setting of this learner, for logs and result files."""
        return asdict(self.config)
