"""Offline agents for PulseRL: d3rlpy wrappers and a plain-PyTorch (QR-)CQL.

The paper's learner is CQL(H) on a quantile-regression DQN (QR-DQN, 200 quantiles, penalty
weight 4, Adam 5e-5, batch 256). d3rlpy's ``DiscreteCQL`` accepts a ``QRQFunctionFactory``; the
plain version here shows the whole update on one screen and is about twice as fast on a CPU.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.pulserl.features import N_FEATURES


def quiet_d3rlpy() -> None:
    """Silence d3rlpy's per-epoch structlog lines (keeps warnings)."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def fit_d3rlpy(algo: Any, dataset: Any, n_steps: int, n_steps_per_epoch: int | None = None) -> Any:
    """``algo.fit`` without logs on disk or progress bars; returns ``algo``."""
    import d3rlpy

    algo.fit(dataset, n_steps=n_steps, n_steps_per_epoch=n_steps_per_epoch or n_steps,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory(), show_progress=False)
    return algo


def greedy_policy(q_values: Any) -> Any:
    """Turn a function ``obs -> (n, 2) Q-values`` into a policy ``obs -> P(send)`` (greedy)."""

    def policy(obs: np.ndarray) -> np.ndarray:
        q = np.asarray(q_values(obs))
        return (q[:, 1] > q[:, 0]).astype(float)

    return policy


def d3rlpy_q_values(algo: Any, obs: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """``(n, 2)`` Q-values (mean over quantiles) of a trained d3rlpy discrete algorithm."""
    obs = np.asarray(obs, dtype=np.float32)
    out = np.empty((obs.shape[0], 2), np.float32)
    for start in range(0, obs.shape[0], batch):
        part = obs[start:start + batch]
        for a in (0, 1):
            out[start:start + batch, a] = algo.predict_value(part, np.full(part.shape[0], a))
    return out


@dataclass(frozen=True)
class CQLConfig:
    """Settings of :class:`TorchCQL`.

    Defaults follow the authors' released configuration (``dlb-rl/pulse-rl``:
    ``src/train_model/batch_rl/fixed_replay/configs/quantile.gin`` and
    ``models/CQL_model.yaml``): gamma 0.99, Adam with learning rate 5e-5 and epsilon
    3.125e-4, target network copied every 2,000 gradient steps (8,000 agent steps at one
    update per 4), batch 256, CQL(H) weight 4. Two exceptions, both ours: ``n_quantiles``
    defaults to 1 (an ordinary mean Q-network; the paper's QR-DQN has 200, see
    :meth:`paper`) and the hidden sizes (256, 256) are not taken from the release.
    Chapters' ``ci`` profiles override the learning rate, target interval, width and
    quantiles to train in minutes on a CPU, and say so.
    """

    n_quantiles: int = 1  #: 1 = an ordinary (mean) Q-network; the paper uses 200
    alpha: float = 4.0  #: weight of the CQL(H) penalty (``minq_weight``); 0 gives (double) DQN
    gamma: float = 0.99  #: discount (released gin config)
    learning_rate: float = 5e-5  #: Adam learning rate (released gin config)
    adam_epsilon: float = 3.125e-4  #: Adam epsilon (released gin config)
    batch_size: int = 256  #: minibatch size (released gin config)
    hidden: tuple[int, ...] = (256, 256)  #: MLP widths (ours; not in the released config)
    target_update_interval: int = 2_000  #: gradient steps between target copies (released)
    huber_kappa: float = 1.0  #: quantile Huber threshold (QR-DQN's default)

    @classmethod
    def paper(cls, **overrides: object) -> CQLConfig:
        """The released learner: QR-DQN with 200 quantiles + CQL(H) at weight 4."""
        return cls(**{"n_quantiles": 200, **overrides})  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.n_quantiles < 1:
            raise ConfigError(f"n_quantiles must be >= 1, got {self.n_quantiles}")
        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")


class QuantileQNetwork(nn.Module):
    """MLP from 63 features to ``(actions, quantiles)`` return quantiles."""

    def __init__(self, n_features: int = N_FEATURES, n_actions: int = 2, n_quantiles: int = 1,
                 hidden: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_actions * n_quantiles))
        self.body = nn.Sequential(*layers)
        self.n_actions, self.n_quantiles = n_actions, n_quantiles

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs).view(-1, self.n_actions, self.n_quantiles)


def quantile_huber_loss(pred: torch.Tensor, target: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """QR-DQN loss between predicted quantiles ``(B, N)`` and target samples ``(B, N')``.

    Pairwise over quantiles (a ``B x N x N'`` tensor: why 200 quantiles are slow on a CPU).
    With ``N = 1`` this is half the Huber loss, minimised by the median: the paper's quantile
    idea degenerates gracefully to a robust mean-like regression.
    """
    n = pred.shape[1]
    taus = (torch.arange(n, dtype=pred.dtype, device=pred.device) + 0.5) / n
    diff = target.unsqueeze(1) - pred.unsqueeze(2)  # (B, N, N')
    huber = torch.where(diff.abs() <= kappa, 0.5 * diff.pow(2), kappa * (diff.abs() - 0.5 * kappa))
    weight = (taus.view(1, -1, 1) - (diff.detach() < 0).to(pred.dtype)).abs()
    return (weight * huber / kappa).sum(dim=1).mean(dim=1).mean()


class TorchCQL:
    """Discrete CQL(H) on a (quantile) Q-network, in plain PyTorch.

    Loss = TD loss (quantile Huber against double-DQN targets) + ``alpha`` *
    ``E_s[logsumexp_a Q(s, a) - Q(s, a_logged)]`` with ``Q`` the mean over quantiles.
    """

    def __init__(self, config: CQLConfig | None = None, device: str = "cpu", seed: int = 0) -> None:
        self.config = config or CQLConfig()
        torch.manual_seed(seed)
        self.device = device
        c = self.config
        self.net = QuantileQNetwork(n_quantiles=c.n_quantiles, hidden=c.hidden).to(device)
        self.target = copy.deepcopy(self.net)
        self.optim = torch.optim.Adam(self.net.parameters(), lr=c.learning_rate, eps=c.adam_epsilon)
        self.steps = 0
        self._rng = np.random.default_rng(seed)

    def update(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, next_obs: torch.Tensor,
               done: torch.Tensor) -> dict[str, float]:
        """One gradient step on a batch of tensors; returns the losses."""
        c = self.config
        quantiles = self.net(obs)  # (B, A, N)
        taken = quantiles[torch.arange(obs.shape[0]), act]  # (B, N)
        with torch.no_grad():
            next_action = self.net(next_obs).mean(dim=2).argmax(dim=1)  # double DQN: online picks
            next_q = self.target(next_obs)[torch.arange(obs.shape[0]), next_action]  # target values
            target = rew.unsqueeze(1) + c.gamma * (1.0 - done.unsqueeze(1)) * next_q
        td_loss = quantile_huber_loss(taken, target, c.huber_kappa)
        q_mean = quantiles.mean(dim=2)
        conservative = (torch.logsumexp(q_mean, dim=1) - q_mean[torch.arange(obs.shape[0]), act]).mean()
        loss = td_loss + c.alpha * conservative
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        self.steps += 1
        if self.steps % c.target_update_interval == 0:
            self.target.load_state_dict(self.net.state_dict())
        return {"loss": float(loss.detach()), "td_loss": float(td_loss.detach()),
                "conservative_loss": float(conservative.detach())}

    def fit(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            dones: np.ndarray, n_steps: int, progress: bool = False) -> list[dict[str, float]]:
        """Train for ``n_steps`` minibatch updates sampled uniformly from the arrays."""
        n = _check_transitions(obs, actions, rewards, next_obs, dones)
        as_t = lambda x, dt: torch.as_tensor(np.array(x), dtype=dt, device=self.device)  # noqa: E731
        o, o2 = as_t(obs, torch.float32), as_t(next_obs, torch.float32)
        a, r, d = as_t(actions, torch.int64), as_t(rewards, torch.float32), as_t(dones, torch.float32)
        history = []
        steps = range(n_steps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"CQL a={self.config.alpha} N={self.config.n_quantiles}", leave=False)
        for _ in steps:
            idx = torch.as_tensor(self._rng.integers(0, n, self.config.batch_size), device=self.device)
            history.append(self.update(o[idx], a[idx], r[idx], o2[idx], d[idx]))
        return history

    @torch.no_grad()
    def q_values(self, obs: np.ndarray, batch: int = 65_536) -> np.ndarray:
        """``(n, 2)`` mean Q-values."""
        obs = np.asarray(obs, dtype=np.float32)
        out = []
        for start in range(0, obs.shape[0], batch):
            x = torch.as_tensor(np.array(obs[start:start + batch]), device=self.device)
            out.append(self.net(x).mean(dim=2).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2), np.float32)

    def policy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy policy: probability of sending (0 or 1)."""
        q = self.q_values(obs)
        return (q[:, 1] > q[:, 0]).astype(float)


def _check_transitions(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                       dones: np.ndarray) -> int:
    obs, next_obs = np.asarray(obs), np.asarray(next_obs)
    if obs.ndim != 2 or obs.shape[1] != N_FEATURES:
        raise SchemaError(f"obs must have shape (n, {N_FEATURES}), got {obs.shape}")
    n = obs.shape[0]
    if next_obs.shape != obs.shape:
        raise SchemaError(f"next_obs has shape {next_obs.shape}, obs has {obs.shape}")
    for name, arr in (("actions", actions), ("rewards", rewards), ("dones", dones)):
        if np.asarray(arr).shape != (n,):
            raise SchemaError(f"{name} must have shape ({n},), got {np.asarray(arr).shape}")
    if not np.isin(actions, (0, 1)).all():
        raise SchemaError("actions must be 0 or 1")
    if not np.isfinite(rewards).all():
        raise SchemaError(f"rewards has a non-finite value at row {int(np.flatnonzero(~np.isfinite(rewards))[0])}")
    return n
