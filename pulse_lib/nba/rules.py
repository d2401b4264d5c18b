"""Business rules a marketing team states, turned into per-user eligibility masks.

A next-best-action engine never chooses among all actions: a user may be contacted at
most ``contact_cap`` times per period, not again within ``cooldown`` rounds of the last
message, and never gets two actions of a mutually exclusive group (say, two competing
discounts) in the same period. :class:`ContactHistory` keeps, per user, what the rules
need and returns an ``(n_users, n_ids)`` boolean mask (column ``j`` is action id ``j``)
that the learner (:meth:`pulse_lib.nba.hybrid.HybridLinearBandit.choose`) and the
logging policy (:meth:`pulse_lib.nba.simulator.LoggingPolicy.probabilities`) accept
directly; the logged propensities are then those of the masked policy, as off-policy
evaluation needs.

A user with no eligible action is not contacted this round:
:meth:`ContactHistory.eligible` says which, and the learner refuses a row with nothing
eligible rather than guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pulse_lib.errors import ConfigError, SchemaError

__all__ = ["BusinessRules", "ContactHistory"]


@dataclass(frozen=True)
class BusinessRules:
    """Contact rules, per user."""

    n_ids: int  # number of action ids (catalog size): the width of every mask
    # at most this many messages per user per period (None: no cap)
    contact_cap: int | None = None
    # length of a period in rounds (periods are [0, period), [period, 2 period), ...)
    period: int = 7
    cooldown: int = 0  # after a message, no other message for this many rounds
    # groups: at most one per period
    exclusive: Sequence[Sequence[int]] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.n_ids < 1:
            raise ConfigError(f"n_ids must be >= 1, got {self.n_ids}")
        if self.contact_cap is not None and self.contact_cap < 1:
            raise ConfigError(
                f"contact_cap must be >= 1 or None, got {self.contact_cap!r}"
            )
        if self.period < 1 or self.cooldown < 0:
            raise ConfigError(
                f"need period >= 1 and cooldown >= 0, got {self.period}, "
                f"{self.cooldown}"
            )
        seen: set[int] = set()
        for g, group in enumerate(self.exclusive):
            ids = [int(i) for i in group]
            if len(ids) < 2:
                raise ConfigError(
                    f"exclusive group {g} needs at least two action ids, "
                    f"got {list(group)}"
                )
            bad = [i for i in ids if not 0 <= i < self.n_ids]
            if bad:
                raise ConfigError(
                    f"exclusive group {g}: action id {bad[0]} outside "
                    f"0..{self.n_ids - 1}"
                )
            if seen & set(ids):
                raise ConfigError(
                    f"action id {min(seen & set(ids))} is in two exclusive groups"
                )
            seen |= set(ids)


class ContactHistory:
    """What each of ``n_users`` users has received, as far as the rules need it."""

    def __init__(self, rules: BusinessRules, n_users: int):
        if n_users < 1:
            raise ConfigError(f"n_users must be >= 1, got {n_users}")
        self.rules = rules
        self.n_users = int(n_users)
        self.last_contact = np.full(
            self.n_users, np.iinfo(np.int64).min // 2, dtype=np.int64
        )
        # period the counters refer to
        self.period_of_count = np.full(self.n_users, -1, dtype=np.int64)
        self.count = np.zeros(self.n_users, dtype=np.int64)  # messages in that period
        self.group_of = np.full(rules.n_ids, -1, dtype=np.int64)
        for g, group in enumerate(rules.exclusive):
            self.group_of[np.asarray(group, dtype=int)] = g
        self.got_group = np.zeros(
            (self.n_users, max(len(rules.exclusive), 1)), dtype=bool
        )

    def _users(self, users: np.ndarray) -> np.ndarray:
        u = np.asarray(users)
        if u.ndim != 1 or not np.issubdtype(u.dtype, np.integer):
            raise SchemaError(
                "users must be a 1-D array of integer user indices, got "
                f"shape {u.shape} dtype {u.dtype}"
            )
        if u.size and (u.min() < 0 or u.max() >= self.n_users):
            raise SchemaError(
                f"user index {int(u[(u < 0) | (u >= self.n_users)][0])} "
                f"outside 0..{self.n_users - 1}"
            )
        return u

    def eligible(
        self, users: np.ndarray, t: int, live: np.ndarray | None = None
    ) -> np.ndarray:
        """``(len(users), n_ids)`` boolean mask of the actions each user may get at
        round ``t``.

        ``live`` (a boolean ``(n_ids,)`` or ``(len(users), n_ids)`` mask, e.g. the
        catalog's live actions) is combined with the rules. Rows that are all ``False``
        are users who must not be contacted this round.
        """
        u = self._users(users)
        r = self.rules
        mask = np.ones((u.shape[0], r.n_ids), dtype=bool)
        if live is not None:
            lv = np.asarray(live)
            if (
                lv.dtype != bool
                or lv.shape[-1] != r.n_ids
                or lv.ndim not in (1, 2)
                or (lv.ndim == 2 and lv.shape[0] != u.shape[0])
            ):
                raise SchemaError(
                    f"live must be a boolean mask of shape ({r.n_ids},) "
                    f"or ({u.shape[0]}, {r.n_ids}), "
                    f"got {lv.shape} dtype {lv.dtype}"
                )
            mask &= lv
        same_period = self.period_of_count[u] == t // r.period
        if r.contact_cap is not None:
            capped = same_period & (self.count[u] >= r.contact_cap)
            mask[capped] = False
        if r.cooldown > 0:
            mask[t - self.last_contact[u] <= r.cooldown] = False
        if r.exclusive:
            taken = self.got_group[u] & same_period[:, None]  # (n, groups)
            in_group = self.group_of >= 0
            blocked = np.zeros_like(mask)
            blocked[:, in_group] = taken[:, self.group_of[in_group]]
            mask &= ~blocked
        return mask

    def record(self, users: np.ndarray, actions: np.ndarray, t: int) -> None:
        """Note that ``users[i]`` received ``actions[i]`` at round ``t``."""
        u = self._users(users)
        a = np.asarray(actions)
        if a.shape != u.shape or not np.issubdtype(a.dtype, np.integer):
            raise SchemaError(
                "actions must be integer ids with the shape of users "
                f"{u.shape}, got {a.shape} {a.dtype}"
            )
        if a.size and (a.min() < 0 or a.max() >= self.rules.n_ids):
            raise SchemaError(
                "action id "
                f"{int(a[(a < 0) | (a >= self.rules.n_ids)][0])} "
                f"outside 0..{self.rules.n_ids - 1}"
            )
        period = t // self.rules.period
        stale = self.period_of_count[u] != period
        self.count[u[stale]] = 0
        self.got_group[u[stale]] = False
        self.period_of_count[u] = period
        np.add.at(self.count, u, 1)
        self.last_contact[u] = t
        g = self.group_of[a]
        self.got_group[u[g >= 0], g[g >= 0]] = True
