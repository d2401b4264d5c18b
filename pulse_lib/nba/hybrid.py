"""The hybrid next-best-action learner, in one readable file.

1. :class:`HybridLinearBandit` — a linear contextual bandit with parameters shared by all
   actions and parameters per action (the "hybrid" model of Li et al. 2010, Algorithm 2):

       E[r | x, a] = z_{x,a} . beta + x . theta_a,     z_{x,a} = kron(phi_a, x)

   ``phi_a`` are the action's features, so what is learned about one email offer transfers to
   a new email offer through ``beta``. The posterior is a ridge regression; the learner keeps
   only its sufficient statistics, so offline warm start (from logs), online updates, batch
   updates, adding and retiring actions are all the same few matrix sums. Exploration by
   upper confidence bounds (LinUCB) or by Thompson sampling (Agrawal & Goyal 2013), or none.

   Each objective signal (target event, stage progression) gets its own right-hand side over
   the same design, and the business weights combine them at decision time: ridge is linear
   in the rewards, so this equals learning the weighted reward, and changing the weights needs
   no retraining. The known per-action cost is subtracted directly.

2. :class:`IntentPolicySelector` — the propensity-variant hybrid of Zhang & Xie (RecSys 2019):
   an intent-propensity model predicts how likely a user is to perform the target event, and
   routes high-intent users to a policy that optimises the target event and the others to a
   policy that moves them along the journey.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pulse_lib.errors import ConfigError, SchemaError

__all__ = ["ArmStats", "HybridLinearBandit", "IntentPolicySelector", "EXPLORATION"]

EXPLORATION: tuple[str, ...] = ("ucb", "ts", "greedy")
# Cached posterior arrays with one row per active action (kept in step on add/retire).
_PER_ACTION_KEYS = ("ids", "Ainv", "AinvB", "theta", "phi", "psi", "costs", "b_w", "M", "La", "theta_base")


@dataclass
class ArmStats:
    """Sufficient statistics of one action: ``A = lambda_a I + sum x x^T``, ``B = sum x z^T``, ``b = sum x r^T``."""

    A: np.ndarray  # (d, d)
    B: np.ndarray  # (d, k)
    b: np.ndarray  # (d, m) one column per objective
    features: np.ndarray  # (p,)
    cost: float
    n: int = 0

    def nbytes(self) -> int:
        """Memory held by this action's statistics."""
        return int(self.A.nbytes + self.B.nbytes + self.b.nbytes + self.features.nbytes)


class HybridLinearBandit:
    """Hybrid linear contextual bandit (LinUCB / linear Thompson sampling / greedy).

    Args:
        context_width: ``d``, the width of context vectors ``x``.
        feature_width: ``p``, the width of action features ``phi_a``; shared width ``k = p d``.
        objectives: names of the learned signals (columns of the reward matrix).
        weights: business weight of each objective (same order), used at decision time.
        cost_weight: weight of the known per-action cost (subtracted).
        exploration: ``"ucb"``, ``"ts"`` or ``"greedy"``.
        alpha: UCB width multiplier, or the posterior scale ``v`` of Thompson sampling.
        prior_precision: ridge penalty on the shared ``beta`` (prior ``N(0, I/lambda)``).
        action_prior_precision: ridge penalty on each ``theta_a`` (default: ``prior_precision``).
            A larger value says "an action differs little from others of its kind": the shared
            part then explains most of what is common, and a new action borrows it.
        sample_per: Thompson sampling draws a posterior sample per ``"decision"`` (exact) or
            one per call to :meth:`choose` shared by its whole ``"batch"`` (fast serving).
        seed: seed of the Thompson-sampling draws and tie-breaking.
    """

    def __init__(self, context_width: int, feature_width: int, objectives: Sequence[str] = ("reward",),
                 weights: Sequence[float] | None = None, cost_weight: float = 0.0, exploration: str = "ucb",
                 alpha: float = 1.0, prior_precision: float = 1.0, action_prior_precision: float | None = None,
                 sample_per: str = "decision", seed: int = 0):
        if context_width < 1 or feature_width < 1:
            raise ConfigError(f"context_width and feature_width must be >= 1, got {context_width}, {feature_width}")
        if exploration not in EXPLORATION:
            raise ConfigError(f"unknown exploration {exploration!r}; choose one of {EXPLORATION}")
        if sample_per not in ("decision", "batch"):
            raise ConfigError(f"sample_per must be 'decision' or 'batch', got {sample_per!r}")
        self.sample_per = sample_per
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ConfigError(f"alpha must be finite and >= 0, got {alpha!r}")
        if not (np.isfinite(prior_precision) and prior_precision > 0):
            raise ConfigError(f"prior_precision must be finite and > 0, got {prior_precision!r}")
        self.d, self.p = int(context_width), int(feature_width)
        self.k = self.d * self.p
        self.objectives = tuple(objectives)
        self.m = len(self.objectives)
        self.exploration = exploration
        self.alpha = float(alpha)
        self.lam = float(prior_precision)
        lam_a = self.lam if action_prior_precision is None else action_prior_precision
        if not (np.isfinite(lam_a) and lam_a > 0):
            raise ConfigError(f"action_prior_precision must be finite and > 0, got {action_prior_precision!r}")
        self.lam_action = float(lam_a)
        self.rng = np.random.default_rng(seed)
        self.set_weights(np.ones(self.m) if weights is None else weights, cost_weight)
        # Shared statistics: ZZ = lambda I + sum z z^T, Zr = sum z r^T.
        self.ZZ = self.lam * np.eye(self.k)
        self.Zr = np.zeros((self.k, self.m))
        # Contributions of retired actions, frozen: the shared estimate is unchanged by retiring.
        self._retired_BAB = np.zeros((self.k, self.k))
        self._retired_BAb = np.zeros((self.k, self.m))
        self.arms: dict[int, ArmStats] = {}
        self.retired: set[int] = set()
        self._cache: dict[str, np.ndarray] | None = None

    # -- configuration ----------------------------------------------------------------------

    def set_weights(self, weights: Sequence[float], cost_weight: float = 0.0) -> None:
        """Set the business weights (one per objective) and the cost weight; no retraining."""
        w = np.asarray(weights, dtype=float)
        if w.shape != (self.m,) or not np.isfinite(w).all():
            raise ConfigError(f"weights must be {self.m} finite numbers for objectives {self.objectives}, got {weights!r}")
        if not np.isfinite(cost_weight):
            raise ConfigError(f"cost_weight must be finite, got {cost_weight!r}")
        self.weights = w
        self.cost_weight = float(cost_weight)
        self._cache = None

    def add_action(self, action_id: int, features: np.ndarray, cost: float = 0.0) -> None:
        """Start learning a new action from the prior (its shared part already informs it)."""
        action_id = int(action_id)
        if action_id in self.arms:
            raise ConfigError(f"action {action_id} is already active")
        if action_id in self.retired:
            raise ConfigError(f"action {action_id} was retired; relaunch it under a new id")
        phi = np.asarray(features, dtype=float)
        if phi.shape != (self.p,) or not np.isfinite(phi).all():
            raise SchemaError(f"action {action_id}: features must be {self.p} finite numbers, got shape {phi.shape}")
        if not (np.isfinite(cost) and cost >= 0):
            raise ConfigError(f"action {action_id}: cost must be finite and >= 0, got {cost!r}")
        self.arms[action_id] = ArmStats(
            A=self.lam_action * np.eye(self.d), B=np.zeros((self.d, self.k)), b=np.zeros((self.d, self.m)),
            features=phi, cost=float(cost),
        )
        self._cache_add(action_id)

    def retire_action(self, action_id: int) -> None:
        """Stop recommending an action and free its statistics, without retraining anything.

        Its data stay in the shared estimate: the arm's term ``B^T A^{-1} B`` (and the matching
        right-hand side) is frozen into the shared statistics, so ``beta`` is unchanged.
        """
        action_id = int(action_id)
        if action_id not in self.arms:
            raise ConfigError(f"cannot retire action {action_id}: it is not active (active: {sorted(self.arms)})")
        arm = self.arms.pop(action_id)
        AinvB = np.linalg.solve(arm.A, arm.B)
        self._retired_BAB += arm.B.T @ AinvB
        self._retired_BAb += AinvB.T @ arm.b
        self.retired.add(action_id)
        if self._cache is not None:
            # A0, beta and the other actions' posteriors are unchanged: drop this action's rows.
            keep = self._cache["ids"] != action_id
            for key in _PER_ACTION_KEYS:
                if key in self._cache:
                    self._cache[key] = self._cache[key][keep]

    def _cache_add(self, action_id: int) -> None:
        """Extend a computed posterior by one action with no data, in ``O(k^2 d)``.

        A fresh action leaves ``A0`` and ``beta`` unchanged; its own posterior is the prior,
        ``theta_a = 0``, so its mean is the shared part ``phi_a^T Beta x`` alone.
        """
        post = self._cache
        if post is None:
            return
        arm = self.arms[action_id]
        eye = np.eye(self.d)
        new = {
            "ids": np.array([action_id]), "Ainv": (eye / self.lam_action)[None], "AinvB": np.zeros((1, self.d, self.k)),
            "theta": np.zeros((1, self.d, self.m)), "phi": arm.features[None], "costs": np.array([arm.cost]),
            "psi": (arm.features @ (post["beta"] @ self.weights).reshape(self.p, self.d))[None],
            "b_w": np.zeros((1, self.d)),
        }
        if "M" in post:
            G = np.kron(arm.features[:, None], eye)  # z = G x
            new["M"] = (G.T @ post["A0inv"] @ G + eye / self.lam_action)[None]
        if "La" in post:
            new["La"] = (eye / np.sqrt(self.lam_action))[None]
        if "theta_base" in post:
            new["theta_base"] = np.zeros((1, self.d))
        for key, value in new.items():
            post[key] = np.concatenate([post[key], value])

    @property
    def active_actions(self) -> np.ndarray:
        """Ids of the actions the learner may recommend, sorted (score columns follow the ids
        :meth:`scores` returns, which need not be sorted)."""
        return np.array(sorted(self.arms), dtype=int)

    # -- input checks -----------------------------------------------------------------------

    def _check_contexts(self, contexts: np.ndarray) -> np.ndarray:
        x = np.asarray(contexts, dtype=float)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.d:
            raise SchemaError(f"contexts must have {self.d} columns (context_width), got shape {np.shape(contexts)}")
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if bad.size:
            raise SchemaError(f"context row {int(bad[0])} has a NaN or infinite value")
        return x

    def _check_rewards(self, rewards: np.ndarray, n: int) -> np.ndarray:
        r = np.asarray(rewards, dtype=float)
        if r.ndim == 1 and self.m == 1:
            r = r[:, None]
        if r.shape != (n, self.m):
            raise SchemaError(f"rewards must have shape ({n}, {self.m}) for objectives {self.objectives}, got {r.shape}")
        bad = np.flatnonzero(~np.isfinite(r).all(axis=1))
        if bad.size:
            raise SchemaError(f"reward row {int(bad[0])} has a NaN or infinite value")
        return r

    def _check_actions(self, actions: np.ndarray, n: int) -> np.ndarray:
        a = np.asarray(actions)
        if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
            raise SchemaError(f"actions must be {n} integer ids, got shape {a.shape} dtype {a.dtype}")
        unknown = np.setdiff1d(np.unique(a), self.active_actions)
        if unknown.size:
            row = int(np.flatnonzero(a == unknown[0])[0])
            what = "retired" if int(unknown[0]) in self.retired else "unknown to the learner (never added)"
            raise SchemaError(f"action {int(unknown[0])} at row {row} is {what}; active: {self.active_actions.tolist()}")
        return a

    # -- learning ---------------------------------------------------------------------------

    def update(self, contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Add a batch of observed ``(x, a, r)``; identical to adding them one at a time."""
        x = self._check_contexts(contexts)
        a = self._check_actions(actions, x.shape[0])
        r = self._check_rewards(rewards, x.shape[0])
        for action_id in np.unique(a):
            rows = a == action_id
            arm = self.arms[int(action_id)]
            xa, ra = x[rows], r[rows]
            za = np.kron(arm.features[None, :], xa)  # rows of z_{x,a} = kron(phi_a, x)
            arm.A += xa.T @ xa
            arm.B += xa.T @ za
            arm.b += xa.T @ ra
            arm.n += int(rows.sum())
            self.ZZ += za.T @ za
            self.Zr += za.T @ ra
        self._cache = None

    def warm_start(self, contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                   propensities: np.ndarray) -> None:
        """Learn from logged decisions before going online.

        Ridge regression on logged data needs no importance weights when the model is right;
        the propensities are checked anyway, because logs with zero or missing propensities are
        logs whose policy nobody knows, and an action unseen by the learner means the catalog
        and the logs disagree. Both are errors, not something to skip silently.
        """
        x = self._check_contexts(contexts)
        props = np.asarray(propensities, dtype=float)
        if props.shape != (x.shape[0],):
            raise SchemaError(f"propensities has shape {props.shape}, expected ({x.shape[0]},)")
        bad = np.flatnonzero(~np.isfinite(props) | (props <= 0) | (props > 1))
        if bad.size:
            raise SchemaError(f"propensity at row {int(bad[0])} is {props[bad[0]]!r}; logged propensities must be in (0, 1]")
        self.update(x, actions, rewards)

    def _posterior(self) -> dict[str, np.ndarray]:
        """Posterior means and the matrices scoring needs, recomputed after each change."""
        if self._cache is not None:
            return self._cache
        ids = self.active_actions
        K = ids.shape[0]
        if K == 0:
            raise ConfigError("no active action: add one before deciding")
        A = np.stack([self.arms[i].A for i in ids])  # (K, d, d)
        B = np.stack([self.arms[i].B for i in ids])  # (K, d, k)
        b = np.stack([self.arms[i].b for i in ids])  # (K, d, m)
        Ainv = np.linalg.inv(A)
        AinvB = Ainv @ B  # (K, d, k)
        # Sums over actions and rows as one BLAS product each: (K d, k)^T (K d, k).
        K_d = K * self.d
        A0 = self.ZZ - B.reshape(K_d, self.k).T @ AinvB.reshape(K_d, self.k) - self._retired_BAB
        b0 = self.Zr - AinvB.reshape(K_d, self.k).T @ b.reshape(K_d, self.m) - self._retired_BAb
        A0inv = np.linalg.inv(A0)
        beta = A0inv @ b0  # (k, m)
        theta = Ainv @ b - AinvB @ beta[None, :, :]  # (K, d, m): A^{-1}(b - B beta)
        w = self.weights
        phi = np.stack([self.arms[i].features for i in ids])  # (K, p)
        beta_w, theta_w = beta @ w, theta @ w  # combined objective
        # Effective linear coefficient of each action: mean(x, a) = x . psi_a
        psi = theta_w + np.einsum("ap,pd->ad", phi, beta_w.reshape(self.p, self.d))
        costs = np.array([self.arms[i].cost for i in ids])
        self._cache = dict(ids=ids, Ainv=Ainv, AinvB=AinvB, A0inv=A0inv, beta=beta, theta=theta, phi=phi,
                           psi=psi, costs=costs, b_w=b @ w)
        return self._cache

    @property
    def beta(self) -> np.ndarray:
        """Shared coefficients ``(k, m)``."""
        return self._posterior()["beta"].copy()

    def theta(self, action_id: int) -> np.ndarray:
        """Per-action coefficients ``(d, m)`` of an active action."""
        post = self._posterior()
        pos = np.flatnonzero(post["ids"] == int(action_id))
        if pos.size == 0:
            raise ConfigError(f"action {action_id} is not active")
        return post["theta"][pos[0]].copy()

    # -- deciding ---------------------------------------------------------------------------

    def _mask(self, ids: np.ndarray, available: np.ndarray | None) -> np.ndarray:
        if available is None:
            return np.ones(ids.shape[0], dtype=bool)
        avail = np.asarray(available, dtype=int)
        return np.isin(ids, avail)

    def expected_reward(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean of the weighted reward minus cost, ``(n, K_active)``, and the action ids."""
        return self._mean(self._check_contexts(contexts))

    def _mean(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        post = self._posterior()
        mean = x @ post["psi"].T
        mean -= self.cost_weight * post["costs"][None, :]
        return mean, post["ids"]

    def _extra(self, name: str) -> np.ndarray:
        """Matrices only some explorations need, computed once per posterior and cached."""
        post = self._posterior()
        if name not in post:
            if name == "M":
                # s(x, a) = x^T M_a x: with z = G_a x (G_a = kron(phi_a, I_d)) and
                # H_a = G_a - B_a^T A_a^{-1}, Li et al.'s four terms are x^T (H_a^T A0^{-1} H_a + A_a^{-1}) x.
                eye = np.eye(self.d)
                G = np.einsum("ap,de->apde", post["phi"], eye).reshape(post["phi"].shape[0], self.k, self.d)
                H = G - np.transpose(post["AinvB"], (0, 2, 1))
                post["M"] = np.transpose(H, (0, 2, 1)) @ (post["A0inv"] @ H) + post["Ainv"]
            elif name == "L0":
                post["L0"] = np.linalg.cholesky(post["A0inv"])
            elif name == "La":
                post["La"] = np.linalg.cholesky(post["Ainv"])
            elif name == "theta_base":
                post["theta_base"] = np.einsum("ade,ae->ad", post["Ainv"], post["b_w"])
        return post[name]

    def ucb_width(self, contexts: np.ndarray) -> np.ndarray:
        """``sqrt(s)``: the posterior standard deviation of ``z.beta + x.theta_a`` (unit noise).

        ``s = z^T A0^{-1} z - 2 z^T A0^{-1} B_a^T A_a^{-1} x + x^T A_a^{-1} x
        + x^T A_a^{-1} B_a A0^{-1} B_a^T A_a^{-1} x`` (Li et al. 2010, Algorithm 2), which is a
        quadratic form ``x^T M_a x`` with ``M_a`` cached per posterior: ``O(K d^2)`` per decision.
        """
        x = self._check_contexts(contexts)
        M = self._extra("M")
        K = M.shape[0]
        # x^T M_a x for all (n, a) as one matrix product, then a row-wise dot.
        xM = (x @ np.transpose(M, (1, 0, 2)).reshape(self.d, K * self.d)).reshape(x.shape[0], K, self.d)
        quad = np.einsum("nad,nd->na", xM, x)
        return np.sqrt(np.maximum(quad, 0.0))

    def scores(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The index the learner maximises, ``(n, K_active)``, and the action ids (columns)."""
        x = self._check_contexts(contexts)
        mean, ids = self._mean(x)
        if self.exploration == "greedy" or self.alpha == 0.0:
            return mean, ids
        scale = float(np.linalg.norm(self.weights)) or 1.0  # width of the weighted reward
        if self.exploration == "ucb":
            return mean + self.alpha * scale * self.ucb_width(x), ids
        costs = self.cost_weight * self._posterior()["costs"][None, :]
        if self.sample_per == "batch":
            return x @ self._sample_psi().T - costs, ids
        return self._thompson(x) - costs, ids

    def _sample_psi(self) -> np.ndarray:
        """One joint posterior draw of every action's effective coefficients ``(K, d)``.

        With ``sample_per="batch"`` all contexts of one call share it: scoring is then a single
        matrix product, the cheap way to serve Thompson sampling at scale.
        """
        post = self._posterior()
        K = post["ids"].shape[0]
        v = self.alpha * (float(np.linalg.norm(self.weights)) or 1.0)
        beta_s = post["beta"] @ self.weights + v * self._extra("L0") @ self.rng.standard_normal(self.k)
        theta_s = self._extra("theta_base") - post["AinvB"] @ beta_s
        theta_s += v * np.einsum("ade,ae->ad", self._extra("La"), self.rng.standard_normal((K, self.d)))
        return theta_s + post["phi"] @ beta_s.reshape(self.p, self.d)

    def _thompson(self, x: np.ndarray) -> np.ndarray:
        """One posterior draw of the weighted reward per context and action (per-decision TS).

        ``beta ~ N(beta_hat, v^2 A0^{-1})`` then ``theta_a | beta ~ N(A_a^{-1}(b_a - B_a beta), v^2 A_a^{-1})``:
        exact draws from the joint ridge posterior, which factorises this way.
        """
        post = self._posterior()
        n, K = x.shape[0], post["ids"].shape[0]
        v = self.alpha * (float(np.linalg.norm(self.weights)) or 1.0)
        beta_s = post["beta"] @ self.weights + v * self.rng.standard_normal((n, self.k)) @ self._extra("L0").T
        BB = (post["AinvB"].reshape(K * self.d, self.k) @ beta_s.T).T.reshape(n, K, self.d)
        mean_theta = self._extra("theta_base")[None] - BB
        eps = self.rng.standard_normal((n, K, self.d))
        theta_s = mean_theta + v * np.einsum("ade,nae->nad", self._extra("La"), eps, optimize=True)
        # shared part: phi_a^T Beta_s x with Beta_s = beta_s reshaped (p, d)
        Bx = np.einsum("npd,nd->np", beta_s.reshape(n, self.p, self.d), x)
        return Bx @ post["phi"].T + np.einsum("nad,nd->na", theta_s, x)

    def choose(self, contexts: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
        """The recommended action id for each context, among active (and ``available``) actions.

        Retired actions are never recommended: they are no longer in the model at all.
        """
        score, ids = self.scores(contexts)
        mask = self._mask(ids, available)
        if not mask.any():
            raise ConfigError(f"none of the available actions {available!r} is active in the learner")
        if not mask.all():
            score = np.where(mask[None, :], score, -np.inf)
        return ids[np.argmax(score, axis=1)]

    def greedy_probabilities(self, contexts: np.ndarray, all_ids: int, available: np.ndarray | None = None) -> np.ndarray:
        """The greedy (posterior-mean) policy as ``(n, all_ids)`` one-hot probabilities, for OPE."""
        mean, ids = self.expected_reward(contexts)
        mask = self._mask(ids, available)
        best = ids[np.argmax(np.where(mask[None, :], mean, -np.inf), axis=1)]
        probs = np.zeros((mean.shape[0], all_ids))
        probs[np.arange(mean.shape[0]), best] = 1.0
        return probs

    def memory_bytes(self) -> dict[str, int]:
        """Memory of the shared statistics and per action (the scaling a capacity plan needs)."""
        per_action = [arm.nbytes() for arm in self.arms.values()]
        shared = self.ZZ.nbytes + self.Zr.nbytes + self._retired_BAB.nbytes + self._retired_BAb.nbytes
        return {"shared": int(shared), "per_action": int(per_action[0]) if per_action else 0,
                "total": int(shared + sum(per_action))}


class IntentPolicySelector:
    """Route each user to a policy by predicted intent (Zhang & Xie, RecSys 2019, PV-MAB).

    An intent-propensity model (logistic regression on the context, fit on logged target
    events) scores each user; users whose propensity is at least ``threshold`` go to the
    ``high`` policy (e.g. one optimising the target event), the rest to the ``low`` policy
    (e.g. one optimising stage progression).
    """

    def __init__(self, policies: Mapping[str, HybridLinearBandit], threshold: float = 0.5, l2: float = 1.0):
        if set(policies) != {"high", "low"}:
            raise ConfigError(f"policies must be named 'high' and 'low', got {sorted(policies)}")
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold!r}")
        self.policies = dict(policies)
        self.threshold = float(threshold)
        self.l2 = float(l2)
        self.coef: np.ndarray | None = None

    def fit_intent(self, contexts: np.ndarray, target_events: np.ndarray, n_iter: int = 50) -> IntentPolicySelector:
        """Fit the intent-propensity model by Newton's method on the L2-penalised log-likelihood."""
        x = np.asarray(contexts, dtype=float)
        y = np.asarray(target_events, dtype=float)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise SchemaError(f"need contexts (n, d) and target_events (n,), got {x.shape} and {y.shape}")
        bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
        if bad.size:
            raise SchemaError(f"target_events must be 0/1; row {int(bad[0])} is {y[bad[0]]!r}")
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
            raise SchemaError(f"contexts must have {self.coef.shape[0]} columns, got shape {x.shape}")
        return 1.0 / (1.0 + np.exp(-(x @ self.coef)))

    def route(self, contexts: np.ndarray) -> np.ndarray:
        """Boolean mask: True where the user goes to the ``high``-intent policy."""
        return self.intent(contexts) >= self.threshold

    def choose(self, contexts: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
        """Each user's action from the policy their intent selects."""
        x = np.asarray(contexts, dtype=float)
        high = self.route(x)
        out = np.empty(x.shape[0], dtype=int)
        for name, rows in (("high", high), ("low", ~high)):
            if rows.any():
                out[rows] = self.policies[name].choose(x[rows], available)
        return out

    def update(self, contexts: np.ndarray, actions: np.ndarray, signals: np.ndarray) -> None:
        """Update every policy on every decision: each learns all objective signals and applies
        its own business weights, so the policies differ in what they optimise, not in data."""
        for policy in self.policies.values():
            policy.update(contexts, actions, signals)
