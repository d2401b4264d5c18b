"""The batch dataset and its λ-generalization (BCORLE(λ), Section 4.1) without copying
it L times.

The paper enlarges each transition ``(s, a, r, c, s')`` into ``L`` copies ``(s, a, r -
λ_j c, c, s', λ_j)``, one per λ of a grid. Materialising that multiplies memory by ``L``
(21 in the paper's grid). A uniformly sampled minibatch of the enlarged set is the same
as drawing a transition uniformly *and* an independent λ uniformly from the grid, so
:class:`LambdaSampler` does exactly that at batch time; :func:`materialize` builds the
explicit copy, for tests and for the memory comparison only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pulse_lib.coupons.simulator import N_ACTIONS, STATE_DIM, Episodes
from pulse_lib.errors import ConfigError, SchemaError

#: Scale applied to the state before it enters a network (day and counts up to 30, type
#: up to 2).
STATE_SCALE: np.ndarray = np.concatenate(
    [[1 / 30, 1 / 2], np.full(2 * N_ACTIONS, 1 / 10)]
).astype(np.float32)


def lambda_grid(step: float = 0.05, high: float = 1.0) -> np.ndarray:
    """The λ grid ``0, step, ..., high`` (the paper: 0 to 1 in steps of 0.05, 21
    values)."""
    if step <= 0 or high <= 0:
        raise ConfigError(
            f"lambda grid needs step > 0 and high > 0, got step={step}, high={high}"
        )
    # int(): with numpy < 2, round() of a numpy float stays a float
    n = int(round(high / step))  # noqa: RUF046
    if abs(n * step - high) > 1e-9:
        raise ConfigError(f"high={high} is not a multiple of step={step}")
    return np.round(np.arange(n + 1) * step, 10).astype(np.float32)


@dataclass
class CouponDataset:
    """Validated arrays of logged transitions (the input of every learner and
    estimator)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    propensities: np.ndarray | None = None
    behaviour_probs: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = self.actions.shape[0] if self.actions is not None else 0
        if self.costs is None:
            raise SchemaError(
                "the dataset has no costs: a budget-constrained learner "
                "needs c(s, a) per transition"
            )
        expected = {
            "observations": (m, STATE_DIM),
            "next_observations": (m, STATE_DIM),
            "actions": (m,),
            "rewards": (m,),
            "costs": (m,),
            "terminals": (m,),
        }
        if self.propensities is not None:
            expected["propensities"] = (m,)
        if self.behaviour_probs is not None:
            expected["behaviour_probs"] = (m, N_ACTIONS)
        for name, shape in expected.items():
            arr = getattr(self, name)
            if arr.shape != shape:
                raise SchemaError(
                    f"column {name!r} has shape {arr.shape}, expected {shape}"
                )
            if arr.dtype.kind == "f":
                bad = (
                    np.flatnonzero(~np.isfinite(arr).reshape(m, -1).all(axis=1))
                    if m
                    else []
                )
                if len(bad):
                    raise SchemaError(f"column {name!r} has NaN or inf at row {bad[0]}")
        if m and (self.actions.min() < 0 or self.actions.max() >= N_ACTIONS):
            raise SchemaError(
                f"column 'actions' must lie in 0..{N_ACTIONS - 1}, found "
                f"{self.actions.min()}..{self.actions.max()}"
            )
        if (
            self.propensities is not None
            and m
            and (self.propensities.min() <= 0 or self.propensities.max() > 1)
        ):
            row = (
                int(np.argmin(self.propensities))
                if self.propensities.min() <= 0
                else int(np.argmax(self.propensities))
            )
            raise SchemaError(
                f"column 'propensities' must lie in (0, 1]; row {row} is "
                f"{self.propensities[row]}"
            )

    @classmethod
    def from_episodes(cls, episodes: Episodes) -> CouponDataset:
        """Wrap simulator output (drops the hidden ``p0`` and type columns)."""
        return cls(
            episodes.observations,
            episodes.actions,
            episodes.rewards,
            episodes.costs,
            episodes.next_observations,
            episodes.terminals,
            episodes.propensities,
            episodes.behaviour_probs,
        )

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def require_propensities(self) -> np.ndarray:
        """The logged action probabilities, or a clear error if they were not
        recorded."""
        if self.propensities is None:
            raise SchemaError(
                "the dataset has no 'propensities' column: "
                "importance-sampling estimators need "
                "the logging policy's probability of each logged action"
            )
        return self.propensities

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(
            a.nbytes
            for a in (
                self.observations,
                self.actions,
                self.rewards,
                self.costs,
                self.next_observations,
                self.terminals,
                self.propensities,
                self.behaviour_probs,
            )
            if a is not None
        )


def data_horizon(dataset: CouponDataset) -> int:
    """The episode length read from the data: the day in the next state of every
    terminal row.

    The day is the first number of the state, so a terminal transition leaves day ``H -
    1`` for day ``H``. Every terminal row must agree (episodes of one length), else a
    ``SchemaError``.
    """
    ends = dataset.terminals > 0.5
    if not np.any(ends):
        raise SchemaError(
            "the dataset has no terminal transitions: the horizon cannot "
            "be read from it"
        )
    days = np.unique(np.round(dataset.next_observations[ends, 0]).astype(int))
    if days.size != 1 or days[0] < 1:
        raise SchemaError(
            f"terminal rows end on different days {days.tolist()[:5]}: "
            "episodes must share one "
            "horizon (the day in the state counts the days)"
        )
    return int(days[0])


@dataclass
class Batch:
    """A minibatch, as float32/int64 numpy arrays; ``lam`` is one λ per row."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    next_obs: np.ndarray
    terminals: np.ndarray
    lam: np.ndarray

    @property
    def lagrangian_rewards(self) -> np.ndarray:
        """``r - λ c``: the CMDP's Lagrangian reward for each row's λ."""
        return self.rewards - self.lam * self.costs


class LambdaSampler:
    """Minibatches of the λ-generalized dataset, drawn without materialising it.

    Each row is a uniformly drawn transition paired with an independently, uniformly
    drawn λ from
    ``grid``: the distribution of a uniform minibatch (with replacement) of the
        ``L``-fold copy.
    With a one-value grid it samples the plain dataset at a fixed λ (the per-λ
    baseline).
    """

    def __init__(self, dataset: CouponDataset, grid: np.ndarray) -> None:
        grid = np.asarray(grid, dtype=np.float32)
        if (
            grid.ndim != 1
            or grid.size == 0
            or not np.all(np.isfinite(grid))
            or grid.min() < 0
        ):
            raise ConfigError(
                f"the λ grid must be a non-empty 1-D array of λ >= 0, got {grid!r}"
            )
        if len(dataset) == 0:
            raise SchemaError("the dataset is empty")
        self.dataset, self.grid = dataset, grid

    def sample_indices(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Independent uniform draws of a transition index and a λ index, one pair
        per row."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        return rng.integers(0, len(self.dataset), size=batch_size), rng.integers(
            0, self.grid.size, size=batch_size
        )

    def gather(self, idx: np.ndarray, lam_idx: np.ndarray) -> Batch:
        """The minibatch of transitions ``idx`` at λ values ``grid[lam_idx]`` (states
        scaled for the networks)."""
        d = self.dataset
        return Batch(
            d.observations[idx] * STATE_SCALE,
            d.actions[idx],
            d.rewards[idx],
            d.costs[idx],
            d.next_observations[idx] * STATE_SCALE,
            d.terminals[idx],
            self.grid[lam_idx],
        )

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A minibatch of the λ-generalized dataset (uniform, with replacement)."""
        return self.gather(*self.sample_indices(batch_size, rng))

    def extra_bytes(self, batch_size: int) -> int:
        """Memory the λ-generalization adds: one λ per minibatch row (float32)."""
        return 4 * batch_size


def materialize(dataset: CouponDataset, grid: np.ndarray) -> dict[str, np.ndarray]:
    """The explicit ``L``-fold λ-generalized dataset of the paper (memory grows ``L``
    times).

    Row ``i * L + j`` is transition ``i`` at ``λ_j``; ``reward`` holds ``r_i - λ_j
    c_i``.
    """
    grid = np.asarray(grid, dtype=np.float32)
    n_lam = grid.size
    lam = np.tile(grid, len(dataset))
    rep = lambda a: np.repeat(a, n_lam, axis=0)
    costs = rep(dataset.costs)
    return {
        "obs": rep(dataset.observations),
        "actions": rep(dataset.actions),
        "raw_rewards": rep(dataset.rewards),
        "reward": rep(dataset.rewards) - lam * costs,
        "costs": costs,
        "next_obs": rep(dataset.next_observations),
        "terminals": rep(dataset.terminals),
        "lam": lam,
    }
