"""Off-policy evaluation on PulseRL tables: softening, weights, IS family, DM and FQE."""

from __future__ import annotations

import numpy as np
import pytest

from pulse_lib.errors import ConfigError
from pulse_lib.pulserl import evaluation as E
from pulse_lib.pulserl import simulator as S

SMALL = S.SimulatorConfig(horizon=5)


@pytest.fixture(scope="module")
def uniform_log():
    return S.generate_logged_dataset(300, seed=11, logging_policy="uniform", config=SMALL)


def test_soften_mixes_with_uniform() -> None:
    obs = np.zeros((3, 63), np.float32)
    np.testing.assert_allclose(E.soften(S.always_send, 0.2)(obs), 0.9)
    np.testing.assert_allclose(E.soften(S.never_send, 0.2)(obs), 0.1)
    with pytest.raises(ConfigError, match="epsilon"):
        E.soften(S.never_send, 1.5)


def test_on_policy_importance_sampling_is_the_plain_mean_return(uniform_log) -> None:
    estimates = E.importance_sampling_estimates(uniform_log, S.uniform_policy, SMALL.gamma)
    discounted = uniform_log["reward"] * SMALL.gamma ** uniform_log["t"]
    mean_return = discounted.groupby(uniform_log["eps_id"]).sum().mean()
    for name, est in estimates.items():
        assert est.value == pytest.approx(mean_return), name
    assert E.effective_sample_size(E.trajectory_weights(uniform_log, S.uniform_policy)) == pytest.approx(300)


def test_effective_sample_size_edge_cases() -> None:
    assert E.effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert E.effective_sample_size(np.array([0.0, 0.0, 5.0])) == pytest.approx(1)
    assert E.effective_sample_size(np.zeros(3)) == 0.0


def test_estimators_land_near_the_truth_on_a_short_horizon(uniform_log) -> None:
    sim = S.PulseSimulator(SMALL)
    target = E.soften(S.never_send, 0.3)
    truth = sim.evaluate(target, 20_000, seed=3)
    estimates = E.importance_sampling_estimates(uniform_log, target, SMALL.gamma)
    for name in ("PDIS", "WPDIS"):
        lo, hi = estimates[name].ci(0.99)
        assert lo - 0.05 < truth.mean < hi + 0.05, (name, estimates[name].value, truth.mean)
    model = E.RewardModel(max_iter=50).fit(uniform_log)
    dm = E.direct_method(uniform_log, target, model, SMALL.gamma)
    assert dm.terms.shape == (300,) and np.isfinite(dm.value)
    fqe = E.fitted_q_evaluation(uniform_log, target, SMALL.gamma, n_steps=300, seed=0)
    assert fqe.terms.shape == (300,) and np.isfinite(fqe.value)
    assert abs(fqe.value - truth.mean) < 0.5
