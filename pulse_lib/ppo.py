"""Proximal Policy Optimization for the budget environment, from scratch in PyTorch.

One readable module in the spirit of CleanRL: every hyperparameter is a field of
:class:`PPOConfig`; the loss (:func:`ppo_loss`) is a plain function so it can be tested
alone. The agent trains on :class:`pulse_lib.budget_env.BatchedBudgetEnv` (many episodes
per step), on ``cuda`` when present.

* Policy: a Gaussian over an unbounded vector ``u`` (K + 1 entries); the environment
  action is ``[sigmoid(u_0 + prior), softmax(u_1..u_K)]`` (fraction of the remaining
  budget, channel split). With ``pace_prior`` (the default) ``prior = logit(1 / days
  left)``, so ``u = 0`` means "pace evenly, split evenly" and the network learns
  departures from that; without it the agent must discover pacing itself. The squashing
  is deterministic given the observation, so the probability ratio of PPO is the ratio
  of Gaussian densities of ``u``.
* Value network: a separate MLP on the same observation.
* Advantages: GAE(λ) (Schulman et al., 2016); objective: the clipped surrogate (Schulman
  et al., 2017).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from pulse_lib.budget_env import BatchedBudgetEnv, BatchState, BudgetEnvConfig
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.validation import check_fields


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Every PPO setting in one place."""

    total_steps: int = 200_000  #: environment steps (days) over all parallel episodes
    #: episodes simulated in parallel; one rollout = one full episode each
    n_envs: int = 64
    #: higher than CleanRL's 3e-4: small networks, short runs
    learning_rate: float = 1e-3
    anneal_lr: bool = True  #: linearly decay the learning rate to 0
    gamma: float = 1.0  #: no discount: the budget period is short and its end is fixed
    #: GAE's lambda: 0 is one-step TD, 1 the Monte Carlo return
    gae_lambda: float = 0.95
    update_epochs: int = 4  #: passes over each rollout
    n_minibatches: int = 4  #: minibatches each rollout is split into per epoch
    #: the PPO band: ratios outside [1 - clip, 1 + clip] get no gradient
    clip_coef: float = 0.2
    #: clip the value loss too (CleanRL's default is on; off is simpler)
    clip_value: bool = False
    ent_coef: float = 0.0  #: weight of the entropy bonus (>= 0)
    vf_coef: float = 0.5  #: weight of the value loss (>= 0)
    max_grad_norm: float = 0.5  #: gradients are clipped to this global norm (> 0)
    #: stop the epoch loop early when the approximate KL exceeds it
    target_kl: float | None = None
    hidden: int = 64  #: width of both MLPs (two hidden layers, tanh)
    #: initial log sd of the Gaussian: exploration noise costs return here
    init_log_std: float = -1.5
    #: centre the spend fraction on the even pace 1 / (days left)
    pace_prior: bool = True
    #: rewards are multiplied by this before the value fit (returns ~60)
    reward_scale: float = 0.01
    seed: int = 0  #: seeds torch and the environment's generator
    device: str = "cpu"  #: torch device of the networks ("cpu" or "cuda")

    def __post_init__(self) -> None:
        counts = ("total_steps", "n_envs", "update_epochs", "n_minibatches", "hidden")
        check_fields(
            self,
            integer=(*counts, "seed"),
            non_negative=("seed", "ent_coef", "vf_coef"),
            positive=(
                *counts,
                "learning_rate",
                "max_grad_norm",
                "reward_scale",
                "target_kl",
            ),
            probability=("gamma", "gae_lambda"),
            finite=("init_log_std",),
            ranges={"clip_coef": (0.0, 1.0, "()")},
            optional=("target_kl",),
            boolean=("anneal_lr", "clip_value", "pace_prior"),
        )
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(
                "PPOConfig.device must be a torch device name like "
                f"'cpu', got {self.device!r}"
            )


def _layer(n_in: int, n_out: int, gain: float = float(np.sqrt(2))) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class Agent(nn.Module):
    """Gaussian policy (actor) and value network (critic), two-layer tanh MLPs."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: int = 64,
        init_log_std: float = -0.5,
    ) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            _layer(obs_dim, hidden),
            nn.Tanh(),
            _layer(hidden, hidden),
            nn.Tanh(),
            _layer(hidden, 1, gain=1.0),
        )
        self.actor_mean = nn.Sequential(
            _layer(obs_dim, hidden),
            nn.Tanh(),
            _layer(hidden, hidden),
            nn.Tanh(),
            _layer(hidden, action_dim, gain=0.01),
        )
        self.actor_log_std = nn.Parameter(
            torch.full((action_dim,), float(init_log_std))
        )
        #: horizon of the pace prior used in training (None: no prior); read by
        #: agent_policy
        self.pace_horizon: int | None = None

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.actor_mean(obs)
        return torch.distributions.Normal(
            mean, self.actor_log_std.expand_as(mean).exp()
        )

    def act(
        self, obs: torch.Tensor, u: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or score a given) pre-squash action ``u``: returns u, log-prob,
        entropy, value."""
        dist = self.distribution(obs)
        if u is None:
            u = dist.sample()
        return u, dist.log_prob(u).sum(-1), dist.entropy().sum(-1), self.value(obs)


def squash(
    u: torch.Tensor, obs: torch.Tensor | None = None, horizon: int | None = None
) -> torch.Tensor:
    """Environment action from the Gaussian sample: [sigmoid(u_0 + prior),
    softmax(u_1..u_K)].

    With ``obs`` and ``horizon`` the fraction is centred on the even pace: ``prior =
    logit(1 / days_left)``, days left read from observation entry 1 (days left /
    horizon).
    """
    shift = torch.zeros_like(u[..., :1])
    if horizon is not None:
        if obs is None:
            raise ConfigError("the pace prior needs the observation (days left)")
        days_left = torch.clamp(torch.round(obs[..., 1:2] * horizon), min=1.0)
        pace = torch.clamp(1.0 / days_left, max=1.0 - 1e-6)
        shift = torch.log(pace) - torch.log1p(-pace)
    return torch.cat(
        [torch.sigmoid(u[..., :1] + shift), torch.softmax(u[..., 1:], dim=-1)], dim=-1
    )


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    last_value: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns for a rollout of shape (T, N).

    ``dones[t]`` is 1 when the episode ended after step t (no bootstrap from ``values[t
    + 1]``).
    """
    if rewards.shape != values.shape or rewards.shape != dones.shape:
        raise SchemaError(
            f"rewards {tuple(rewards.shape)}, values "
            f"{tuple(values.shape)} and dones {tuple(dones.shape)} "
            "must match"
        )
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(steps)):
        next_value = last_value if t == steps - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        running = delta + gamma * lam * not_done * running
        advantages[t] = running
    return advantages, advantages + values


def ppo_loss(
    agent: Agent, batch: dict[str, torch.Tensor], cfg: PPOConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The PPO objective on one minibatch: clipped surrogate + value loss - entropy
    bonus.

    ``batch`` holds ``obs``, ``u`` (pre-squash actions), ``logprob`` (under the
    behaviour policy), ``advantages``, ``returns`` and ``values`` (old value
    predictions).
    """
    _, new_logprob, entropy, new_value = agent.act(batch["obs"], batch["u"])
    log_ratio = new_logprob - batch["logprob"]
    ratio = log_ratio.exp()
    adv = batch["advantages"]
    if adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    # clipped surrogate: the pessimistic (max of losses) of the raw and the clipped
    # ratio
    policy_loss = torch.max(
        -adv * ratio, -adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
    ).mean()
    if cfg.clip_value:
        clipped = batch["values"] + torch.clamp(
            new_value - batch["values"], -cfg.clip_coef, cfg.clip_coef
        )
        value_loss = (
            0.5
            * torch.max(
                (new_value - batch["returns"]) ** 2, (clipped - batch["returns"]) ** 2
            ).mean()
        )
    else:
        value_loss = 0.5 * ((new_value - batch["returns"]) ** 2).mean()
    entropy_mean = entropy.mean()
    loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy_mean
    with torch.no_grad():
        stats = {
            "policy_loss": float(policy_loss),
            "value_loss": float(value_loss),
            "entropy": float(entropy_mean),
            "approx_kl": float(((ratio - 1) - log_ratio).mean()),
            "clip_fraction": float(((ratio - 1).abs() > cfg.clip_coef).float().mean()),
        }
    return loss, stats


@dataclasses.dataclass
class TrainResult:
    """A trained agent and its learning curve (one row per rollout)."""

    agent: Agent
    history: list[dict[str, float]]


def train(
    env: BatchedBudgetEnv,
    cfg: PPOConfig,
    progress: Callable[[Any], Any] | None = None,
    callback: Callable[[int, Agent], dict[str, float] | None] | None = None,
) -> TrainResult:
    """Train PPO on ``env`` (its ``n_envs`` must equal ``cfg.n_envs``).

    Each rollout plays one full episode in every parallel environment. The history
    records, per rollout, the mean undiscounted (unscaled) episode return, the wall
    time, and the update's diagnostics averaged over all its minibatches: policy and
    value loss, entropy, approximate KL between the old and new policy, clip fraction
    (share of samples whose ratio left the band), the value network's explained variance
    of the returns (before the update), the epochs run (fewer than ``update_epochs``
    when ``target_kl`` stopped it) and the mean action noise sd. ``callback(iteration,
    agent)`` runs after each update; a dict it returns is added to that rollout's row
    (e.g. an evaluation of the current policy). ``progress`` wraps the iteration range
    (e.g. ``tqdm.auto.tqdm``).
    """
    if env.n_envs != cfg.n_envs:
        raise ConfigError(
            f"env has {env.n_envs} parallel episodes but cfg.n_envs is {cfg.n_envs}"
        )
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    horizon = env.config.horizon_days
    batch_size = horizon * cfg.n_envs
    minibatch = max(1, batch_size // cfg.n_minibatches)
    n_iterations = max(1, cfg.total_steps // batch_size)
    agent = Agent(env.obs_dim, env.action_dim, cfg.hidden, cfg.init_log_std).to(device)
    agent.pace_horizon = horizon if cfg.pace_prior else None
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    iterations = range(1, n_iterations + 1)
    if progress is not None:
        iterations = progress(iterations)
    for iteration in iterations:
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.learning_rate * (
                1.0 - (iteration - 1) / n_iterations
            )
        obs_buf = torch.zeros((horizon, cfg.n_envs, env.obs_dim), device=device)
        u_buf = torch.zeros((horizon, cfg.n_envs, env.action_dim), device=device)
        logprob_buf = torch.zeros((horizon, cfg.n_envs), device=device)
        reward_buf = torch.zeros((horizon, cfg.n_envs), device=device)
        value_buf = torch.zeros((horizon, cfg.n_envs), device=device)
        done_buf = torch.zeros((horizon, cfg.n_envs), device=device)
        obs = env.reset(seed=int(rng.integers(2**31)))
        episode_return = np.zeros(cfg.n_envs)
        for t in range(horizon):
            obs_t = torch.as_tensor(obs, device=device)
            with torch.no_grad():
                u, logprob, _, value = agent.act(obs_t)
            obs_buf[t], u_buf[t], logprob_buf[t], value_buf[t] = (
                obs_t,
                u,
                logprob,
                value,
            )
            env_action = squash(u, obs_t, horizon if cfg.pace_prior else None)
            obs, rewards, done, _ = env.step(
                env_action.cpu().numpy().astype(np.float64)
            )
            episode_return += rewards
            reward_buf[t] = torch.as_tensor(
                rewards * cfg.reward_scale, dtype=torch.float32, device=device
            )
            done_buf[t] = float(done)
        advantages, returns = gae(
            reward_buf,
            value_buf,
            torch.zeros(cfg.n_envs, device=device),
            done_buf,
            cfg.gamma,
            cfg.gae_lambda,
        )
        flat = {
            "obs": obs_buf.reshape(batch_size, -1),
            "u": u_buf.reshape(batch_size, -1),
            "logprob": logprob_buf.reshape(-1),
            "advantages": advantages.reshape(-1),
            "returns": returns.reshape(-1),
            "values": value_buf.reshape(-1),
        }
        totals: dict[str, float] = {}
        n_updates = 0
        epochs_run = 0
        for _epoch in range(cfg.update_epochs):
            order = torch.randperm(batch_size, device=device)
            epoch_kl, epoch_updates = 0.0, 0
            for first in range(0, batch_size, minibatch):
                index = order[first : first + minibatch]
                loss, stats = ppo_loss(
                    agent, {k: v[index] for k, v in flat.items()}, cfg
                )
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                optimizer.step()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                n_updates += 1
                epoch_kl += stats["approx_kl"]
                epoch_updates += 1
            epochs_run += 1
            if cfg.target_kl is not None and epoch_kl / epoch_updates > cfg.target_kl:
                break
        # diagnostics averaged over every minibatch update of this rollout
        averaged = {key: value / n_updates for key, value in totals.items()}
        returns_np = returns.reshape(-1).cpu().numpy()
        values_np = value_buf.reshape(-1).cpu().numpy()
        var = float(np.var(returns_np))
        explained = (
            float(1 - np.var(returns_np - values_np) / var) if var > 0 else float("nan")
        )
        history.append(
            {
                "iteration": iteration,
                "env_steps": iteration * batch_size,
                "mean_return": float(episode_return.mean()),
                "wall_seconds": time.perf_counter() - start,
                **averaged,
                "explained_variance": explained,
                "epochs_run": epochs_run,
                "action_std": float(agent.actor_log_std.detach().exp().mean()),
            }
        )
        if callback is not None:
            extra = callback(iteration, agent)
            if extra:
                history[-1].update(extra)
    return TrainResult(agent=agent, history=history)


def agent_policy(
    agent: Agent, device: str = "cpu", deterministic: bool = True
) -> Callable[[np.ndarray, BatchState, BudgetEnvConfig], np.ndarray]:
    """A policy for :func:`pulse_lib.budget_env.run_policy`: the mean action (or a
    sample)."""

    def policy(
        obs: np.ndarray, state: BatchState, config: BudgetEnvConfig
    ) -> np.ndarray:
        with torch.no_grad():
            obs_t = torch.as_tensor(obs, device=device)
            u = (
                agent.actor_mean(obs_t)
                if deterministic
                else agent.distribution(obs_t).sample()
            )
            return squash(u, obs_t, agent.pace_horizon).cpu().numpy().astype(np.float64)

    return policy
