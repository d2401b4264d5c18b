"""The coverage experiment's pieces: shared-footing learners, learning curves, Q-hat vs Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from pulse_lib.errors import ConfigError
from pulse_lib.pulserl import coverage as C
from pulse_lib.pulserl import data as D
from pulse_lib.pulserl import simulator as S

SMALL = S.SimulatorConfig(horizon=6)
TINY = C.SweepConfig(n_steps=40, n_checkpoints=2, hidden=(16,), qr_quantiles=4, gamma=SMALL.gamma)


@pytest.fixture(scope="module")
def narrow_log():
    return S.generate_logged_dataset(150, seed=4, config=SMALL, epsilon=0.05)


def test_every_learner_shares_one_configuration() -> None:
    configs = {name: TINY.cql_config(name) for name in ("DQN", "CQL", "QR-CQL")}
    assert configs["DQN"].alpha == 0.0 and configs["CQL"].alpha == TINY.alpha == configs["QR-CQL"].alpha
    assert configs["QR-CQL"].n_quantiles == 4 and configs["CQL"].n_quantiles == 1
    for config in configs.values():
        assert (config.hidden, config.learning_rate, config.gamma) == (TINY.hidden, TINY.learning_rate, TINY.gamma)
    with pytest.raises(ConfigError, match="value-based"):
        TINY.cql_config("BC")
    with pytest.raises(ConfigError, match="unknown learner"):
        C.train_learner("SAC", None, TINY, 0)  # type: ignore[arg-type]


def test_learners_record_curves_and_act(narrow_log) -> None:
    sim = S.PulseSimulator(SMALL)
    calls = []

    def evaluate(policy):
        calls.append(1)
        return sim.evaluate(policy, 200, seed=1).mean

    obs = D.observations(narrow_log)
    for name in C.LEARNER_NAMES:
        trained = C.train_learner(name, narrow_log, TINY, seed=0, evaluate=evaluate)
        assert [s for s, _ in trained.curve] == [20, 40]
        p = trained.policy(obs[:10])
        assert p.shape == (10,) and set(np.unique(p)) <= {0.0, 1.0}
    assert len(calls) == 2 * len(C.LEARNER_NAMES)
    with pytest.raises(ConfigError, match="no Q-values"):
        C.train_learner("BC", narrow_log, TINY, 0).q_values(obs[:2])


def test_bc_copies_the_logged_rule(narrow_log) -> None:
    bc = C.train_learner("BC", narrow_log, C.SweepConfig(n_steps=300, n_checkpoints=1, hidden=(32,)), seed=0)
    obs = D.observations(narrow_log)
    agreement = (bc.policy(obs) == S.marketer_rule(obs)).mean()
    assert agreement > 0.9


def test_rare_action_gap_compares_with_monte_carlo(narrow_log) -> None:
    sim = S.PulseSimulator(SMALL)
    dqn = C.train_learner("DQN", narrow_log, TINY, seed=0)
    gap = C.rare_action_gap(dqn, sim, S.logging_policy(0.05), n_users=300, seed=2)
    assert {"rare", "common"} <= set(gap["support"]) and set(gap["action"]) == {"send", "no send"}
    np.testing.assert_allclose(gap["gap"], gap["q_hat"] - gap["mc"])
    assert (gap["n"] > 0).all() and gap.groupby("action")["n"].sum().eq(300).all()
