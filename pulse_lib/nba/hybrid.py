"""The hybrid next-best-action learner, in one readable file.

1. :class:`HybridLinearBandit` — a linear contextual bandit with parameters shared by
   all actions and parameters per action (the "hybrid" model of Li et al. 2010,
   Algorithm 2):

       E[r | x, a] = z_{x,a} . beta + x . theta_a,     z_{x,a} = kron(phi_a, x) = G_a x

   ``phi_a`` are the action's features (``G_a = kron(phi_a, I_d)``), so what is learned
   about one email offer transfers to a new email offer through ``beta``. The posterior
   is the joint ridge regression (prior ``beta ~ N(0, I / lambda)``, ``theta_a ~ N(0, I
   / lambda_a)``). Exploration by upper confidence bounds (LinUCB), Thompson sampling
   (Agrawal & Goyal 2013), or none.

   **Parameterisation.** With ``psi_a = G_a^T beta + theta_a`` (the action's whole
   linear coefficient) the prior is hierarchical, ``psi_a | beta ~ N(G_a^T beta, I /
   lambda_a)``, and the posterior factorises exactly as

       psi_a | beta, data ~ N(A_a^{-1} (b_a + lambda_a G_a^T beta),  A_a^{-1})
       beta | data        ~ N(A_0^{-1} b_0,  A_0^{-1})
       A_a = lambda_a I + sum_{rows of a} x x^T,        b_a = sum_{rows of a} x r^T
       A_0 = lambda I + sum_a lambda_a G_a (I - lambda_a A_a^{-1}) G_a^T
       b_0 = sum_a lambda_a G_a A_a^{-1} b_a.

   Every term of ``A_0`` is positive semi-definite and bounded by ``lambda_a G_a G_a^T``
   however many rows were seen, and ``b_0`` has no difference of large sums: nothing is
   formed by subtracting large sums (the textbook Schur complement ``sum z z^T - sum
   B_a^T A_a^{-1} B_a`` loses digits at 10^8 rows). One new row of action ``a`` changes
   ``A_0`` by a positive rank-one term ``w w^T``; the learner keeps a square root ``R``
   (``R R^T = A_0^{-1}``) and downdates it in factor form (``O(k^2)``, positive definite
   by construction), solves ``A_a^{-1} b_a`` from the summed ``A_a`` by Cholesky, keeps
   the ``A_a^{-1}`` used for exploration widths by Sherman–Morrison with an exact
   re-inversion every ``refresh_every`` rows of that action, and
   :meth:`HybridLinearBandit.refactor` rebuilds everything from the sums. A learner
   exploring by UCB also keeps ``A_0^{-1}`` itself, downdated by the same rank-one term
   (``-u u^T``) and rebuilt from ``R`` every ``refresh_every`` rows: a single decision
   then reads only the ``d x d`` blocks its actions' features touch (``O(K d^2)`` for
   one-hot features).

   Each objective signal (target event, stage progression) gets its own right-hand side
   over the same design, and the business weights combine them at decision time: ridge
   is linear in the rewards, so this equals learning the weighted reward, and changing
   the weights needs no retraining. The known per-action cost is subtracted directly.

   **Eligibility.** :meth:`HybridLinearBandit.choose` takes ``available`` as either a
   list of integer action ids (the same for every user) or a boolean mask, ``(n_ids,)``
   for everyone or ``(n_users, n_ids)`` per user, whose column ``j`` is action id ``j``.
   The two are told apart by dtype only; anything else is an error, and so is a user
   with nothing eligible. :mod:`pulse_lib.nba.rules` builds per-user masks from business
   rules.

2. :class:`IntentPolicySelector` — the propensity-variant hybrid of Zhang & Xie (RecSys
   2019): an intent-propensity model predicts how likely a user is to perform the target
   event, and routes high-intent users to a policy that optimises the target event and
   the others to a policy that moves them along the journey.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas, lapack

from pulse_lib.errors import ConfigError, SchemaError

__all__ = [
    "ArmInfo",
    "HybridLinearBandit",
    "IntentPolicySelector",
    "EXPLORATION",
    "eligibility_mask",
]

EXPLORATION: tuple[str, ...] = ("ucb", "ts", "greedy")
# contexts scored at once by the per-decision explorations (bounds n x K x d arrays)
_CHUNK = 256


@dataclass
class ArmInfo:
    """What the learner knows about one active action besides its statistics."""

    features: np.ndarray  # (p,) phi_a
    cost: float  # known cost, subtracted with the cost weight
    n: int = 0  # rows learned from
    # rows added by Sherman-Morrison since A_a^{-1} was last re-inverted
    since_refresh: int = 0


def eligibility_mask(available: object, ids: np.ndarray, n: int) -> np.ndarray:
    """``(n, len(ids))`` boolean: which of the learner's actions ``ids`` each user may
    get.

    ``available`` is ``None`` (all), a 1-D array of integer action ids, or a boolean
    mask of shape ``(n_ids,)`` or ``(n, n_ids)`` whose column ``j`` is action id ``j``
    (``n_ids`` must exceed every active id). Integer ids must be active actions; a float
    or object array is neither and is an error. A user with no eligible action is an
    error naming the row.
    """
    if available is None:
        return np.ones((n, ids.shape[0]), dtype=bool)
    arr = np.asarray(available)
    if arr.dtype == bool:
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[0] != n):
            raise SchemaError(
                "a boolean eligibility mask must have shape (n_ids,) or "
                f"({n}, n_ids), got {arr.shape}"
            )
        width = arr.shape[-1]
        if ids.size and width <= int(ids.max()):
            raise SchemaError(
                f"the boolean mask has {width} columns (one per action "
                "id) but active action "
                f"{int(ids.max())} needs at least {int(ids.max()) + 1}"
            )
        mask = np.broadcast_to(
            arr[..., ids] if arr.ndim == 2 else arr[ids][None, :], (n, ids.shape[0])
        )
    elif np.issubdtype(arr.dtype, np.integer) or (
        arr.size == 0 and arr.dtype == float and arr.ndim == 1
    ):
        if arr.ndim != 1:
            raise SchemaError(
                "action ids must be a 1-D list (per-user eligibility is "
                "a boolean (n, n_ids) mask), "
                f"got shape {arr.shape}"
            )
        unknown = np.setdiff1d(arr.astype(np.int64), ids)
        if unknown.size:
            raise ConfigError(
                f"available action id {int(unknown[0])} is not active in "
                "the learner "
                f"(active: {ids.tolist()})"
            )
        mask = np.broadcast_to(np.isin(ids, arr)[None, :], (n, ids.shape[0]))
    else:
        raise SchemaError(
            "available must be integer action ids or a boolean mask, "
            f"got dtype {arr.dtype}"
        )
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ConfigError(
            f"user row {int(empty[0])} has no eligible active action "
            f"(available={available!r})"
        )
    return mask


class HybridLinearBandit:
    """Hybrid linear contextual bandit (LinUCB / linear Thompson sampling / greedy).

    Args: context_width: ``d``, the width of context vectors ``x``. feature_width:
        ``p``, the width of action features ``phi_a``; shared width ``k = p d``.
        objectives: names of the learned signals (columns of the reward matrix).
        weights: business weight of each objective (same order), used at decision time.
        cost_weight: weight of the known per-action cost (subtracted). exploration:
        ``"ucb"``, ``"ts"`` or ``"greedy"``. alpha: UCB width multiplier, or the
        posterior scale ``v`` of Thompson sampling. prior_precision: ridge penalty on
        the shared ``beta`` (prior ``N(0, I/lambda)``). action_prior_precision: ridge
        penalty on each ``theta_a`` (default: ``prior_precision``). A larger value says
        "an action differs little from others of its kind": the shared part then
        explains most of what is common, and a new action borrows it. sample_per:
        Thompson sampling draws a posterior sample per ``"decision"`` (exact, ``O(K d^2
        + k^2)`` per decision) or one joint sample per call to :meth:`choose`, shared by
        its whole ``"batch"`` and served greedily (``O(K d)`` per decision after an
        ``O(K d^3)`` draw; users of one batch then explore together). refresh_every:
        re-invert ``A_a`` exactly after this many Sherman–Morrison row updates of action
        ``a`` (bounds the rounding drift of the inverse). seed: seed of the
        Thompson-sampling draws and tie-breaking.
    """

    def __init__(
        self,
        context_width: int,
        feature_width: int,
        objectives: Sequence[str] = ("reward",),
        weights: Sequence[float] | None = None,
        cost_weight: float = 0.0,
        exploration: str = "ucb",
        alpha: float = 1.0,
        prior_precision: float = 1.0,
        action_prior_precision: float | None = None,
        sample_per: str = "decision",
        refresh_every: int = 1_000,
        seed: int = 0,
    ):
        if context_width < 1 or feature_width < 1:
            raise ConfigError(
                "context_width and feature_width must be >= 1, got "
                f"{context_width}, {feature_width}"
            )
        if exploration not in EXPLORATION:
            raise ConfigError(
                f"unknown exploration {exploration!r}; choose one of {EXPLORATION}"
            )
        if sample_per not in ("decision", "batch"):
            raise ConfigError(
                f"sample_per must be 'decision' or 'batch', got {sample_per!r}"
            )
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ConfigError(f"alpha must be finite and >= 0, got {alpha!r}")
        if not (np.isfinite(prior_precision) and prior_precision > 0):
            raise ConfigError(
                f"prior_precision must be finite and > 0, got {prior_precision!r}"
            )
        if int(refresh_every) < 1:
            raise ConfigError(f"refresh_every must be >= 1, got {refresh_every!r}")
        self.sample_per = sample_per
        self.refresh_every = int(refresh_every)
        self.d, self.p = int(context_width), int(feature_width)
        self.k = self.d * self.p
        self.objectives = tuple(objectives)
        self.m = len(self.objectives)
        self.exploration = exploration
        self.alpha = float(alpha)
        self.lam = float(prior_precision)
        lam_a = self.lam if action_prior_precision is None else action_prior_precision
        if not (np.isfinite(lam_a) and lam_a > 0):
            raise ConfigError(
                "action_prior_precision must be finite and > 0, got "
                f"{action_prior_precision!r}"
            )
        self.lam_action = float(lam_a)
        self.rng = np.random.default_rng(seed)
        d, m, k = self.d, self.m, self.k
        # Per-action statistics, stacked in insertion order (row j is action
        # self._ids[j]).
        self._ids = np.zeros(0, dtype=np.int64)
        # lambda_a I + sum x x^T (summed, never subtracted)
        self._A = np.zeros((0, d, d))
        self._Ainv = np.zeros((0, d, d))  # its inverse
        self._b = np.zeros((0, d, m))  # sum x r^T
        self._Ab = np.zeros((0, d, m))  # A_a^{-1} b_a
        self._phi = np.zeros((0, self.p))
        self._costs = np.zeros(0)
        self.arms: dict[int, ArmInfo] = {}
        self.retired: set[int] = set()
        # Shared block: R R^T = A_0^{-1}; the prior alone gives A_0 = lambda I.
        self._R = np.eye(k) / np.sqrt(self.lam)
        # Retired actions' frozen contributions to A_0 and b_0 (beta is unchanged by
        # retiring).
        self._A0_retired = np.zeros((k, k))
        self._b0_retired = np.zeros((k, m))
        self._beta = np.zeros((k, m))
        # psi, C, chol: recomputed on first use after a change
        self._lazy: dict[str, np.ndarray] = {}
        # rank-one downdates of the cached A_0^{-1} since it was built
        self._A0inv_downdates = 0
        self.set_weights(np.ones(self.m) if weights is None else weights, cost_weight)

    # -- configuration
    # ----------------------------------------------------------------------

    def set_weights(self, weights: Sequence[float], cost_weight: float = 0.0) -> None:
        """Set the business weights (one per objective) and the cost weight; no
        retraining."""
        w = np.asarray(weights, dtype=float)
        if w.shape != (self.m,) or not np.isfinite(w).all():
            raise ConfigError(
                f"weights must be {self.m} finite numbers for objectives "
                f"{self.objectives}, got {weights!r}"
            )
        if not np.isfinite(cost_weight):
            raise ConfigError(f"cost_weight must be finite, got {cost_weight!r}")
        self.weights = w
        self.cost_weight = float(cost_weight)
        self._lazy.pop("psi", None)

    def _pos(self, action_id: int) -> int:
        pos = np.flatnonzero(self._ids == int(action_id))
        if pos.size == 0:
            raise ConfigError(
                f"action {action_id} is not active (active: "
                f"{self.active_actions.tolist()})"
            )
        return int(pos[0])

    def add_action(
        self, action_id: int, features: np.ndarray, cost: float = 0.0
    ) -> None:
        """Start learning a new action from the prior (its shared part already informs
        it).

        A fresh action adds nothing to ``A_0`` or ``b_0`` (``I - lambda_a A_a^{-1} =
        0``), so ``beta`` and every other action's posterior are unchanged: ``O(K d^2)``
        to append.
        """
        action_id = int(action_id)
        if action_id in self.arms:
            raise ConfigError(f"action {action_id} is already active")
        if action_id in self.retired:
            raise ConfigError(
                f"action {action_id} was retired; relaunch it under a new id"
            )
        if action_id < 0:
            raise ConfigError(f"action ids must be >= 0, got {action_id}")
        phi = np.asarray(features, dtype=float)
        if phi.shape != (self.p,) or not np.isfinite(phi).all():
            raise SchemaError(
                f"action {action_id}: features must be {self.p} finite "
                f"numbers, got shape {phi.shape}"
            )
        if not (np.isfinite(cost) and cost >= 0):
            raise ConfigError(
                f"action {action_id}: cost must be finite and >= 0, got {cost!r}"
            )
        eye = np.eye(self.d)
        self.arms[action_id] = ArmInfo(features=phi, cost=float(cost))
        self._ids = np.append(self._ids, action_id)
        self._A = np.concatenate([self._A, (self.lam_action * eye)[None]])
        self._Ainv = np.concatenate([self._Ainv, (eye / self.lam_action)[None]])
        self._b = np.concatenate([self._b, np.zeros((1, self.d, self.m))])
        self._Ab = np.concatenate([self._Ab, np.zeros((1, self.d, self.m))])
        self._phi = np.concatenate([self._phi, phi[None]])
        self._costs = np.append(self._costs, float(cost))
        self._lazy.clear()

    def retire_action(self, action_id: int) -> None:
        """Stop recommending an action and free its statistics, without retraining
        anything.

        Its data stay in the shared estimate: its terms of ``A_0`` and ``b_0`` are
        frozen, so ``beta`` is unchanged (and ``R`` needs no update at all).
        """
        action_id = int(action_id)
        if action_id not in self.arms:
            raise ConfigError(
                f"cannot retire action {action_id}: it is not active "
                f"(active: {sorted(self.arms)})"
            )
        j = self._pos(action_id)
        G = self._G(self._phi[j])
        P = self.lam_action * (np.eye(self.d) - self.lam_action * self._Ainv[j])
        self._A0_retired += G @ P @ G.T
        self._b0_retired += G @ (self.lam_action * self._Ab[j])
        keep = np.arange(self._ids.shape[0]) != j
        for name in ("_ids", "_A", "_Ainv", "_b", "_Ab", "_phi", "_costs"):
            setattr(self, name, getattr(self, name)[keep])
        del self.arms[action_id]
        self.retired.add(action_id)
        self._lazy.clear()

    @property
    def active_actions(self) -> np.ndarray:
        """Ids of the actions the learner may recommend, sorted (score columns follow
        the ids :meth:`scores` returns, which need not be sorted)."""
        return np.array(sorted(self.arms), dtype=int)

    def _G(self, phi: np.ndarray) -> np.ndarray:
        """``G_a = kron(phi_a, I_d)``, ``(k, d)``: ``z_{x,a} = G_a x``."""
        return np.kron(phi[:, None], np.eye(self.d))

    # -- input checks
    # -----------------------------------------------------------------------

    def _check_contexts(self, contexts: np.ndarray) -> np.ndarray:
        x = np.asarray(contexts, dtype=float)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.d:
            raise SchemaError(
                f"contexts must have {self.d} columns (context_width), "
                f"got shape {np.shape(contexts)}"
            )
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise SchemaError(f"context row {int(bad[0])} has a NaN or infinite value")
        return x

    def _check_rewards(self, rewards: np.ndarray, n: int) -> np.ndarray:
        r = np.asarray(rewards, dtype=float)
        if r.ndim == 1 and self.m == 1:
            r = r[:, None]
        if r.shape != (n, self.m):
            raise SchemaError(
                f"rewards must have shape ({n}, {self.m}) for objectives "
                f"{self.objectives}, got {r.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(r).all(axis=1))
        if bad.size:
            raise SchemaError(f"reward row {int(bad[0])} has a NaN or infinite value")
        return r

    def _check_actions(self, actions: np.ndarray, n: int) -> np.ndarray:
        a = np.asarray(actions)
        if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
            raise SchemaError(
                f"actions must be {n} integer ids, got shape {a.shape} dtype {a.dtype}"
            )
        if n == 1 and int(a[0]) in self.arms:
            return a
        unknown = np.setdiff1d(np.unique(a), self._ids)
        if unknown.size:
            row = int(np.flatnonzero(a == unknown[0])[0])
            what = (
                "retired"
                if int(unknown[0]) in self.retired
                else "unknown to the learner (never added)"
            )
            raise SchemaError(
                f"action {int(unknown[0])} at row {row} is {what}; "
                f"active: {self.active_actions.tolist()}"
            )
        return a

    # -- learning
    # ---------------------------------------------------------------------------

    def update(
        self,
        contexts: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        sample_weight: np.ndarray | None = None,
    ) -> None:
        """Add a batch of observed ``(x, a, r)``; identical to adding them one at a
        time.

        ``sample_weight`` (non-negative, one per row) weights each row's squared error;
        a row of weight ``w`` counts as ``w`` copies of itself.
        """
        x = self._check_contexts(contexts)
        n = x.shape[0]
        a = self._check_actions(actions, n)
        r = self._check_rewards(rewards, n)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=float)
            if sw.shape != (n,):
                raise SchemaError(
                    f"sample_weight has shape {sw.shape}, expected ({n},)"
                )
            bad = np.flatnonzero(~np.isfinite(sw) | (sw < 0))
            if bad.size:
                raise SchemaError(
                    f"sample_weight at row {int(bad[0])} is "
                    f"{sw[bad[0]]!r}; weights must be finite and >= 0"
                )
            root = np.sqrt(sw)[:, None]
            # weighted least squares = least squares on scaled rows
            x, r = x * root, r * root
        if n == 1:
            self._update_one(self._pos(int(a[0])), x[0], r[0])
        else:
            for action_id in np.unique(a):
                rows = a == action_id
                self._update_action(self._pos(int(action_id)), x[rows], r[rows])
        self._refresh_beta()

    def _update_one(self, j: int, x: np.ndarray, r: np.ndarray) -> None:
        """One row: :meth:`_update_action` with vectors and in-place BLAS (the
        real-time path)."""
        info = self.arms[int(self._ids[j])]
        Ainv = self._Ainv[j]
        v = Ainv @ x
        s = 1.0 + float(x @ v)
        wd = (self.lam_action / np.sqrt(s)) * v  # A_0 grows by G_a wd wd^T G_a^T
        self._downdate_R(
            np.outer(self._phi[j], wd).reshape(self.k, 1), support=self._phi[j]
        )
        # A_a += x x^T (symmetric)
        blas.dger(1.0, x, x, a=self._A[j].T, overwrite_a=True)
        self._b[j] += np.outer(x, r)
        info.n += 1
        info.since_refresh += 1
        if info.since_refresh < self.refresh_every:
            # Sherman-Morrison, in place
            blas.dger(-1.0 / s, v, v, a=Ainv.T, overwrite_a=True)
        else:
            self._Ainv[j] = self._inverse(self._A[j])
            info.since_refresh = 0
        self._Ab[j] = self._solve(self._A[j], self._b[j])

    def _update_action(self, j: int, X: np.ndarray, Rr: np.ndarray) -> None:
        """Rows ``X`` (n_a, d) with rewards ``Rr`` of the action at position ``j``."""
        lam_a, d = self.lam_action, self.d
        Ainv = self._Ainv[j]
        n_a = X.shape[0]
        # Rows that change A_a by S = X^T X; if there are more rows than d, use an
        # equivalent
        # set of at most d rows (eigen-factor of S): A_0's change depends on S only.
        if n_a > d:
            evals, evecs = np.linalg.eigh(X.T @ X)
            keep = evals > evals.max() * 1e-14
            Xr = (evecs[:, keep] * np.sqrt(evals[keep])).T
        else:
            Xr = X
        # A_0 grows by lambda_a^2 (A_a,old^{-1} - A_a,new^{-1}) = W W^T with
        # W = lambda_a G_a V L^{-T}, V = A_a,old^{-1} Xr^T, L L^T = I + Xr V (Woodbury,
        # no subtraction).
        V = Ainv @ Xr.T  # (d, r)
        S = np.eye(Xr.shape[0]) + Xr @ V
        L = np.linalg.cholesky(S)
        Wd = lam_a * np.linalg.solve(L, V.T).T  # V L^{-T}, (d, r)
        self._downdate_R(np.kron(self._phi[j][:, None], Wd))  # G_a Wd, (k, r)
        # The action's own statistics: sums only ever grow.
        self._A[j] += X.T @ X
        self._b[j] += X.T @ Rr
        info = self.arms[int(self._ids[j])]
        info.n += n_a
        info.since_refresh += n_a
        if n_a <= 8 and info.since_refresh < self.refresh_every:
            # Sherman-Morrison-Woodbury on the inverse: A^{-1} - V S^{-1} V^T.
            Vs = np.linalg.solve(L, V.T)  # L^{-1} V^T, (r, d)
            self._Ainv[j] = Ainv - Vs.T @ Vs
        else:
            self._Ainv[j] = self._inverse(self._A[j])
            info.since_refresh = 0
        self._Ab[j] = self._solve(self._A[j], self._b[j])

    @staticmethod
    def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``A^{-1} b`` from the summed ``A`` by Cholesky (``O(d^3 / 3)``).

        ``A_a^{-1} b_a`` multiplies a large sum by a small inverse: solving with the
        summed ``A_a`` keeps it exact where the Sherman–Morrison inverse would carry its
        rounding.
        """
        c, info = lapack.dpotrf(A, lower=1)
        if info != 0:
            raise ConfigError(
                "an action's statistics matrix is not positive definite "
                f"(LAPACK info {info})"
            )
        x, info = lapack.dpotrs(c, b, lower=1)
        return x

    @staticmethod
    def _inverse(A: np.ndarray) -> np.ndarray:
        """Inverse of a symmetric positive-definite matrix through its Cholesky
        factor."""
        L = np.linalg.cholesky(A)
        Linv = np.linalg.solve(L, np.eye(A.shape[0]))
        return Linv.T @ Linv

    def _downdate_R(self, W: np.ndarray, support: np.ndarray | None = None) -> None:
        """``A_0 <- A_0 + W W^T``, i.e. ``R R^T <- R (I - N N^T) R^T``, in factor form.

        With ``T = R^T W`` and ``T^T T = E diag(q) E^T``, the columns of
        ``N = T E diag(1 / sqrt(1 + q))`` are orthogonal with squared norms
        ``s = q / (1 + q) < 1``, so ``I - N N^T = (I - N diag(c) N^T)^2`` with
        ``c = 1 / (1 + sqrt(1 - s))``: the new factor is ``R - (R N) diag(c) N^T``.
        """
        # one row: matrix-vector products and an in-place rank-one BLAS update
        if W.shape[1] == 1:
            if support is None:
                t = self._R.T @ W[:, 0]
            # W = kron(phi, w): only the rows of R in phi's non-zero blocks are needed
            else:
                blocks, w = (
                    self._R.reshape(self.p, self.d, self.k),
                    W.reshape(self.p, self.d),
                )
                t = sum(blocks[p].T @ w[p] for p in np.flatnonzero(support))
            q = float(t @ t)
            n_vec = t / np.sqrt(1.0 + q)
            c = 1.0 / (1.0 + 1.0 / np.sqrt(1.0 + q))
            u = self._R @ n_vec
            # R -= c (R n) n^T, done on R^T (Fortran-ordered view of the C-ordered R) in
            # place
            blas.dger(-c, n_vec, u, a=self._R.T, overwrite_a=True)
            # R R^T = A_0^{-1} - u u^T exactly (2c - c^2 |n|^2 = 1)
            self._downdate_A0inv(u)
            return
        # a block of rows: rebuilt from R when next needed
        self._lazy.pop("A0inv", None)
        T = self._R.T @ W  # (k, r)
        q, E = np.linalg.eigh(T.T @ T)
        q = np.maximum(q, 0.0)
        N = (T @ E) / np.sqrt(1.0 + q)
        c = 1.0 / (1.0 + 1.0 / np.sqrt(1.0 + q))
        self._R -= (self._R @ N) * c @ N.T

    def _downdate_A0inv(self, u: np.ndarray) -> None:
        """Keep the cached ``A_0^{-1}`` (UCB's widths read its blocks) current: ``-= u
        u^T``.

        One pass over ``k x k`` instead of rebuilding ``R R^T`` (``O(k^3)``); rebuilt
        exactly from ``R`` after ``refresh_every`` such downdates, which bounds their
        rounding.
        """
        A0inv = self._lazy.get("A0inv")
        if A0inv is None:
            return
        if self._A0inv_downdates >= self.refresh_every:
            del self._lazy["A0inv"]
            return
        blas.dger(-1.0, u, u, a=A0inv.T, overwrite_a=True)
        self._A0inv_downdates += 1

    def _A0inv(self) -> np.ndarray:
        """``A_0^{-1} = R R^T`` ``(k, k)``, cached and downdated row by row (see
        above)."""
        if "A0inv" not in self._lazy:
            self._lazy["A0inv"] = self._R @ self._R.T
            self._A0inv_downdates = 0
        return self._lazy["A0inv"]

    def _b0(self) -> np.ndarray:
        """``b_0 = sum_a lambda_a G_a A_a^{-1} b_a`` plus retired actions' frozen
        terms."""
        # G_a c = kron(phi_a, c): block p of the sum is sum_a phi_ap c_a.
        blocks = np.einsum("ap,adm->pdm", self._phi, self._Ab).reshape(self.k, self.m)
        return self.lam_action * blocks + self._b0_retired

    def _refresh_beta(self) -> None:
        b0 = self._b0()
        # column by column: two matrix-vector products each (faster than a thin GEMM
        # here)
        self._beta = np.column_stack(
            [self._R @ (self._R.T @ b0[:, j]) for j in range(self.m)]
        )
        # kept current by _downdate_R (or dropped by it)
        A0inv = self._lazy.get("A0inv")
        self._lazy.clear()
        if A0inv is not None:
            self._lazy["A0inv"] = A0inv

    def refactor(self) -> None:
        """Rebuild ``A_a^{-1}`` and ``R`` exactly from the summed statistics (``O(K d^3
        + k^3)``).

        The incremental updates never need it for stability; it resets their rounding
        and is what the precision test compares against.
        """
        for j in range(self._ids.shape[0]):
            self._Ainv[j] = self._inverse(self._A[j])
            self._Ab[j] = self._solve(self._A[j], self._b[j])
            self.arms[int(self._ids[j])].since_refresh = 0
        lam_a = self.lam_action
        # (K, d, d), 0 <= P <= lam_a I
        P = lam_a * (np.eye(self.d)[None] - lam_a * self._Ainv)
        # sum_a G_a P_a G_a^T: block (p, q) is sum_a phi_ap phi_aq P_a.
        blocks = np.einsum("ap,aq,ade->pdqe", self._phi, self._phi, P).reshape(
            self.k, self.k
        )
        A0 = self.lam * np.eye(self.k) + blocks + self._A0_retired
        L = np.linalg.cholesky((A0 + A0.T) / 2)
        # L^{-T}: R R^T = L^{-T} L^{-1} = A_0^{-1}
        self._R = np.linalg.solve(L, np.eye(self.k)).T
        self._lazy.pop("A0inv", None)  # rebuilt from the new R when next needed
        self._refresh_beta()

    def warm_start(
        self,
        contexts: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        propensities: np.ndarray,
        weighting: str = "none",
        max_weight: float = 20.0,
    ) -> None:
        """Learn from logged decisions before going online.

        ``weighting="none"``: ridge regression on the logs as they are; it needs no
        importance weights when the model is right. ``weighting="ips"``: each row
        weighted by its clipped inverse propensity ``min(1 / mu, max_weight)``, rescaled
        to mean 1 (so the logs keep their total weight against the prior); this
        re-balances a log skewed to a few actions towards the uniform design when the
        linear model is misspecified.

        The propensities are checked either way: logs with zero or missing propensities
        are logs whose policy nobody knows, and an action unseen by the learner means
        the catalog and the logs disagree. Both are errors, not something to skip
        silently.
        """
        x = self._check_contexts(contexts)
        props = np.asarray(propensities, dtype=float)
        if props.shape != (x.shape[0],):
            raise SchemaError(
                f"propensities has shape {props.shape}, expected ({x.shape[0]},)"
            )
        bad = np.flatnonzero(~np.isfinite(props) | (props <= 0) | (props > 1))
        if bad.size:
            raise SchemaError(
                f"propensity at row {int(bad[0])} is {props[bad[0]]!r}; "
                "logged propensities must be in (0, 1]"
            )
        if weighting == "none":
            self.update(x, actions, rewards)
        elif weighting == "ips":
            if not (np.isfinite(max_weight) and max_weight >= 1.0):
                raise ConfigError(
                    f"max_weight must be finite and >= 1, got {max_weight!r}"
                )
            w = np.minimum(1.0 / props, max_weight)
            self.update(x, actions, rewards, sample_weight=w / w.mean())
        else:
            raise ConfigError(f"weighting must be 'none' or 'ips', got {weighting!r}")

    # -- posterior
    # --------------------------------------------------------------------------

    def _beta_blocks(self, beta: np.ndarray) -> np.ndarray:
        """``G_a^T beta`` for every action: ``(K, d, ...)`` from ``beta`` ``(k,
        ...)``."""
        return np.einsum(
            "ap,pd...->ad...", self._phi, beta.reshape(self.p, self.d, *beta.shape[1:])
        )

    def _psi(self) -> np.ndarray:
        """Posterior mean of each action's weighted coefficient ``psi_a`` ``(K, d)``,
        cached."""
        if "psi" not in self._lazy:
            if self._ids.shape[0] == 0:
                raise ConfigError("no active action: add one before deciding")
            w = self.weights
            gb = self._beta_blocks(self._beta @ w)  # (K, d)
            self._lazy["psi"] = (
                self._Ab @ w + self.lam_action * (self._Ainv @ gb[:, :, None])[:, :, 0]
            )
        return self._lazy["psi"]

    @property
    def beta(self) -> np.ndarray:
        """Shared coefficients ``(k, m)``."""
        return self._beta.copy()

    def theta(self, action_id: int) -> np.ndarray:
        """Per-action coefficients ``(d, m)`` of an active action: ``psi_a - G_a^T
        beta``."""
        j = self._pos(action_id)
        gb = self._beta_blocks(self._beta)[j]  # (d, m)
        psi = self._Ab[j] + self.lam_action * self._Ainv[j] @ gb
        return psi - gb

    # -- deciding
    # ---------------------------------------------------------------------------

    def expected_reward(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean of the weighted reward minus cost, ``(n, K_active)``, and
        the action ids."""
        return self._mean(self._check_contexts(contexts))

    def _mean(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = x @ self._psi().T
        if self.cost_weight:
            mean -= self.cost_weight * self._costs[None, :]
        return mean, self._ids.copy()

    def _scale(self) -> float:
        return float(np.linalg.norm(self.weights)) or 1.0

    def _C(self) -> np.ndarray:
        """``G_a^T A_0^{-1} G_a`` per action ``(K, d, d)``, for scoring many contexts
        at once."""
        if "C" not in self._lazy:
            A0inv = self._A0inv()
            blocks = A0inv.reshape(self.p, self.d, self.p, self.d)
            self._lazy["C"] = np.einsum(
                "ap,aq,pdqe->ade", self._phi, self._phi, blocks, optimize=True
            )
        return self._lazy["C"]

    def _apply_Ainv(self, xs: np.ndarray) -> np.ndarray:
        """``A_a^{-1} x`` for every action and context: ``(n, K, d)`` as one matrix
        product."""
        K, d = self._Ainv.shape[0], self.d
        return (
            (self._Ainv.reshape(K * d, d) @ xs.T)
            .reshape(K, d, xs.shape[0])
            .transpose(2, 0, 1)
        )

    def _shared_var(self, Y: np.ndarray) -> np.ndarray:
        """``u^T A_0^{-1} u`` with ``u = lambda_a G_a y_a``, for ``Y`` ``(n, K, d)``:
        ``(n, K)``."""
        n, K = Y.shape[0], Y.shape[1]
        lam2 = self.lam_action**2
        # many contexts: go through the cached (K, d, d) matrices
        if n * self.k > 4 * K * self.d:
            return lam2 * np.einsum("nad,ade,nae->na", Y, self._C(), Y, optimize=True)
        if self.exploration == "ucb":
            # Few contexts, learning online: u^T A_0^{-1} u = sum_pq phi_ap phi_aq y^T
            # B_pq y
            # over the blocks B_pq of the cached A_0^{-1} where both phi_ap, phi_aq !=
            # 0:
            # O(K d^2) per decision for one-hot action features, never more than through
            # R.
            B = self._A0inv().reshape(self.p, self.d, self.p, self.d)
            out = np.zeros((n, K))
            for p, q in self._support_pairs():
                rows = np.flatnonzero(self._phi[:, p] * self._phi[:, q])
                Yr = Y[:, rows]  # (n, r, d)
                quad = np.einsum("nrd,nrd->nr", Yr @ B[p, :, q, :], Yr)
                out[:, rows] += (self._phi[rows, p] * self._phi[rows, q])[
                    None, :
                ] * quad
            return lam2 * out
        # Few contexts: ||R^T u||^2, with u = kron(phi_a, y_a) built only for non-zero
        # phi_ap.
        out = np.zeros((n, K, self.k))
        R = self._R.reshape(self.p, self.d, self.k)
        for p in range(self.p):
            rows = np.flatnonzero(self._phi[:, p])
            if rows.size:
                out[:, rows] += self._phi[rows, p][None, :, None] * (Y[:, rows] @ R[p])
        return lam2 * np.einsum("nak,nak->na", out, out)

    def _support_pairs(self) -> list[tuple[int, int]]:
        """Pairs ``(p, q)`` of action-feature columns both non-zero for some action."""
        if "pairs" not in self._lazy:
            nz = self._phi != 0
            both = np.einsum("ap,aq->pq", nz, nz)
            self._lazy["pairs"] = np.argwhere(both)
        return [(int(p), int(q)) for p, q in self._lazy["pairs"]]

    def ucb_width(self, contexts: np.ndarray) -> np.ndarray:
        """``sqrt(s)``: the posterior standard deviation of ``x . psi_a`` (unit noise).

        ``s = x^T A_a^{-1} x + lambda_a^2 y^T G_a^T A_0^{-1} G_a y`` with ``y = A_a^{-1}
        x``, equal to Li et al.'s four-term width: ``O(K d^2 + nnz(phi) d k)`` per
        decision.
        """
        x = self._check_contexts(contexts)
        out = np.empty((x.shape[0], self._ids.shape[0]))
        for s in range(0, x.shape[0], _CHUNK):
            xs = x[s : s + _CHUNK]
            Y = self._apply_Ainv(xs)
            out[s : s + _CHUNK] = np.sqrt(
                np.maximum(np.einsum("nad,nd->na", Y, xs) + self._shared_var(Y), 0.0)
            )
        return out

    def scores(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The index the learner maximises, ``(n, K_active)``, and the action ids
        (columns)."""
        x = self._check_contexts(contexts)
        mean, ids = self._mean(x)
        if self.exploration == "greedy" or self.alpha == 0.0:
            return mean, ids
        if self.exploration == "ucb":
            return mean + self.alpha * self._scale() * self.ucb_width(x), ids
        if self.sample_per == "batch":
            costs = self.cost_weight * self._costs[None, :]
            return x @ self._sample_psi().T - costs, ids
        return mean + self._thompson_noise(x), ids

    def _sample_psi(self) -> np.ndarray:
        """One joint posterior draw of every action's weighted coefficient ``psi_a``
        ``(K, d)``.

        ``beta ~ N(beta_hat, v^2 A_0^{-1})`` through ``R``, then each ``psi_a | beta``
        through a Cholesky factor of ``A_a`` (``A_a^{-1} L_a eps`` has covariance
        ``A_a^{-1}``).
        """
        K = self._ids.shape[0]
        v = self.alpha * self._scale()
        if "chol" not in self._lazy:
            self._lazy["chol"] = np.linalg.cholesky(self._A)
        delta = v * self._R @ self.rng.standard_normal(self.k)
        gb = self._beta_blocks(delta)  # (K, d)
        eps = self.rng.standard_normal((K, self.d))
        noise = (self._lazy["chol"] @ eps[:, :, None])[:, :, 0]
        step = self.lam_action * gb + v * noise
        return self._psi() + (self._Ainv @ step[:, :, None])[:, :, 0]

    def sample_coefficients(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One joint posterior draw to serve greedily for a refresh window.

        Returns ``(coef, ids, costs)``: score a context ``x`` as ``x @ coef.T - costs``
        and take the argmax. ``O(K d^3)`` per draw (a Cholesky factor per action, cached
        until the next update), ``O(K d)`` per decision served from it; every user of
        the window sees the same draw, so exploration is coarser than per-decision
        Thompson sampling.
        """
        if self._ids.shape[0] == 0:
            raise ConfigError("no active action: add one before deciding")
        return self._sample_psi(), self._ids.copy(), self.cost_weight * self._costs

    def _thompson(self, x: np.ndarray) -> np.ndarray:
        """Per-decision Thompson draws of the weighted reward (before costs), ``(n,
        K)``."""
        x = self._check_contexts(x)
        return x @ self._psi().T + self._thompson_noise(x)

    def _thompson_noise(self, x: np.ndarray) -> np.ndarray:
        """One joint posterior draw per context of ``x . (psi_a - psi_hat_a)`` for every
        action.

        ``x . psi_a = x . psi_hat_a + lambda_a y_a . G_a^T delta + x . eta_a`` with
        ``delta ~ N(0, v^2 A_0^{-1})`` (shared by the actions, drawn as ``v R eps``) and
        ``x . eta_a ~ N(0, v^2 x^T A_a^{-1} x)`` independent across actions: a scalar
        draw per action. Exact for the joint posterior, ``O(K d^2 + k^2)`` per decision.
        """
        n, K = x.shape[0], self._ids.shape[0]
        v = self.alpha * self._scale()
        out = np.empty((n, K))
        for s in range(0, n, _CHUNK):
            xs = x[s : s + _CHUNK]
            ns = xs.shape[0]
            Y = self._apply_Ainv(xs)  # y_a = A_a^{-1} x
            q = np.einsum("nad,nd->na", Y, xs)
            delta = v * self.rng.standard_normal((ns, self.k)) @ self._R.T  # (ns, k)
            gb = np.einsum("ap,npd->nad", self._phi, delta.reshape(ns, self.p, self.d))
            shared = self.lam_action * np.einsum("nad,nad->na", Y, gb)
            out[s : s + _CHUNK] = shared + v * np.sqrt(
                np.maximum(q, 0.0)
            ) * self.rng.standard_normal((ns, K))
        return out

    def choose(self, contexts: np.ndarray, available: object = None) -> np.ndarray:
        """The recommended action id for each context, among active and eligible
        actions.

        ``available``: ``None`` (every active action), integer action ids (everyone), or
        a boolean mask ``(n_ids,)`` / ``(n, n_ids)`` (per user) whose column ``j`` is
        action id ``j`` (see :func:`eligibility_mask`). Retired actions are never
        recommended: they are no longer in the model at all.
        """
        score, ids = self.scores(contexts)
        if available is not None:
            mask = eligibility_mask(available, ids, score.shape[0])
            score = np.where(mask, score, -np.inf)
        return ids[np.argmax(score, axis=1)]

    def probabilities(
        self,
        contexts: np.ndarray,
        n_ids: int,
        available: object = None,
        n_draws: int = 200,
    ) -> np.ndarray:
        """The learner's policy as ``(n, n_ids)`` action probabilities, zero where
        ineligible.

        Greedy and UCB are deterministic given the posterior (one-hot). Thompson
        sampling's probabilities ``P(a is the argmax)`` have no closed form: they are
        estimated from ``n_draws`` posterior draws per context (a Monte Carlo estimate;
        log it as such).
        """
        x = self._check_contexts(contexts)
        ids = self._ids
        if ids.size and n_ids <= int(ids.max()):
            raise SchemaError(
                f"n_ids={n_ids} is too small for active action {int(ids.max())}"
            )
        mask = eligibility_mask(available, ids, x.shape[0])
        probs = np.zeros((x.shape[0], n_ids))
        rows = np.arange(x.shape[0])
        if self.exploration == "ts" and self.alpha > 0:
            if n_draws < 1:
                raise ConfigError(f"n_draws must be >= 1, got {n_draws}")
            for _ in range(n_draws):
                score = np.where(mask, self.scores(x)[0], -np.inf)
                np.add.at(probs, (rows, ids[np.argmax(score, axis=1)]), 1.0 / n_draws)
            return probs
        score = np.where(mask, self.scores(x)[0], -np.inf)
        probs[rows, ids[np.argmax(score, axis=1)]] = 1.0
        return probs

    def greedy_probabilities(
        self, contexts: np.ndarray, all_ids: int, available: object = None
    ) -> np.ndarray:
        """The greedy (posterior-mean) policy as ``(n, all_ids)`` one-hot
        probabilities, for OPE."""
        mean, ids = self.expected_reward(contexts)
        mask = eligibility_mask(available, ids, mean.shape[0])
        best = ids[np.argmax(np.where(mask, mean, -np.inf), axis=1)]
        probs = np.zeros((mean.shape[0], all_ids))
        probs[np.arange(mean.shape[0]), best] = 1.0
        return probs

    def memory_bytes(self) -> dict[str, int]:
        """Memory of the shared statistics and per action (the scaling a capacity plan
        needs).

        Per action: ``A_a`` and ``A_a^{-1}`` (``d x d`` each), ``b_a`` and ``A_a^{-1}
        b_a`` (``d x m``), features and cost. Shared: ``R``, the retired terms and
        ``beta``. Lazily cached scoring matrices (``psi``, and for batch scoring
        ``C``/Cholesky factors) are reported apart.
        """
        d, m, p = self.d, self.m, self.p
        per_action = 8 * (2 * d * d + 2 * d * m + p + 1)
        shared = (
            self._R.nbytes
            + self._A0_retired.nbytes
            + self._b0_retired.nbytes
            + self._beta.nbytes
        )
        K = self._ids.shape[0]
        cached = sum(v.nbytes for v in self._lazy.values())
        return {
            "shared": int(shared),
            "per_action": int(per_action),
            "total": int(shared + K * per_action),
            "cached": int(cached),
        }


class IntentPolicySelector:
    """Route each user to a policy by predicted intent (Zhang & Xie, RecSys 2019,
    PV-MAB).

    An intent-propensity model (logistic regression on the context, fit on logged target
    events) scores each user; users whose propensity is at least ``threshold`` go to the
    ``high`` policy (e.g. one optimising the target event), the rest to the ``low``
    policy (e.g. one optimising stage progression).
    """

    def __init__(
        self,
        policies: Mapping[str, HybridLinearBandit],
        threshold: float = 0.5,
        l2: float = 1.0,
    ):
        if set(policies) != {"high", "low"}:
            raise ConfigError(
                f"policies must be named 'high' and 'low', got {sorted(policies)}"
            )
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold!r}")
        self.policies = dict(policies)
        self.threshold = float(threshold)
        self.l2 = float(l2)
        self.coef: np.ndarray | None = None

    def fit_intent(
        self, contexts: np.ndarray, target_events: np.ndarray, n_iter: int = 50
    ) -> IntentPolicySelector:
        """Fit the intent-propensity model by Newton's method on the L2-penalised
        log-likelihood."""
        x = np.asarray(contexts, dtype=float)
        y = np.asarray(target_events, dtype=float)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise SchemaError(
                "need contexts (n, d) and target_events (n,), got "
                f"{x.shape} and {y.shape}"
            )
        bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
        if bad.size:
            raise SchemaError(
                f"target_events must be 0/1; row {int(bad[0])} is {y[bad[0]]!r}"
            )
        coef = np.zeros(x.shape[1])
        for _ in range(n_iter):
            p = 1.0 / (1.0 + np.exp(-(x @ coef)))
            grad = x.T @ (p - y) + self.l2 * coef
            hess = (x * (p * (1 - p))[:, None]).T @ x + self.l2 * np.eye(x.shape[1])
            step = np.linalg.solve(hess, grad)
            coef -= step
            if np.max(np.abs(step)) < 1e-8:
                break
        self.coef = coef
        return self

    def intent(self, contexts: np.ndarray) -> np.ndarray:
        """Predicted probability of the target event for each context."""
        if self.coef is None:
            raise ConfigError("fit_intent must run before intent or choose")
        x = np.asarray(contexts, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.coef.shape[0]:
            raise SchemaError(
                f"contexts must have {self.coef.shape[0]} columns, got shape {x.shape}"
            )
        return 1.0 / (1.0 + np.exp(-(x @ self.coef)))

    def route(self, contexts: np.ndarray) -> np.ndarray:
        """Boolean mask: True where the user goes to the ``high``-intent policy."""
        return self.intent(contexts) >= self.threshold

    def choose(
        self, contexts: np.ndarray, available: np.ndarray | None = None
    ) -> np.ndarray:
        """Each user's action from the policy their intent selects."""
        x = np.asarray(contexts, dtype=float)
        high = self.route(x)
        out = np.empty(x.shape[0], dtype=int)
        for name, rows in (("high", high), ("low", ~high)):
            if rows.any():
                out[rows] = self.policies[name].choose(x[rows], available)
        return out

    def update(
        self, contexts: np.ndarray, actions: np.ndarray, signals: np.ndarray
    ) -> None:
        """Update every policy on every decision: each learns all objective signals and
        applies its own business weights, so the policies differ in what they optimise,
        not in data."""
        for policy in self.policies.values():
            policy.update(contexts, actions, signals)
