"""Discrete CQL (Kumar et al., 2020) from d3rlpy as a λ-conditioned baseline for R-BCQ.

d3rlpy trains on a materialised ``MDPDataset``, so instead of copying every transition
``L`` times each *episode* (one user's 30 days) gets one λ drawn uniformly from the
grid: λ is appended to the state, and the reward becomes ``r - λ c``. Every λ is seen,
on ``1/L`` of the users each -- a cheaper λ-generalization than R-BCQ's per-minibatch
draw, stated as such in the chapter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pulse_lib.coupons.dataset import STATE_SCALE, CouponDataset
from pulse_lib.coupons.simulator import N_ACTIONS, STATE_DIM, Policy
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.validation import check_fields


@dataclass(frozen=True)
class CQLConfig:
    """The settings passed to d3rlpy's ``DiscreteCQLConfig`` (plus the network
    width)."""

    hidden: int = 64  # units in each of the two hidden layers
    #: 1.0: undiscounted, the objective of the whole part (rewards are divided by the
    #: horizon, so
    #: the value of a day-0 state is the per-user-day Lagrangian, as for R-BCQ and REME)
    gamma: float = 1.0
    lr: float = 3e-4  # Adam learning rate
    batch_size: int = 256  # transitions per update
    alpha: float = 1.0  # weight of the CQL(H) penalty
    target_update_interval: int = 200  # updates between target-network copies

    def __post_init__(self) -> None:
        check_fields(
            self,
            integer=("hidden", "batch_size", "target_update_interval"),
            positive=("hidden", "lr", "batch_size", "target_update_interval"),
            non_negative=("alpha",),
            ranges={"gamma": (0.0, 1.0, "(]")},
        )


class LambdaCQL:
    """A d3rlpy DiscreteCQL trained on the λ-per-episode dataset; acts like
    :class:`~pulse_lib.coupons.rbcq.RBCQ`."""

    def __init__(
        self,
        config: CQLConfig = CQLConfig(),
        device: str = "cpu",
        seed: int = 0,
        lambda_low: float = 0.0,
        lambda_high: float = 1.0,
    ) -> None:
        from pulse_lib.book import quiet_imports

        # d3rlpy imports legacy gym, which prints an 'unmaintained' notice
        quiet_imports()
        import d3rlpy

        d3rlpy.seed(seed)
        self.config, self.seed = config, seed
        self.lambda_low, self.lambda_high = lambda_low, lambda_high
        self.algo = d3rlpy.algos.DiscreteCQLConfig(
            batch_size=config.batch_size,
            gamma=config.gamma,
            learning_rate=config.lr,
            alpha=config.alpha,
            target_update_interval=config.target_update_interval,
            encoder_factory=d3rlpy.models.VectorEncoderFactory(
                hidden_units=[config.hidden, config.hidden]
            ),
        ).create(device="cuda:0" if device == "cuda" else False)
        self.train_seconds = 0.0
        self.n_updates = 0

    @staticmethod
    def build_dataset(
        dataset: CouponDataset, grid: np.ndarray, horizon: int, seed: int
    ) -> Any:
        """The d3rlpy ``MDPDataset``: state ``[s, λ]`` and reward ``(r - λ c) / H``,
        one λ per episode."""
        from pulse_lib.book import quiet_imports

        # d3rlpy imports legacy gym, which prints an 'unmaintained' notice
        quiet_imports()
        import d3rlpy

        m = len(dataset)
        if m % horizon:
            raise SchemaError(
                f"{m} transitions are not whole episodes of {horizon} days"
            )
        if not np.array_equal(
            np.flatnonzero(dataset.terminals), np.arange(horizon - 1, m, horizon)
        ):
            raise SchemaError(
                "episodes must be contiguous blocks of `horizon` rows "
                "ending in a terminal"
            )
        rng = np.random.default_rng(seed)
        lam = np.repeat(
            np.asarray(grid, dtype=np.float32)[
                rng.integers(0, len(grid), m // horizon)
            ],
            horizon,
        )
        obs = np.concatenate(
            [dataset.observations * STATE_SCALE, lam[:, None]], axis=1
        ).astype(np.float32)
        rewards = ((dataset.rewards - lam * dataset.costs) / horizon).astype(np.float32)
        return d3rlpy.dataset.MDPDataset(
            obs,
            dataset.actions.astype(np.int64),
            rewards,
            dataset.terminals.astype(np.float32),
            action_size=N_ACTIONS,
        )

    def fit(
        self, dataset: CouponDataset, grid: np.ndarray, n_steps: int, horizon: int = 30
    ) -> None:
        """Train ``n_steps`` d3rlpy updates on the λ-per-episode dataset (no logs
        written to disk)."""
        from pulse_lib.book import quiet_imports

        # d3rlpy imports legacy gym, which prints an 'unmaintained' notice
        quiet_imports()
        import d3rlpy

        mdp = self.build_dataset(dataset, grid, horizon, self.seed)
        start = time.perf_counter()
        self.algo.fit(
            mdp,
            n_steps=n_steps,
            n_steps_per_epoch=n_steps,
            show_progress=False,
            logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        )
        self.train_seconds += time.perf_counter() - start
        self.n_updates += n_steps

    def greedy(self, obs_scaled: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Torch-in, torch-out greedy action (for REME)."""
        x = torch.cat([obs_scaled, lam.unsqueeze(-1)], dim=-1).cpu().numpy()
        return torch.as_tensor(self.algo.predict(x), device=obs_scaled.device)

    def policy(self, lam: float) -> Policy:
        """A simulator policy (raw states -> coupon indices) for this λ."""
        if (
            not np.isfinite(lam)
            or lam < self.lambda_low - 1e-9
            or lam > self.lambda_high + 1e-9
        ):
            raise ConfigError(
                f"λ={lam} lies outside the trained range "
                f"[{self.lambda_low}, {self.lambda_high}]"
            )

        def act(states: np.ndarray) -> np.ndarray:
            if states.ndim != 2 or states.shape[1] != STATE_DIM:
                raise SchemaError(
                    f"states must have shape (n, {STATE_DIM}), got {states.shape}"
                )
            x = np.concatenate(
                [states * STATE_SCALE, np.full((len(states), 1), lam, np.float32)],
                axis=1,
            )
            return self.algo.predict(x.astype(np.float32))

        return act
