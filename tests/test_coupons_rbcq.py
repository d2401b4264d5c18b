"""R-BCQ and REME: the BCQ filter, the REM mixture, λ-conditioning, and learning on a fixed batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pulse_lib.coupons.dataset import (
    CouponDataset,
    LambdaSampler,
    data_horizon,
    lambda_grid,
)
from pulse_lib.coupons.rbcq import (
    RBCQ,
    RBCQConfig,
    eligible_mask,
    mix,
    random_convex_weights,
    to_tensors,
)
from pulse_lib.coupons.reme import REME, REMEConfig, initial_states
from pulse_lib.coupons.simulator import CouponSimConfig, logging_policy, simulate
from pulse_lib.errors import ConfigError, SchemaError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset() -> CouponDataset:
    eps = simulate(CouponSimConfig(n_users=100), rng=np.random.default_rng(0), stochastic_policy=logging_policy())
    return CouponDataset.from_episodes(eps)


def test_bcq_filter_keeps_actions_above_the_relative_threshold() -> None:
    probs = torch.tensor([[0.5, 0.2, 0.1, 0.2], [0.25, 0.25, 0.25, 0.25]])
    mask = eligible_mask(torch.log(probs), 0.3)
    # relative to the max 0.5: 0.4, 0.2, 0.4 -> actions 0, 1, 3 pass; uniform rows pass entirely
    assert mask.tolist() == [[True, True, False, True], [True, True, True, True]]
    assert eligible_mask(torch.log(probs), 1.0).sum(dim=1).tolist() == [1, 4]
    assert eligible_mask(torch.log(probs), 0.0).all()


def test_greedy_action_never_leaves_the_eligible_set(dataset: CouponDataset) -> None:
    model = RBCQ(RBCQConfig(hidden=16, bcq_threshold=0.9), seed=1)
    batch = to_tensors(LambdaSampler(dataset, lambda_grid()).sample(128, np.random.default_rng(0)), "cpu")
    actions = model.greedy(batch["obs"], batch["lam"])
    mask = eligible_mask(model.behaviour_logits(batch["obs"], batch["lam"]), 0.9)
    assert mask[torch.arange(128), actions].all()


def test_rem_weights_lie_on_the_simplex_and_the_loss_uses_the_mixture(dataset: CouponDataset) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        alpha = random_convex_weights(10, gen)
        assert alpha.shape == (10,) and (alpha >= 0).all() and torch.isclose(alpha.sum(), torch.tensor(1.0))
    q = torch.randn(3, 4, 5)
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(mix(q, alpha), (q * alpha.view(1, 4, 1)).sum(dim=1), rtol=1e-6)
    # the TD loss changes with α, and with a one-hot α it is the loss of that head alone
    model = RBCQ(RBCQConfig(hidden=16, n_heads=3, horizon=30), seed=0)
    b = to_tensors(LambdaSampler(dataset, lambda_grid()).sample(64, np.random.default_rng(1)), "cpu")
    losses = [model.losses(b, torch.eye(3)[k])[0].item() for k in range(3)]
    assert len(set(np.round(losses, 8))) == 3
    mixed = model.losses(b, torch.tensor([0.2, 0.3, 0.5]))[0].item()
    assert mixed not in losses


def test_lambda_is_an_input_and_enters_the_reward(dataset: CouponDataset) -> None:
    model = RBCQ(RBCQConfig(hidden=16, n_heads=2, horizon=30), seed=0)
    b = to_tensors(LambdaSampler(dataset, np.array([0.0], dtype=np.float32)).sample(64, np.random.default_rng(2)), "cpu")
    q0 = model.q(b["obs"], torch.zeros(64))
    q1 = model.q(b["obs"], torch.ones(64))
    assert not torch.allclose(q0, q1)
    alpha = torch.tensor([0.5, 0.5])
    loss_at_0 = model.losses(b, alpha)[0].item()
    b_high = dict(b, lam=torch.ones(64))
    assert model.losses(b_high, alpha)[0].item() != loss_at_0
    with pytest.raises(ConfigError, match="outside the trained range"):
        model.policy(1.5)
    with pytest.raises(ConfigError):
        model.policy(-0.1)
    with pytest.raises(SchemaError):
        model.policy(0.5)(np.zeros((3, 40), dtype=np.float32))


def test_loss_decreases_on_a_fixed_batch(dataset: CouponDataset) -> None:
    model = RBCQ(RBCQConfig(hidden=32, n_heads=4, lr=1e-3, target_update_every=10_000, horizon=30), seed=0)
    batch = LambdaSampler(dataset, lambda_grid()).sample(128, np.random.default_rng(3))
    first = model.update(batch)
    for _ in range(150):
        last = model.update(batch)
    assert last["td_loss"] < 0.5 * first["td_loss"]
    assert last["bc_loss"] < first["bc_loss"]


def test_reme_uses_the_evaluated_policys_action(dataset: CouponDataset) -> None:
    """Two constant policies (coupon 0 vs coupon 20) must get different cost estimates, ordered right."""
    sampler = LambdaSampler(dataset, np.array([0.0], dtype=np.float32))
    estimates = {}
    for a in (0, 20):
        policy = lambda obs, lam, a=a: torch.full((obs.shape[0],), a, dtype=torch.long)
        reme = REME(policy, REMEConfig(hidden=32, n_heads=2, lr=1e-3), seed=0)
        reme.fit(sampler, 300, np.random.default_rng(4))
        estimates[a] = reme.estimate(initial_states(dataset.observations), 0.0)
    assert estimates[20].cost > estimates[0].cost + 0.3
    with pytest.raises(SchemaError):
        reme.estimate(np.zeros((0, 44), dtype=np.float32), 0.0)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError):
        RBCQConfig(bcq_threshold=1.5)
    with pytest.raises(ConfigError):
        RBCQConfig(n_heads=0)
    with pytest.raises(ConfigError):
        REMEConfig(horizon=0)
    with pytest.raises(ConfigError):
        RBCQConfig(horizon=0)


def test_horizon_comes_from_the_data(dataset: CouponDataset) -> None:
    """REME and R-BCQ read H from the data; a config that contradicts it, or no H at all, is an error."""
    short = CouponDataset.from_episodes(simulate(CouponSimConfig(n_users=10, horizon=5), rng=np.random.default_rng(0),
                                                 stochastic_policy=logging_policy()))
    assert data_horizon(short) == 5 and data_horizon(dataset) == 30
    policy = lambda obs, lam: torch.zeros(obs.shape[0], dtype=torch.long)
    reme = REME(policy, REMEConfig(hidden=8, n_heads=2), seed=0)
    reme.fit(LambdaSampler(short, np.array([0.0], dtype=np.float32)), 2, np.random.default_rng(0))
    assert reme.horizon == 5
    learner = RBCQ(RBCQConfig(hidden=8, n_heads=2), seed=0)
    learner.fit(LambdaSampler(short, lambda_grid()), 2, np.random.default_rng(0))
    assert learner.horizon == 5
    with pytest.raises(ConfigError, match="horizon 30 but the data's episodes last 5"):
        REME(policy, REMEConfig(horizon=30), seed=0).fit(LambdaSampler(short, lambda_grid()), 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="horizon is unknown"):
        RBCQ(RBCQConfig(hidden=8), seed=0).update(LambdaSampler(short, lambda_grid()).sample(4, np.random.default_rng(0)))
    mixed = CouponDataset(short.observations, short.actions, short.rewards, short.costs,
                          short.next_observations.copy(), short.terminals)
    mixed.next_observations[4, 0] = 7  # one episode claims to end on day 7
    with pytest.raises(SchemaError, match="different days"):
        data_horizon(mixed)


def test_rbcq_target_is_undiscounted_per_remaining_day(dataset: CouponDataset) -> None:
    """The TD target equals (r - λc + (H - t - 1) f(s', a*)) / (H - t): no discount anywhere."""
    model = RBCQ(RBCQConfig(hidden=8, n_heads=1, bcq_threshold=0.0, horizon=30), seed=0)
    b = to_tensors(LambdaSampler(dataset, np.array([0.3], dtype=np.float32)).sample(32, np.random.default_rng(5)), "cpu")
    alpha = torch.ones(1)
    with torch.no_grad():
        for p in model.q_target.parameters():
            p.zero_()  # the next-state value is then 0: the target is the reward spread over the days left
        model.q_target.body[-1].bias.fill_(0.5)  # ... or 0.5 per day for every action
        day = torch.round(b["obs"][:, 0] * 30)
        remaining = 30 - day
        expected = (b["rewards"] - 0.3 * b["costs"] + (1 - b["terminals"]) * (remaining - 1) * 0.5) / remaining
        q = model.q(b["obs"], b["lam"]).squeeze(1).gather(1, b["actions"].unsqueeze(1)).squeeze(1)
        want = torch.nn.functional.huber_loss(q, expected)
    td, _ = model.losses(b, alpha)
    assert td.item() == pytest.approx(want.item(), rel=1e-5)
