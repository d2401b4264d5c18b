"""Tests of the Vowpal Wabbit adapter (pulse_lib.nba.vw)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vowpalwabbit")

from pulse_lib.errors import ConfigError
from pulse_lib.nba.vw import VWContextualBandit


def _vw() -> VWContextualBandit:
    vw = VWContextualBandit(3, weights=[1.0], seed=0)
    for a in range(3):
        vw.add_action(a, np.eye(2)[a % 2])
    return vw


def test_vw_learns_the_best_action_and_respects_masks() -> None:
    vw = _vw()
    rng = np.random.default_rng(0)
    for _ in range(600):
        x = np.r_[1.0, rng.standard_normal(2)]
        a = vw.choose(x)
        vw.update(x, a, np.array([[float(a[0] == 2)]]))
    xq = np.column_stack([np.ones(50), rng.standard_normal((50, 2))])
    scores, ids = vw.greedy_scores(xq)
    assert np.mean(ids[np.argmax(scores, axis=1)] == 2) > 0.9
    mask = np.ones((50, 3), dtype=bool)
    mask[:, 2] = False
    assert 2 not in set(vw.choose(xq, mask).tolist())
    vw.finish()


def test_vw_update_needs_the_propensities_of_its_own_choice() -> None:
    vw = _vw()
    with pytest.raises(ConfigError, match="update must follow choose"):
        vw.update(np.ones((1, 3)), np.array([0]), np.array([[1.0]]))
    vw.retire_action(1)
    with pytest.raises(ConfigError, match="no eligible"):
        vw.choose(np.ones((1, 3)), np.array([1]))
    vw.finish()
