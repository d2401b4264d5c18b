"""TorchCQL's optimised update equals the plain three-forward-pass update with the pairwise loss."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.pulserl import agents as A


def plain_update(agent: A.TorchCQL, obs, act, rew, next_obs, done) -> dict[str, float]:
    """The textbook step: full network outputs three times, the pairwise quantile loss."""
    c = agent.config
    rows = torch.arange(obs.shape[0])
    quantiles = agent.net(obs)
    taken = quantiles[rows, act]
    with torch.no_grad():
        next_action = agent.net(next_obs).mean(dim=2).argmax(dim=1)
        next_q = agent.target(next_obs)[rows, next_action]
        target = rew.unsqueeze(1) + c.gamma * (1.0 - done.unsqueeze(1)) * next_q
    td_loss = A.quantile_huber_loss_pairwise(taken, target, c.huber_kappa)
    q_mean = quantiles.mean(dim=2)
    conservative = (torch.logsumexp(q_mean, dim=1) - q_mean[rows, act]).mean()
    loss = td_loss + c.alpha * conservative
    agent.optim.zero_grad(set_to_none=True)
    loss.backward()
    agent.optim.step()
    return {"loss": loss.item(), "td_loss": td_loss.item(), "conservative_loss": conservative.item()}


def _batch(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 63, generator=g), torch.randint(0, 2, (n,), generator=g), torch.randn(n, generator=g),
            torch.randn(n, 63, generator=g), (torch.rand(n, generator=g) < 0.2).float())


@pytest.mark.parametrize("n_quantiles", [1, 5, 200])
def test_fast_step_equals_plain_step(n_quantiles: int) -> None:
    config = A.CQLConfig(n_quantiles=n_quantiles, hidden=(64, 32), learning_rate=1e-3, gamma=0.99)
    fast = A.TorchCQL(config, seed=0)
    # make the target differ from the online net so that the double-DQN choice matters
    with torch.no_grad():
        for p in fast.target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    plain = copy.deepcopy(fast)
    for step in range(3):
        batch = _batch(48, seed=step)
        got, want = fast.update(*batch), plain_update(plain, *batch)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (step, key)
    for p_fast, p_plain in zip(fast.net.parameters(), plain.net.parameters()):
        torch.testing.assert_close(p_fast, p_plain, rtol=1e-4, atol=1e-6)


def test_one_action_batches_and_target_copies() -> None:
    agent = A.TorchCQL(A.CQLConfig(n_quantiles=3, hidden=(16,), target_update_interval=2), seed=0)
    obs, act, rew, next_obs, done = _batch(20, seed=1)
    for a in (0, 1):  # every row the same logged action: one group is empty
        out = agent.update(obs, torch.full_like(act, a), rew, next_obs, done)
        assert np.isfinite(out["loss"])
    assert agent.steps == 2
    for p_online, p_target in zip(agent.net.parameters(), agent.target.parameters()):
        torch.testing.assert_close(p_online, p_target)


def test_action_quantiles_rejects_counts_that_do_not_split_the_batch() -> None:
    net = A.QuantileQNetwork(n_quantiles=4, hidden=(8,))
    with pytest.raises(SchemaError, match="counts"):
        net.action_quantiles(torch.zeros(5, 8), [2, 2])


@pytest.mark.parametrize("n_quantiles", [1, 9])
def test_scoring_equals_the_network_mean(n_quantiles: int) -> None:
    agent = A.TorchCQL(A.CQLConfig(n_quantiles=n_quantiles, hidden=(32, 16)), seed=0)
    obs = np.random.default_rng(0).normal(size=(5_001, 63)).astype(np.float32)
    want = agent.net(torch.from_numpy(obs)).mean(dim=2).detach().numpy()
    for chunk in (None, 1, 777, 10_000):
        np.testing.assert_allclose(agent.q_values(obs, batch=chunk), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(agent.policy(obs), (want[:, 1] > want[:, 0]).astype(float))
    assert agent.q_values(obs[:0]).shape == (0, 2)
    with pytest.raises(ConfigError, match="batch"):
        agent.q_values(obs, batch=0)
    with pytest.raises(SchemaError, match="obs must have shape"):
        agent.q_values(obs[:, :5])

