"""Tests of per-user business rules (pulse_lib.nba.rules) and their use in online runs."""

from __future__ import annotations

import numpy as np
import pytest

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.nba.experiments import make_learner, run_online
from pulse_lib.nba.rules import BusinessRules, ContactHistory
from pulse_lib.nba.simulator import (
    JourneySimulator,
    LoggingPolicy,
    ObjectiveWeights,
    default_catalog,
)


def test_contact_cap_resets_each_period() -> None:
    hist = ContactHistory(BusinessRules(n_ids=3, contact_cap=2, period=5), n_users=2)
    users = np.array([0])
    for t in (0, 1):
        assert hist.eligible(users, t).all()
        hist.record(users, np.array([1]), t)
    assert not hist.eligible(users, 4).any()  # capped for the rest of period 0
    assert hist.eligible(np.array([1]), 4).all()  # other users are unaffected
    assert hist.eligible(users, 5).all()  # period 1 starts afresh


def test_cooldown_and_exclusive_groups() -> None:
    hist = ContactHistory(BusinessRules(n_ids=4, cooldown=2, period=100, exclusive=[(0, 1)]), n_users=1)
    u = np.array([0])
    hist.record(u, np.array([0]), t=10)
    assert not hist.eligible(u, 11).any() and not hist.eligible(u, 12).any()
    mask = hist.eligible(u, 13)[0]
    assert mask.tolist() == [False, False, True, True]  # action 1 is exclusive with the received 0
    live = np.array([True, True, False, True])
    assert hist.eligible(u, 13, live)[0].tolist() == [False, False, False, True]


def test_rules_reject_bad_input() -> None:
    with pytest.raises(ConfigError, match="two exclusive groups"):
        BusinessRules(n_ids=4, exclusive=[(0, 1), (1, 2)])
    with pytest.raises(ConfigError, match="outside"):
        BusinessRules(n_ids=2, exclusive=[(0, 5)])
    hist = ContactHistory(BusinessRules(n_ids=3), n_users=2)
    with pytest.raises(SchemaError, match="user index 2"):
        hist.eligible(np.array([2]), 0)
    with pytest.raises(SchemaError, match="boolean mask"):
        hist.eligible(np.array([0]), 0, np.array([1, 0, 1]))


def test_logging_policy_propensities_respect_a_per_user_mask() -> None:
    catalog = default_catalog()
    policy = LoggingPolicy(catalog)
    x = JourneySimulator(catalog, n_users=50, seed=0).contexts()
    mask = np.random.default_rng(0).random((50, len(catalog))) < 0.4
    mask[:, 0] = True
    probs = policy.probabilities(x, mask)
    assert np.all(probs[~mask] == 0) and np.allclose(probs.sum(axis=1), 1.0)
    assert np.all(probs[mask] > 0)
    with pytest.raises(SchemaError, match="boolean mask"):
        policy.probabilities(x, mask.astype(int))
    mask[3] = False
    with pytest.raises(ConfigError, match="row 3"):
        policy.probabilities(x, mask)


@pytest.mark.parametrize("kind", ["logging", "learner"])
def test_online_run_obeys_the_rules(kind: str) -> None:
    catalog = default_catalog(new_action_round=10**6, retire_round=10**6 + 1)
    sim = JourneySimulator(catalog, n_users=60, seed=1)
    weights = ObjectiveWeights()
    rules = BusinessRules(n_ids=len(catalog), contact_cap=2, period=10, cooldown=1,
                          exclusive=[(catalog.index("promo_email"), catalog.index("sms_discount"))])
    policy = LoggingPolicy(catalog) if kind == "logging" else make_learner(sim, weights, "ts", 0.5)
    res = run_online(sim, policy, weights, n_rounds=30, batch=40, rng=np.random.default_rng(2), rules=rules)
    # 60 users, at most 2 contacts each per 10-round period: at most 120 sends per period
    per_period = res.action_counts.sum(axis=1).reshape(3, 10).sum(axis=1)
    assert per_period.max() <= 120
    assert res.contacted is not None and res.contacted.min() < 1.0
    assert np.all(res.oracle >= res.expected - 1e-12)
