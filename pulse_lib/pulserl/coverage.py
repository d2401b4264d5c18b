"""The coverage experiment of Part III: the same learners on data of narrowing coverage.

Offline RL's question (does conservatism pay?) depends on how well the logged data cover
the actions a good policy needs. This module trains behaviour cloning, offline (double)
DQN, CQL and quantile-regression CQL on one logged table with *one* network, optimiser,
budget and discount, records a learning curve (online value at checkpoints, so under-
training is visible), and measures a learner's ``Q̂`` against Monte-Carlo returns on the
actions the logger rarely took. It backs ``benchmarks/pulserl_coverage_sweep.py`` and
chapter 07.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from pulse_lib.errors import ConfigError
from pulse_lib.pulserl import agents as A
from pulse_lib.pulserl import data as D
from pulse_lib.pulserl import simulator as S
from pulse_lib.pulserl.features import N_FEATURES
from pulse_lib.validation import check_fields, check_layer_widths

Policy = Callable[[np.ndarray], np.ndarray]

#: The learners compared, in display order.
LEARNER_NAMES: tuple[str, ...] = ("BC", "DQN", "CQL", "QR-CQL")


@dataclass(frozen=True)
class SweepConfig:
    """One training budget shared by every learner (equal footing)."""

    n_steps: int = 4_000  #: gradient steps per learner and seed
    n_checkpoints: int = 4  #: online evaluations along training (the learning curve)
    hidden: tuple[int, ...] = (64, 64)  #: MLP widths, all learners
    #: Adam, all learners (the paper's 5e-5 needs ~100x the steps)
    learning_rate: float = 1e-3
    #: gradient steps between target copies (paper: 2,000)
    target_update_interval: int = 200
    batch_size: int = 256  #: the paper's
    alpha: float = 4.0  #: CQL(H) weight, the paper's
    qr_quantiles: int = 32  #: QR-CQL's quantiles (paper: 200, ~20x slower on a CPU)
    gamma: float = 0.99  #: discount of learners and of the truth alike (the paper's)

    def __post_init__(self) -> None:
        counts = (
            "n_steps",
            "n_checkpoints",
            "target_update_interval",
            "batch_size",
            "qr_quantiles",
        )
        check_fields(
            self,
            integer=counts,
            positive=(*counts, "learning_rate"),
            non_negative=("alpha",),
            ranges={"gamma": (0.0, 1.0, "(]")},
        )
        check_layer_widths("SweepConfig.hidden", self.hidden)
        if self.n_steps < 1 or self.n_checkpoints < 1:
            raise ConfigError("n_steps and n_checkpoints must be positive")

    def cql_config(self, learner: str) -> A.CQLConfig:
        """The :class:`~pulse_lib.pulserl.agents.CQLConfig` of a value-based learner."""
        base = A.CQLConfig(
            gamma=self.gamma,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            hidden=self.hidden,
            target_update_interval=self.target_update_interval,
        )
        if learner == "DQN":
            return replace(base, alpha=0.0)
        if learner == "CQL":
            return replace(base, alpha=self.alpha)
        if learner == "QR-CQL":
            return replace(base, alpha=self.alpha, n_quantiles=self.qr_quantiles)
        raise ConfigError(
            f"{learner!r} is not a value-based learner; choose DQN, CQL or QR-CQL"
        )


class TorchBC:
    """Behaviour cloning: an MLP classifier of the logged action, acting greedily."""

    def __init__(
        self,
        hidden: Sequence[int] = (64, 64),
        learning_rate: float = 1e-3,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width = N_FEATURES
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 2))
        self.optim = torch.optim.Adam(
            self.net.parameters(), lr=learning_rate, eps=A.CQLConfig().adam_epsilon
        )
        self.batch_size = batch_size
        self._rng = np.random.default_rng(seed)

    def fit(self, obs: np.ndarray, actions: np.ndarray, n_steps: int) -> list[float]:
        """``n_steps`` cross-entropy steps on random minibatches; returns the losses."""
        o = torch.as_tensor(np.array(obs, dtype=np.float32))
        a = torch.as_tensor(np.array(actions, dtype=np.int64))
        losses = []
        for _ in range(n_steps):
            idx = torch.as_tensor(self._rng.integers(0, o.shape[0], self.batch_size))
            loss = nn.functional.cross_entropy(self.net(o[idx]), a[idx])
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            self.optim.step()
            losses.append(float(loss.detach()))
        return losses

    @torch.no_grad()
    def policy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy: send when the classifier says the logger more likely sent."""
        logits = self.net(torch.as_tensor(np.array(obs, dtype=np.float32)))
        return (logits[:, 1] > logits[:, 0]).numpy().astype(float)


@dataclass
class TrainedLearner:
    """A trained learner, its greedy policy and its learning curve."""

    name: str
    agent: A.TorchCQL | TorchBC
    #: (gradient step, online value)
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def policy(self) -> Policy:
        return self.agent.policy

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """``(n, 2)`` Q-values (mean over quantiles); BC has none."""
        if isinstance(self.agent, TorchBC):
            raise ConfigError("behaviour cloning learns no Q-values")
        return self.agent.q_values(obs)


def transition_arrays(table: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """``(obs, action, reward, next_obs, done)`` arrays of a transition table
    (rewards float64 -> float32 in torch)."""
    return (
        D.observations(table),
        table["action"].to_numpy(np.int64),
        table["reward"].to_numpy(np.float64),
        D.observations(table, next_=True),
        table["done"].to_numpy(np.float64),
    )


def train_learner(
    name: str,
    table: pd.DataFrame,
    config: SweepConfig,
    seed: int,
    evaluate: Callable[[Policy], float] | None = None,
) -> TrainedLearner:
    """Train one learner on ``table``; with ``evaluate`` record its online value at
    checkpoints."""
    if name not in LEARNER_NAMES:
        raise ConfigError(
            f"unknown learner {name!r}; choose one of {list(LEARNER_NAMES)}"
        )
    arrays = transition_arrays(table)
    if name == "BC":
        agent: A.TorchCQL | TorchBC = TorchBC(
            config.hidden, config.learning_rate, config.batch_size, seed
        )
    else:
        agent = A.TorchCQL(config.cql_config(name), seed=seed)
    trained = TrainedLearner(name, agent)
    bounds = np.linspace(0, config.n_steps, config.n_checkpoints + 1).astype(int)
    for start, stop in itertools.pairwise(bounds):
        if isinstance(agent, TorchBC):
            agent.fit(arrays[0], arrays[1], int(stop - start))
        else:
            agent.fit(*arrays, n_steps=int(stop - start))
        if evaluate is not None:
            trained.curve.append((int(stop), float(evaluate(agent.policy))))
    return trained


def rare_action_gap(
    learner: TrainedLearner,
    simulator: S.PulseSimulator,
    logging: Policy,
    n_users: int,
    seed: int,
    rare_below: float = 0.1,
) -> pd.DataFrame:
    """``Q̂(s_0, a)`` against the Monte-Carlo return of ``a`` then the learner's policy,
    at day 0.

    Rows: action (send / no send) x support (``rare`` when the logger's probability of
    that action in that state is below ``rare_below``). A positive ``gap`` is
    overestimation.
    """
    policy = learner.policy
    mc = np.stack(
        [
            simulator.rollout(policy, n_users, seed, first_action=a).returns
            for a in (0, 1)
        ],
        axis=1,
    )
    # the same users (same seed)
    s0 = simulator.rollout(S.never_send, n_users, seed).first_observations
    q_hat = learner.q_values(s0)
    p_send = np.asarray(logging(s0), dtype=float)
    propensity = np.stack([1 - p_send, p_send], axis=1)
    rows = []
    for a in (0, 1):
        for rare in (True, False):
            mask = (propensity[:, a] < rare_below) == rare
            if mask.sum() < 2:
                continue
            rows.append(
                {
                    "action": "send" if a else "no send",
                    "support": "rare" if rare else "common",
                    "n": int(mask.sum()),
                    "q_hat": float(q_hat[mask, a].mean()),
                    "mc": float(mc[mask, a].mean()),
                    "mc_half_width": float(
                        1.96 * mc[mask, a].std(ddof=1) / np.sqrt(mask.sum())
                    ),
                }
            )
    out = pd.DataFrame(rows)
    out["gap"] = out["q_hat"] - out["mc"]
    return out
