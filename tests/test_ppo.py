"""PPO from scratch: the clipped loss, GAE, and a short training run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pulse_lib import ppo
from pulse_lib.budget_env import BatchedBudgetEnv, run_policy
from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.funnel import TRUE_PARAMS

OBS, ACT = 15, 5


def _batch(agent: ppo.Agent, n: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    obs = torch.rand((n, OBS), generator=gen)
    with torch.no_grad():
        u, logprob, _, value = agent.act(obs)
    returns = torch.randn(n, generator=gen)
    return {"obs": obs, "u": u, "logprob": logprob, "advantages": torch.randn(n, generator=gen),
            "returns": returns, "values": value}


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    agent = ppo.Agent(OBS, ACT)
    cfg = ppo.PPOConfig()
    batch = _batch(agent)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    first, _ = ppo.ppo_loss(agent, batch, cfg)
    for _ in range(30):
        loss, _ = ppo.ppo_loss(agent, batch, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last, _ = ppo.ppo_loss(agent, batch, cfg)
    assert last.item() < first.item() - 0.05


def test_clipped_samples_give_no_policy_gradient():
    """Ratio above 1 + clip with positive advantage (or below 1 - clip with negative): no gradient."""
    torch.manual_seed(1)
    agent = ppo.Agent(OBS, ACT)
    cfg = ppo.PPOConfig(clip_coef=0.2, vf_coef=0.0, ent_coef=0.0)
    batch = _batch(agent, n=64)
    # pretend the behaviour policy was much less (first half) or much more (second half) likely
    batch["logprob"] = batch["logprob"].clone()
    batch["logprob"][:32] -= 1.0  # ratio = e ~ 2.7 > 1.2
    batch["logprob"][32:] += 1.0  # ratio = 1/e ~ 0.37 < 0.8
    adv = torch.ones(64)
    adv[32:] = -1.0  # positive advantages for high ratios, negative for low: all clipped
    batch["advantages"] = adv
    loss, stats = ppo.ppo_loss(agent, batch, cfg)
    agent.zero_grad()
    loss.backward()
    grads = [p.grad for p in agent.actor_mean.parameters()] + [agent.actor_log_std.grad]
    assert stats["clip_fraction"] == 1.0
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    # control: inside the band the same batch does move the policy
    batch["logprob"] = agent.act(batch["obs"], batch["u"])[1].detach()
    loss, _ = ppo.ppo_loss(agent, batch, cfg)
    agent.zero_grad()
    loss.backward()
    assert torch.count_nonzero(agent.actor_log_std.grad) > 0


def test_gae_matches_a_hand_computed_example():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])
    adv, ret = ppo.gae(rewards, values, torch.zeros(1), dones, gamma=1.0, lam=1.0)
    # gamma = lambda = 1: advantage = return-to-go - value
    np.testing.assert_allclose(ret.squeeze().numpy(), [6.0, 5.0, 3.0])
    np.testing.assert_allclose(adv.squeeze().numpy(), [5.5, 4.0, 1.5])
    adv0, _ = ppo.gae(rewards, values, torch.zeros(1), dones, gamma=1.0, lam=0.0)
    np.testing.assert_allclose(adv0.squeeze().numpy(), [1 + 1.0 - 0.5, 2 + 1.5 - 1.0, 3 - 1.5])
    with pytest.raises(SchemaError):
        ppo.gae(rewards, values[:2], torch.zeros(1), dones, 1.0, 1.0)


def test_squash_gives_valid_environment_actions():
    u = torch.randn(100, ACT) * 10
    a = ppo.squash(u)
    assert torch.all((a >= 0) & (a <= 1))
    torch.testing.assert_close(a[:, 1:].sum(-1), torch.ones(100))


def test_config_and_env_mismatch_are_errors():
    with pytest.raises(ConfigError):
        ppo.PPOConfig(clip_coef=1.5)
    with pytest.raises(ConfigError, match="n_envs"):
        ppo.train(BatchedBudgetEnv(TRUE_PARAMS, 4), ppo.PPOConfig(n_envs=8, total_steps=100))


def test_short_training_improves_on_the_initial_policy():
    env = BatchedBudgetEnv(TRUE_PARAMS, 32)
    cfg = ppo.PPOConfig(total_steps=32 * 30 * 40, n_envs=32, learning_rate=1e-3, seed=0, pace_prior=False,
                        init_log_std=-0.5)
    result = ppo.train(env, cfg)
    returns = [h["mean_return"] for h in result.history]
    assert len(returns) == 40
    assert np.mean(returns[-5:]) > np.mean(returns[:5]) + 20
    evaluation = run_policy(BatchedBudgetEnv(TRUE_PARAMS, 64), ppo.agent_policy(result.agent), seed=9)
    assert np.all(evaluation["spend"] <= evaluation["budget"] * (1 + 1e-9))


def test_ppo_benchmark_quick_mode_writes_valid_json(tmp_path, repo_root):
    out = tmp_path / "budget_ppo_walltime.json"
    subprocess.run(
        [sys.executable, str(repo_root / "benchmarks" / "budget_ppo_walltime.py"), "--quick", "--out", str(out)],
        check=True, capture_output=True, timeout=180,
    )
    result = json.loads(out.read_text())
    assert {"machine", "runs", "curves", "target_return", "reference_return"} <= set(result)
    assert {"seconds_to_target", "total_seconds"} <= set(result["runs"]["seed_0"])
    assert len(result["curves"]["seed_0"]["mean_return"]) == len(result["curves"]["seed_0"]["wall_seconds"]) > 0


def test_pace_prior_centres_the_fraction_on_the_even_pace():
    env = BatchedBudgetEnv(TRUE_PARAMS, 3)
    obs = torch.as_tensor(env.reset(seed=0))
    horizon = env.config.horizon_days
    np.testing.assert_allclose(ppo.squash(torch.zeros(3, ACT), obs, horizon)[:, 0].numpy(), 1 / horizon, rtol=1e-5)
    for _ in range(horizon - 1):
        obs, *_ = env.step(np.full((3, ACT), 0.2))
    last = ppo.squash(torch.zeros(3, ACT), torch.as_tensor(obs), horizon)
    assert torch.all(last[:, 0] > 0.999)  # one day left: spend (almost) all of it
    with pytest.raises(ConfigError, match="observation"):
        ppo.squash(torch.zeros(3, ACT), None, horizon)
