"""Vowpal Wabbit's contextual bandit (``--cb_explore_adf``) behind the learner's
interface.

The industry baseline for chapter 12: VW learns a linear model of the cost of each
(context, action) pair from action-dependent features (ADF) and explores by itself (here
epsilon-greedy). We give it what the hybrid learner sees: the context in namespace
``u``, the action's features and its id in namespace ``a``, and ``-q ua`` (every context
feature times every action feature), which is the hybrid model's ``kron(phi_a, x)`` plus
a per-action part. VW minimises cost, so the cost it learns is minus the business
reward.

Needs ``pip install vowpalwabbit==9.11.9``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pulse_lib.errors import ConfigError, SchemaError, SetupError

__all__ = ["DEFAULT_ARGS", "VWContextualBandit"]

DEFAULT_ARGS = "--cb_explore_adf --epsilon 0.05 -q ua --quiet"


class VWContextualBandit:
    """A ``--cb_explore_adf`` learner with ``add_action`` / ``retire_action`` /
    ``choose`` / ``update``.

    Args:
        context_width: ``d``, the width of context vectors.
        weights: business weight of each learned signal; the reward VW learns is
            ``signals @ weights - cost_weight * cost_a``.
        cost_weight: weight of the known per-action cost.
        args: VW command line (default :data:`DEFAULT_ARGS`).
        seed: VW's random seed (its exploration draws) and ours (sampling from its pmf).
    """

    def __init__(
        self,
        context_width: int,
        weights: Sequence[float],
        cost_weight: float = 0.0,
        args: str = DEFAULT_ARGS,
        seed: int = 0,
    ):
        try:
            import vowpalwabbit
        except ImportError:
            raise SetupError(
                "Vowpal Wabbit is not installed: pip install vowpalwabbit==9.11.9"
            ) from None
        if "--cb_explore_adf" not in args:
            raise ConfigError(f"args must use --cb_explore_adf, got {args!r}")
        self.d = int(context_width)
        self.weights = np.asarray(weights, dtype=float)
        self.cost_weight = float(cost_weight)
        self.vw = vowpalwabbit.Workspace(f"{args} --random_seed {int(seed)}")
        self.rng = np.random.default_rng(seed)
        self.features: dict[int, str] = {}
        self.costs: dict[int, float] = {}
        self.retired: set[int] = set()
        self._pending: tuple[np.ndarray, list[np.ndarray], np.ndarray] | None = None

    def add_action(
        self, action_id: int, features: np.ndarray, cost: float = 0.0
    ) -> None:
        """Make an action available; VW needs no statistics for it (its features
        carry over)."""
        action_id = int(action_id)
        if action_id in self.features or action_id in self.retired:
            raise ConfigError(f"action {action_id} is already active or was retired")
        phi = np.asarray(features, dtype=float)
        parts = [f"p{i}:{v:.6g}" for i, v in enumerate(phi) if v != 0.0]
        self.features[action_id] = "|a " + " ".join(parts + [f"id{action_id}"])
        self.costs[action_id] = float(cost)

    def retire_action(self, action_id: int) -> None:
        """Stop offering an action."""
        if int(action_id) not in self.features:
            raise ConfigError(f"cannot retire action {action_id}: it is not active")
        del self.features[int(action_id)]
        self.retired.add(int(action_id))

    @property
    def active_actions(self) -> np.ndarray:
        return np.array(sorted(self.features), dtype=int)

    def _shared(self, x: np.ndarray) -> str:
        return "shared |u " + " ".join(
            f"f{i}:{v:.6g}" for i, v in enumerate(x) if v != 0.0
        )

    def _offered(self, available: object, n: int) -> list[np.ndarray]:
        ids = self.active_actions
        if available is None:
            return [ids] * n
        arr = np.asarray(available)
        if arr.dtype == bool:
            arr2 = np.broadcast_to(np.atleast_2d(arr), (n, arr.shape[-1]))
            return [ids[np.isin(ids, np.flatnonzero(row))] for row in arr2]
        if np.issubdtype(arr.dtype, np.integer) and arr.ndim == 1:
            return [ids[np.isin(ids, arr)]] * n
        raise SchemaError(
            "available must be integer ids or a boolean mask, got dtype "
            f"{arr.dtype} shape {arr.shape}"
        )

    def _lines(
        self,
        x: np.ndarray,
        offered: np.ndarray,
        label: tuple[int, float, float] | None = None,
    ) -> list[str]:
        lines = [self._shared(x)]
        for a in offered:
            prefix = (
                f"0:{label[1]:.6g}:{label[2]:.6g} "
                if label is not None and a == label[0]
                else ""
            )
            lines.append(prefix + self.features[int(a)])
        return lines

    def choose(self, contexts: np.ndarray, available: object = None) -> np.ndarray:
        """Sample one action per context from VW's exploration distribution."""
        x = np.atleast_2d(np.asarray(contexts, dtype=float))
        if x.shape[1] != self.d:
            raise SchemaError(
                f"contexts must have {self.d} columns, got shape {x.shape}"
            )
        offered = self._offered(available, x.shape[0])
        chosen = np.empty(x.shape[0], dtype=int)
        props = np.empty(x.shape[0])
        for i in range(x.shape[0]):
            if offered[i].size == 0:
                raise ConfigError(f"user row {i} has no eligible active action")
            pmf = np.asarray(
                self.vw.predict(self._lines(x[i], offered[i])), dtype=float
            )
            j = min(
                int(np.searchsorted(np.cumsum(pmf), self.rng.random() * pmf.sum())),
                pmf.size - 1,
            )
            chosen[i], props[i] = offered[i][j], pmf[j]
        self._pending = (x, offered, props)
        return chosen

    def _reward(self, actions: np.ndarray, signals: np.ndarray) -> np.ndarray:
        s = np.asarray(signals, dtype=float)
        if s.ndim == 1:
            s = s[:, None]
        if s.shape != (actions.shape[0], self.weights.shape[0]):
            raise SchemaError(
                f"signals must have shape ({actions.shape[0]}, "
                f"{self.weights.shape[0]}), got {s.shape}"
            )
        return s @ self.weights - self.cost_weight * np.array(
            [self.costs.get(int(a), 0.0) for a in actions]
        )

    def update(
        self, contexts: np.ndarray, actions: np.ndarray, signals: np.ndarray
    ) -> None:
        """Learn from the outcomes of the last :meth:`choose` call (same contexts,
        its propensities)."""
        x = np.atleast_2d(np.asarray(contexts, dtype=float))
        if (
            self._pending is None
            or self._pending[0].shape != x.shape
            or not np.array_equal(self._pending[0], x)
        ):
            raise ConfigError(
                "update must follow choose on the same contexts (VW "
                "needs the propensities it used)"
            )
        _, offered, props = self._pending
        a = np.asarray(actions)
        rewards = self._reward(a, signals)
        for i in range(x.shape[0]):
            self.vw.learn(
                self._lines(
                    x[i], offered[i], (int(a[i]), -float(rewards[i]), float(props[i]))
                )
            )
        self._pending = None

    def warm_start(
        self,
        contexts: np.ndarray,
        actions: np.ndarray,
        signals: np.ndarray,
        propensities: np.ndarray,
        available: object = None,
    ) -> None:
        """Learn from logged decisions with the logging policy's propensities (VW's
        IPS-style update)."""
        x = np.atleast_2d(np.asarray(contexts, dtype=float))
        a = np.asarray(actions)
        props = np.asarray(propensities, dtype=float)
        if props.shape != (x.shape[0],) or np.any(
            ~np.isfinite(props) | (props <= 0) | (props > 1)
        ):
            raise SchemaError("propensities must be one value in (0, 1] per row")
        offered = self._offered(available, x.shape[0])
        rewards = self._reward(a, signals)
        for i in range(x.shape[0]):
            if int(a[i]) not in offered[i]:
                raise SchemaError(
                    f"logged action {int(a[i])} at row {i} is not active in the learner"
                )
            self.vw.learn(
                self._lines(
                    x[i], offered[i], (int(a[i]), -float(rewards[i]), float(props[i]))
                )
            )

    def greedy_scores(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """VW's predicted reward (minus its predicted cost) for every active action:
        ``(n, K)``, ids.

        Read through a ``--cb_adf`` style score: we ask VW for its pmf with exploration
        and take the action it puts most mass on as its greedy choice; scores are that
        one-hot.
        """
        x = np.atleast_2d(np.asarray(contexts, dtype=float))
        ids = self.active_actions
        out = np.zeros((x.shape[0], ids.size))
        for i in range(x.shape[0]):
            pmf = np.asarray(self.vw.predict(self._lines(x[i], ids)), dtype=float)
            out[i, int(np.argmax(pmf))] = 1.0
        return out, ids

    def finish(self) -> None:
        """Release VW's workspace."""
        self.vw.finish()
