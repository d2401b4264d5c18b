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
   by construction), keeps ``g = R^T b_0`` (``beta = R g``) current in ``O(k m)``, keeps
   the ``A_a^{-1}`` by Sherman–Morrison with an exact re-inversion every
   ``refresh_every`` rows of that action, and gets ``A_a^{-1} b_a`` from its previous
   value by one recursive least-squares step refined once against the summed ``A_a``
   and ``b_a`` (a Cholesky solve with each re-inversion);
   :meth:`HybridLinearBandit.refactor` rebuilds everything from the sums. Exploration
   widths read only the ``d x d`` blocks of ``A_0^{-1}`` that the actions' features
   touch (the diagonal blocks for one-hot features), built from ``R`` on first use,
   downdated by the same rank-one term (``-u u^T``) and rebuilt every
   ``refresh_every`` rows: ``O(K d^2)`` per decision. Decisions read ``A_a^{-1}`` from
   a float32 copy by default (``width_dtype``), which halves their memory traffic; the
   posterior state and mean stay float64.

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
    "EXPLORATION",
    "ArmInfo",
    "HybridLinearBandit",
    "IntentPolicySelector",
    "eligibility_mask",
]

EXPLORATION: tuple[str, ...] = ("ucb", "ts", "greedy")
# contexts scored at once by the per-decision explorations (bounds n x K x d arrays)
_CHUNK = 256
# A greedy call on at most this many contexts, right after an update, reads the
# posterior mean through y_a = A_a^{-1} x instead of rebuilding the cached psi (O(K d^2)
# either way, but y reads the width_dtype copy once); after _DIRECT_READS such calls on
# the same posterior it builds psi, which then serves each decision in O(K d).
_DIRECT_MAX = 4
_DIRECT_READS = 2


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
        ``a`` (bounds the rounding drift of the inverse); the shared coefficients
        ``beta``, updated incrementally by single rows, are also recomputed exactly
        after this many single-row updates. width_dtype: ``"float32"`` (default) or
        ``"float64"``: precision of the copy of the ``A_a^{-1}`` that decisions read to
        compute UCB widths and Thompson draws (``y_a = A_a^{-1} x``). ``float32``
        halves the memory a decision reads; the posterior state, the posterior mean and
        :meth:`ucb_width` stay float64 whatever this says. seed: seed of the
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
        width_dtype: str = "float32",
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
        if width_dtype not in ("float32", "float64"):
            raise ConfigError(
                f"width_dtype must be 'float32' or 'float64', got {width_dtype!r}"
            )
        self.width_dtype = np.dtype(width_dtype)
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
        # the copy of it that decisions read for widths and draws (width_dtype)
        self._Ainv_w = np.zeros((0, d, d), dtype=self.width_dtype)
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
        # beta = A_0^{-1} b_0, kept current by single rows (Sherman-Morrison, O(k^2))
        # and recomputed exactly as R (R^T b_0) by batches and every refresh_every rows
        self._beta = np.zeros((k, m))
        # psi, C, chol: recomputed on first use after a change of the posterior
        self._lazy: dict[str, np.ndarray] = {}
        # greedy decisions read through y_a since psi was last dropped (_DIRECT_READS)
        self._direct_reads = 0
        # Blocks (p, q) of A_0^{-1} for the pairs of action-feature columns some action
        # has both non-zero (what widths read), built from R on first use and then
        # downdated with R; None when not built. _pairs: which pairs, and per pair the
        # actions and their weights phi_ap phi_aq (depends on the action set only).
        self._B: np.ndarray | None = None
        self._B_downdates = 0
        self._pairs: tuple | None = None
        # single-row updates since beta was last computed exactly from R and b_0
        self._beta_updates = 0
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
        self._direct_reads = 0

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
        self._Ainv_w = self._Ainv.astype(self.width_dtype)
        self._b = np.concatenate([self._b, np.zeros((1, self.d, self.m))])
        self._Ab = np.concatenate([self._Ab, np.zeros((1, self.d, self.m))])
        self._phi = np.concatenate([self._phi, phi[None]])
        self._costs = np.append(self._costs, float(cost))
        self._structure_changed()

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
        for name in ("_ids", "_A", "_Ainv", "_Ainv_w", "_b", "_Ab", "_phi", "_costs"):
            setattr(self, name, getattr(self, name)[keep])
        del self.arms[action_id]
        self.retired.add(action_id)
        self._structure_changed()

    def _structure_changed(self) -> None:
        """The action set changed: drop every cache that depends on it (``A_0`` and
        ``beta`` do not: adding and retiring leave them unchanged)."""
        self._posterior_changed()
        self._pairs = None
        self._B = None

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
            self._beta_updates += 1
            if self._beta_updates >= self.refresh_every:
                self._refresh_beta()  # exact, from R and b_0: resets the rounding
            else:
                self._posterior_changed()
        else:
            for action_id in np.unique(a):
                rows = a == action_id
                self._update_action(self._pos(int(action_id)), x[rows], r[rows])
            self._refresh_beta()

    def _posterior_changed(self) -> None:
        """Drop the caches built from the posterior (kept: ``A_0^{-1}`` blocks, kept
        current by the downdates, and the action-set structure)."""
        self._lazy.clear()
        self._direct_reads = 0

    def _update_one(self, j: int, x: np.ndarray, r: np.ndarray) -> None:
        """One row: :meth:`_update_action` for one vector, touching only what changes.

        The action's own ``A_a``, ``b_a`` and ``A_a^{-1}`` are updated in place (BLAS
        rank-one updates); ``A_a^{-1} b_a`` by the recursive least-squares step from
        its previous value followed by one step of iterative refinement against the
        summed ``A_a`` and ``b_a`` (``O(d^2)``, as exact as a Cholesky solve; the solve
        itself, ``O(d^3)``, runs with each exact re-inversion). The shared block: the
        factor ``R`` is downdated in place (``R' = R - c u n^T``), and ``beta`` follows
        by Sherman–Morrison, ``beta' = beta + A_0^{-1} db_0 - u (u^T b_0')``, where
        ``R^T db_0`` reads only the rows of ``R`` in the action's feature blocks and
        ``u`` and ``A_0^{-1} db_0`` come from one pass over the old ``R``; so a decision
        never waits for ``beta`` (it is recomputed exactly from ``R`` and ``b_0`` every
        ``refresh_every`` single rows).
        """
        info = self.arms[int(self._ids[j])]
        lam_a, m = self.lam_action, self.m
        A, Ainv, b = self._A[j], self._Ainv[j], self._b[j]
        v = Ainv @ x
        s = 1.0 + float(x @ v)
        Ab_old = self._Ab[j].copy()
        # A_a += x x^T and b_a += x r^T: sums only grow
        blas.dger(1.0, x, x, a=A.T, overwrite_a=True)
        b += np.outer(x, r)
        info.n += 1
        info.since_refresh += 1
        if info.since_refresh < self.refresh_every:
            # Sherman-Morrison, in place: A_a,new^{-1} x = v / s
            blas.dger(-1.0 / s, v, v, a=Ainv.T, overwrite_a=True)
            Ab = Ab_old + np.outer(v / s, r - x @ Ab_old)
            Ab += Ainv @ (b - A @ Ab)  # one step of iterative refinement
        else:
            self._Ainv[j] = Ainv = self._inverse(A)
            Ab = self._solve(A, b)
            info.since_refresh = 0
        self._Ab[j] = Ab
        self._Ainv_w[j] = Ainv
        # Shared block: A_0 += G_a wd wd^T G_a^T, b_0 += lambda_a G_a (Ab - Ab_old)
        phi = self._phi[j]
        W = np.empty((self.d, 1 + m))
        W[:, 0] = (lam_a / np.sqrt(s)) * v
        W[:, 1:] = lam_a * (Ab - Ab_old)
        Rb = self._R.reshape(self.p, self.d, self.k)
        T = None  # R^T G_a W: only the rows of R in phi's non-zero blocks
        for p in np.flatnonzero(phi):
            term = phi[p] * (W.T @ Rb[p])
            T = term if T is None else T + term
        t = T[0]
        q = float(t @ t)
        n_vec = t / np.sqrt(1.0 + q)
        c = 1.0 / (1.0 + 1.0 / np.sqrt(1.0 + q))
        R = self._R
        # One pass over the old R gives u = R n and A_0^{-1} db_0 = R (R^T db_0).
        N = np.empty((self.k, 1 + m))
        N[:, 0] = n_vec
        N[:, 1:] = T[1:].T
        RN = R @ N
        u = RN[:, 0]
        # beta' = (A_0^{-1} - u u^T)(b_0 + db_0) = beta + A_0^{-1} db_0 - u (u^T b_0')
        self._beta += RN[:, 1:] - np.outer(u, u @ self._b0())
        # R -= c (R n) n^T in place (on the Fortran view); then R R^T = A_0^{-1} - u u^T
        blas.dger(-c, n_vec, u, a=R.T, overwrite_a=True)
        self._downdate_blocks(u[:, None])

    def _update_action(self, j: int, X: np.ndarray, Rr: np.ndarray) -> None:
        """Rows ``X`` (n_a, d) with rewards ``Rr`` of the action at position ``j``."""
        lam_a, d = self.lam_action, self.d
        Ainv = self._Ainv[j]
        n_a = X.shape[0]
        # Rows that change A_a by S = X^T X; if there are more rows than d, use an
        # equivalent set of at most d rows (eigen-factor of S): A_0's change depends on
        # S only.
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
        self._Ainv_w[j] = self._Ainv[j]
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

    def _downdate_R(self, W: np.ndarray) -> None:
        """``A_0 <- A_0 + W W^T``, i.e. ``R R^T <- R (I - N N^T) R^T``, in factor form.

        With ``T = R^T W`` and ``T^T T = E diag(q) E^T``, the columns of
        ``N = T E diag(1 / sqrt(1 + q))`` are orthogonal with squared norms
        ``s = q / (1 + q) < 1``, so ``I - N N^T = (I - N diag(c) N^T)^2`` with
        ``c = 1 / (1 + sqrt(1 - s))``: the new factor is ``R - (R N) diag(c) N^T``, and
        ``A_0^{-1}`` falls by ``U U^T`` with ``U = R N`` (the cached blocks follow).
        (One row at a time, :meth:`_update_one` does the same with vectors.)
        """
        T = self._R.T @ W  # (k, r)
        q, E = np.linalg.eigh(T.T @ T)
        q = np.maximum(q, 0.0)
        N = (T @ E) / np.sqrt(1.0 + q)
        c = 1.0 / (1.0 + 1.0 / np.sqrt(1.0 + q))
        U = self._R @ N
        self._R -= U * c @ N.T
        self._downdate_blocks(U)

    def _pair_structure(self) -> tuple:
        """Pairs ``(p, q)`` of action-feature columns both non-zero for some action,
        and per pair the positions of those actions and their ``phi_ap phi_aq``; also
        the ``(n_pairs, K)`` matrix of those weights (zero elsewhere)."""
        if self._pairs is None:
            nz = self._phi != 0
            pairs = np.argwhere(nz.T.astype(int) @ nz.astype(int))
            rows = [np.flatnonzero(nz[:, p] & nz[:, q]) for p, q in pairs]
            weights = [
                self._phi[r, p] * self._phi[r, q] for r, (p, q) in zip(rows, pairs)
            ]
            dense = np.zeros((len(pairs), self._ids.shape[0]))
            for i, (r, w) in enumerate(zip(rows, weights)):
                dense[i, r] = w
            self._pairs = (pairs, rows, weights, dense)
        return self._pairs

    def _blocks(self) -> np.ndarray:
        """Blocks ``(p, q)`` of ``A_0^{-1} = R R^T`` for the support pairs, ``(n_pairs,
        d, d)``.

        Built from ``R`` (``O(n_pairs d^2 k)``), then downdated with every row
        (``A_0^{-1} -= u u^T`` touches each block by ``u_p u_q^T``) and rebuilt exactly
        from ``R`` after ``refresh_every`` downdates, which bounds their rounding.
        """
        if self._B is None:
            pairs = self._pair_structure()[0]
            Rb = self._R.reshape(self.p, self.d, self.k)
            B = np.empty((len(pairs), self.d, self.d))
            for i, (p, q) in enumerate(pairs):
                B[i] = Rb[p] @ Rb[q].T
            self._B = B
            self._B_downdates = 0
        return self._B

    def _downdate_blocks(self, U: np.ndarray) -> None:
        """``A_0^{-1} -= U U^T`` on the cached blocks (``U`` is ``(k, r)``)."""
        if self._B is None:
            return
        if self._B_downdates >= self.refresh_every:
            self._B = None  # rebuilt exactly from R when next needed
            return
        Ub = U.reshape(self.p, self.d, U.shape[1])
        for i, (p, q) in enumerate(self._pair_structure()[0]):
            if U.shape[1] == 1:
                # B_pq -= u_p u_q^T, in place on the Fortran view
                blas.dger(
                    -1.0, Ub[q, :, 0], Ub[p, :, 0], a=self._B[i].T, overwrite_a=True
                )
            else:
                self._B[i] -= Ub[p] @ Ub[q].T
        self._B_downdates += 1

    def _b0(self) -> np.ndarray:
        """``b_0 = sum_a lambda_a G_a A_a^{-1} b_a`` plus retired actions' frozen
        terms."""
        # G_a c = kron(phi_a, c): block p of the sum is sum_a phi_ap c_a.
        blocks = np.einsum("ap,adm->pdm", self._phi, self._Ab).reshape(self.k, self.m)
        return self.lam_action * blocks + self._b0_retired

    def _refresh_beta(self) -> None:
        """``beta = R (R^T b_0)`` exactly (two matrix-vector products per objective)."""
        b0 = self._b0()
        # column by column: matrix-vector products (faster than a thin GEMM here)
        g = np.column_stack([self._R.T @ b0[:, j] for j in range(self.m)])
        self._beta = np.column_stack([self._R @ g[:, j] for j in range(self.m)])
        self._beta_updates = 0
        self._posterior_changed()

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
        self._Ainv_w = self._Ainv.astype(self.width_dtype)
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
        self._B = None  # rebuilt from the new R when next needed
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

    def _mean_from(self, x: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Posterior mean minus cost ``(n, K)`` from ``Y = A_a^{-1} x`` ``(n, K, d)``.

        ``x . psi_a = x . (A_a^{-1} b_a w) + lambda_a y_a . (G_a^T beta w)``: the same
        number as ``x @ psi.T``, read without the ``O(K d^2)`` refresh of ``psi`` that
        every update would otherwise put on the next decision's path (UCB and Thompson
        sampling form ``Y`` for their widths anyway; ``Y`` from the ``width_dtype``
        copy carries its rounding, about 1e-7 relative in float32).
        """
        w = self.weights
        gb = self._beta_blocks(self._beta @ w)  # (K, d)
        mean = x @ (self._Ab @ w).T + self.lam_action * np.einsum("nad,ad->na", Y, gb)
        if self.cost_weight:
            mean -= self.cost_weight * self._costs[None, :]
        return mean

    def _scale(self) -> float:
        return float(np.linalg.norm(self.weights)) or 1.0

    def _C(self) -> np.ndarray:
        """``G_a^T A_0^{-1} G_a`` per action ``(K, d, d)``, for scoring many contexts
        at once: block ``(p, q)`` of ``A_0^{-1}`` weighted by ``phi_ap phi_aq``."""
        if "C" not in self._lazy:
            dense = self._pair_structure()[3]
            self._lazy["C"] = np.einsum("ia,ide->ade", dense, self._blocks())
        return self._lazy["C"]

    def _apply_Ainv(self, xs: np.ndarray, exact: bool = True) -> np.ndarray:
        """``A_a^{-1} x`` for every action and context: ``(n, K, d)`` as one matrix
        product; ``exact=False`` reads the ``width_dtype`` copy of the ``A_a^{-1}``."""
        K, d = self._Ainv.shape[0], self.d
        Ainv = self._Ainv if exact else self._Ainv_w
        return (
            (Ainv.reshape(K * d, d) @ xs.T.astype(Ainv.dtype))
            .reshape(K, d, xs.shape[0])
            .transpose(2, 0, 1)
        )

    def _shared_var(self, Y: np.ndarray) -> np.ndarray:
        """``u^T A_0^{-1} u`` with ``u = lambda_a G_a y_a``, for ``Y`` ``(n, K, d)``:
        ``(n, K)``.

        ``u^T A_0^{-1} u = sum_pq phi_ap phi_aq y^T B_pq y`` over the cached blocks
        ``B_pq`` of ``A_0^{-1}`` where both ``phi_ap`` and ``phi_aq`` are non-zero:
        ``O(K d^2)`` per context for one-hot action features. Many contexts go through
        the per-action matrices ``G_a^T A_0^{-1} G_a`` instead.
        """
        n, K = Y.shape[0], Y.shape[1]
        lam2 = self.lam_action**2
        if n * self.k > 4 * K * self.d:
            return lam2 * np.einsum("nad,ade,nae->na", Y, self._C(), Y, optimize=True)
        B = self._blocks()
        _, rows, weights, _ = self._pair_structure()
        out = np.zeros((n, K))
        for i in range(B.shape[0]):
            Yr = Y[:, rows[i]]  # (n, r, d)
            quad = np.einsum("nrd,nrd->nr", Yr @ B[i], Yr)
            out[:, rows[i]] += weights[i] * quad
        return lam2 * out

    def _width_from(self, xs: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Posterior standard deviation of ``x . psi_a`` ``(n, K)`` from ``Y = A_a^{-1}
        x``."""
        own = np.einsum("nad,nd->na", Y, xs.astype(Y.dtype))
        return np.sqrt(np.maximum(own + self._shared_var(Y), 0.0))

    def _width(self, x: np.ndarray, exact: bool) -> np.ndarray:
        """Posterior standard deviation of ``x . psi_a`` for checked contexts ``x``."""
        out = np.empty((x.shape[0], self._ids.shape[0]))
        for s in range(0, x.shape[0], _CHUNK):
            xs = x[s : s + _CHUNK]
            out[s : s + _CHUNK] = self._width_from(xs, self._apply_Ainv(xs, exact))
        return out

    def ucb_width(self, contexts: np.ndarray) -> np.ndarray:
        """``sqrt(s)``: the posterior standard deviation of ``x . psi_a`` (unit noise),
        in float64.

        ``s = x^T A_a^{-1} x + lambda_a^2 y^T G_a^T A_0^{-1} G_a y`` with ``y = A_a^{-1}
        x``, equal to Li et al.'s four-term width: ``O(K d^2)`` per decision for one-hot
        action features. (UCB decisions compute the same from the ``width_dtype`` copy
        of the ``A_a^{-1}``.)
        """
        return self._width(self._check_contexts(contexts), exact=True)

    def scores(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The index the learner maximises, ``(n, K_active)``, and the action ids
        (columns).

        No decision waits for a refresh after an update: UCB and per-decision Thompson
        sampling read the mean from the ``y_a = A_a^{-1} x`` they form for their widths
        (:meth:`_mean_from`), and greedy reads a few contexts the same way until the
        cached ``psi`` pays (``_DIRECT_READS``). :meth:`expected_reward` always reads
        the float64 ``psi``.
        """
        x = self._check_contexts(contexts)
        ids = self._ids.copy()
        if ids.size == 0:
            raise ConfigError("no active action: add one before deciding")
        exact = self.width_dtype == np.float64
        if self.exploration == "greedy" or self.alpha == 0.0:
            direct = x.shape[0] <= _DIRECT_MAX and "psi" not in self._lazy
            if direct and self._direct_reads < _DIRECT_READS:
                self._direct_reads += 1
                return self._mean_from(x, self._apply_Ainv(x, exact)), ids
            return self._mean(x)
        if self.exploration == "ts" and self.sample_per == "batch":
            costs = self.cost_weight * self._costs[None, :]
            return x @ self._sample_psi().T - costs, ids
        out = np.empty((x.shape[0], ids.shape[0]))
        for s in range(0, x.shape[0], _CHUNK):
            xs = x[s : s + _CHUNK]
            # y_a = A_a^{-1} x, shared by the mean and the width
            Y = self._apply_Ainv(xs, exact)
            if self.exploration == "ucb":
                spread = self.alpha * self._scale() * self._width_from(xs, Y)
            else:
                spread = self._thompson_noise_from(xs, Y)
            out[s : s + _CHUNK] = self._mean_from(xs, Y) + spread
        return out, ids

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
        exact = self.width_dtype == np.float64
        noise = np.empty((x.shape[0], self._ids.shape[0]))
        for s in range(0, x.shape[0], _CHUNK):
            xs = x[s : s + _CHUNK]
            noise[s : s + _CHUNK] = self._thompson_noise_from(
                xs, self._apply_Ainv(xs, exact)
            )
        return x @ self._psi().T + noise

    def _thompson_noise_from(self, xs: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """One joint posterior draw per context of ``x . (psi_a - psi_hat_a)`` for every
        action, ``(n, K)``, from ``Y = A_a^{-1} x``.

        ``x . psi_a = x . psi_hat_a + lambda_a y_a . G_a^T delta + x . eta_a`` with
        ``delta ~ N(0, v^2 A_0^{-1})`` (shared by the actions, drawn as ``v R eps``) and
        ``x . eta_a ~ N(0, v^2 x^T A_a^{-1} x)`` independent across actions: a scalar
        draw per action. Exact for the joint posterior, ``O(K d^2 + k^2)`` per decision;
        ``y_a`` is computed from the ``width_dtype`` copy of the ``A_a^{-1}``.
        """
        ns, K = xs.shape[0], self._ids.shape[0]
        v = self.alpha * self._scale()
        q = np.einsum("nad,nd->na", Y, xs.astype(Y.dtype))
        delta = v * self.rng.standard_normal((ns, self.k)) @ self._R.T  # (ns, k)
        gb = np.einsum("ap,npd->nad", self._phi, delta.reshape(ns, self.p, self.d))
        shared = self.lam_action * np.einsum("nad,nad->na", Y, gb)
        return shared + v * np.sqrt(np.maximum(q, 0.0)) * self.rng.standard_normal(
            (ns, K)
        )

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

        Per action: ``A_a`` and ``A_a^{-1}`` (``d x d`` float64 each), the copy of
        ``A_a^{-1}`` in ``width_dtype`` that decisions read, ``b_a`` and ``A_a^{-1}
        b_a`` (``d x m``), features and cost. Shared: ``R``, the retired terms and
        ``beta``. Caches built on first use are reported apart (``cached``): ``psi``,
        the blocks of ``A_0^{-1}`` that widths read, and for batch scoring ``C`` and
        Cholesky factors.
        """
        d, m, p = self.d, self.m, self.p
        per_action = (
            8 * (2 * d * d + 2 * d * m + p + 1) + self.width_dtype.itemsize * d * d
        )
        shared = (
            self._R.nbytes
            + self._A0_retired.nbytes
            + self._b0_retired.nbytes
            + self._beta.nbytes
        )
        K = self._ids.shape[0]
        cached = sum(v.nbytes for v in self._lazy.values())
        cached += 0 if self._B is None else self._B.nbytes
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
