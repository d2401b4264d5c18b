"""The ONNX Runtime scorer equals the PyTorch scorer, and rejects bad input clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pulse_lib.errors import ConfigError, DataFormatError, PathError, SchemaError
from pulse_lib.pulserl import agents as A
from pulse_lib.pulserl import onnx_scoring as O


def _network(n_quantiles: int, hidden: tuple[int, ...], seed: int = 0):
    torch.manual_seed(seed)
    net = A.QuantileQNetwork(n_quantiles=n_quantiles, hidden=hidden)
    with torch.no_grad():  # non-zero biases so a dropped bias would show
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize(
    "n_quantiles, hidden", [(1, (64, 64)), (200, (256, 256)), (32, (16,)), (4, (8, 8, 8))]
)
@pytest.mark.parametrize("n_rows", [1, 511, 512, 513, 2_000])
def test_onnx_scores_equal_torch_scores(n_quantiles, hidden, n_rows):
    net = _network(n_quantiles, hidden)
    obs = np.random.default_rng(1).normal(size=(n_rows, A.N_FEATURES)).astype(np.float32)
    expected = A.score_mean_q(net, obs)
    scored = O.OnnxScorer(net).q_values(obs)
    assert scored.shape == (n_rows, 2) and scored.dtype == np.float32
    np.testing.assert_allclose(scored, expected, rtol=1e-5, atol=1e-5)
    # the same greedy decisions wherever the two actions are not within rounding
    clear = np.abs(expected[:, 1] - expected[:, 0]) > 1e-4
    torch_send = expected[:, 1] > expected[:, 0]
    onnx_send = O.OnnxScorer(net).policy(obs) == 1.0
    assert np.array_equal(torch_send[clear], onnx_send[clear])


def test_scores_follow_the_trained_agent():
    """After training, the exported model follows the new weights, not the old."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(256, A.N_FEATURES)).astype(np.float32)
    agent = A.TorchCQL(A.CQLConfig(hidden=(16, 16), n_quantiles=8), seed=0)
    before = O.OnnxScorer(agent.net).q_values(obs)
    agent.fit(obs, rng.integers(0, 2, 256), rng.normal(size=256), obs,
              np.zeros(256), n_steps=20)
    after = O.OnnxScorer(agent.net).q_values(obs)
    np.testing.assert_allclose(after, agent.q_values(obs), rtol=1e-5, atol=1e-5)
    assert not np.allclose(before, after)


def test_save_and_load_round_trip(tmp_path):
    net = _network(8, (32, 32))
    obs = np.random.default_rng(2).normal(size=(100, A.N_FEATURES)).astype(np.float32)
    path = O.OnnxScorer(net).save(tmp_path / "policy.onnx")
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    np.testing.assert_array_equal(
        O.OnnxScorer.load(path).q_values(obs), O.OnnxScorer(net).q_values(obs)
    )


def test_bad_input_is_named():
    scorer = O.OnnxScorer(_network(1, (8,)))
    with pytest.raises(SchemaError, match=r"shape \(n, 63\)"):
        scorer.q_values(np.zeros((4, 62), np.float32))
    with pytest.raises(SchemaError, match=r"shape \(n, 63\)"):
        scorer.q_values(np.zeros(63, np.float32))
    bad = np.zeros((5, 63), np.float32)
    bad[3, 7] = np.nan
    with pytest.raises(SchemaError, match="non-finite values in 1 rows .*row 3"):
        scorer.q_values(bad)
    with pytest.raises(ConfigError, match="chunk"):
        O.OnnxScorer(_network(1, (8,)), chunk=0)
    with pytest.raises(ConfigError, match="threads"):
        O.OnnxScorer(_network(1, (8,)), threads=0)
    with pytest.raises(ConfigError, match="QuantileQNetwork"):
        O.network_to_onnx(torch.nn.Linear(63, 2))


def test_corrupt_or_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        O.OnnxScorer.load(tmp_path / "missing.onnx")
    with pytest.raises(PathError, match="directory"):
        O.OnnxScorer.load(tmp_path)
    good = O.OnnxScorer(_network(1, (8,))).model
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match="corrupt.onnx.*not a valid ONNX"):
        O.OnnxScorer.load(corrupt)
