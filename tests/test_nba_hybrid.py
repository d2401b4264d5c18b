"""Tests of the hybrid linear bandit and the intent-based policy selector (pulse_lib.nba.hybrid)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulse_lib.errors import ConfigError, SchemaError
from pulse_lib.nba.hybrid import HybridLinearBandit, IntentPolicySelector

D, P = 4, 3


def _bandit(n_actions: int = 3, exploration: str = "ucb", m: int = 1, lam: float = 1.0, lam_a: float = 1.0,
            seed: int = 0) -> HybridLinearBandit:
    b = HybridLinearBandit(D, P, objectives=tuple(f"o{i}" for i in range(m)), exploration=exploration,
                           alpha=1.0, prior_precision=lam, action_prior_precision=lam_a, seed=seed)
    feats = np.eye(P)
    for a in range(n_actions):
        b.add_action(a, feats[a % P], cost=0.0)
    return b


def _data(n: int, n_actions: int, m: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D))
    a = rng.integers(0, n_actions, size=n)
    r = rng.standard_normal((n, m))
    return x, a, r


def _joint_design(bandit: HybridLinearBandit, x: np.ndarray, a: np.ndarray, ids: list[int]) -> np.ndarray:
    """Rows [z_{x,a}, e_a (x) x]: the hybrid model as one big linear regression."""
    rows = []
    for xi, ai in zip(x, a):
        z = np.kron(bandit.arms[int(ai)].features, xi)
        per = np.zeros(len(ids) * D)
        j = ids.index(int(ai))
        per[j * D:(j + 1) * D] = xi
        rows.append(np.concatenate([z, per]))
    return np.array(rows)


def test_ridge_solution_equals_closed_form() -> None:
    bandit = _bandit(n_actions=3, m=2, lam=0.7, lam_a=3.0)
    x, a, r = _data(200, 3, m=2)
    bandit.update(x, a, r)
    F = _joint_design(bandit, x, a, [0, 1, 2])
    penalty = np.diag(np.r_[np.full(bandit.k, 0.7), np.full(3 * D, 3.0)])
    coef = np.linalg.solve(F.T @ F + penalty, F.T @ r)
    np.testing.assert_allclose(bandit.beta, coef[:bandit.k], atol=1e-8)
    for j in range(3):
        np.testing.assert_allclose(bandit.theta(j), coef[bandit.k + j * D: bandit.k + (j + 1) * D], atol=1e-8)


def test_ucb_width_equals_joint_posterior_quadratic_form() -> None:
    bandit = _bandit(n_actions=3)
    x, a, r = _data(150, 3, seed=1)
    bandit.update(x, a, r)
    F = _joint_design(bandit, x, a, [0, 1, 2])
    cov = np.linalg.inv(F.T @ F + np.eye(F.shape[1]))
    xq = np.random.default_rng(2).standard_normal((5, D))
    width = bandit.ucb_width(xq)
    for j in range(3):
        f = _joint_design(bandit, xq, np.full(5, j), [0, 1, 2])
        np.testing.assert_allclose(width[:, j], np.sqrt(np.einsum("ni,ij,nj->n", f, cov, f)), rtol=1e-8)


def test_batch_update_equals_one_at_a_time() -> None:
    x, a, r = _data(60, 3, seed=3)
    batch, single = _bandit(), _bandit()
    batch.update(x, a, r)
    for i in range(60):
        single.update(x[i:i + 1], a[i:i + 1], r[i:i + 1])
    np.testing.assert_allclose(batch.beta, single.beta, atol=1e-10)
    np.testing.assert_allclose(batch.theta(2), single.theta(2), atol=1e-10)


def test_weights_combine_objectives_without_retraining() -> None:
    x, a, r = _data(100, 3, m=2, seed=4)
    two = _bandit(m=2)
    two.update(x, a, r)
    two.set_weights([2.0, -0.5])
    one = _bandit(m=1)
    one.update(x, a, r @ np.array([2.0, -0.5]))
    xq = np.random.default_rng(5).standard_normal((7, D))
    np.testing.assert_allclose(two.expected_reward(xq)[0], one.expected_reward(xq)[0], atol=1e-10)


def test_cost_is_subtracted_with_its_weight() -> None:
    b = HybridLinearBandit(D, P, cost_weight=2.0, exploration="greedy")
    b.add_action(0, np.eye(P)[0], cost=0.0)
    b.add_action(1, np.eye(P)[0], cost=0.25)
    mean, _ids = b.expected_reward(np.ones((1, D)))
    assert mean[0, 0] - mean[0, 1] == pytest.approx(0.5)
    assert b.choose(np.ones((3, D))).tolist() == [0, 0, 0]


def test_thompson_draws_match_the_posterior() -> None:
    bandit = _bandit(exploration="ts")
    x, a, r = _data(80, 3, seed=6)
    bandit.update(x, a, r)
    xq = np.tile(np.random.default_rng(7).standard_normal(D), (4000, 1))
    draws = bandit._thompson(xq)
    mean, _ = bandit.expected_reward(xq[:1])
    width = bandit.ucb_width(xq[:1])
    np.testing.assert_allclose(draws.mean(axis=0), mean[0], atol=4 * width[0].max() / np.sqrt(4000))
    np.testing.assert_allclose(draws.std(axis=0), width[0], rtol=0.08)
    # one draw per batch: same distribution across batches, one value per batch
    bandit.sample_per = "batch"
    per_batch = np.array([bandit.scores(xq[:2])[0][0] for _ in range(3000)])
    np.testing.assert_allclose(per_batch.mean(axis=0), mean[0], atol=4 * width[0].max() / np.sqrt(3000))
    np.testing.assert_allclose(per_batch.std(axis=0), width[0], rtol=0.08)


def test_new_action_borrows_shared_knowledge() -> None:
    """A world that is exactly hybrid-linear with no per-action deviation: a new action's
    prediction, before any data of its own, comes from beta and is close to the truth."""
    rng = np.random.default_rng(8)
    beta_true = rng.standard_normal((P, D))
    bandit = HybridLinearBandit(D, P, exploration="greedy", prior_precision=1.0, action_prior_precision=50.0)
    feats = np.eye(P)
    for act in range(6):  # two actions of each kind
        bandit.add_action(act, feats[act % P])
    x = rng.standard_normal((3000, D))
    a = rng.integers(0, 6, 3000)
    r = np.einsum("np,pd,nd->n", feats[a % P], beta_true, x) + 0.1 * rng.standard_normal(3000)
    bandit.update(x, a, r)
    bandit.add_action(10, feats[1])  # same features as actions 1 and 4: a new offer of a known kind
    xq = rng.standard_normal((50, D))
    mean, ids = bandit.expected_reward(xq)
    new_pred = mean[:, list(ids).index(10)]
    truth = xq @ beta_true[1]
    assert np.max(np.abs(new_pred - truth)) < 0.1 * np.max(np.abs(truth))
    assert bandit.arms[10].n == 0


def test_retire_keeps_shared_estimate_and_drops_action() -> None:
    bandit = _bandit()
    x, a, r = _data(120, 3, seed=9)
    bandit.update(x, a, r)
    before = bandit.beta
    bandit.retire_action(1)
    np.testing.assert_allclose(bandit.beta, before, atol=1e-10)
    assert 1 not in bandit.arms and 1 not in bandit.active_actions
    assert 1 not in set(bandit.choose(np.random.default_rng(0).standard_normal((200, D))).tolist())
    with pytest.raises(ConfigError, match="retired"):
        bandit.add_action(1, np.eye(P)[0])
    with pytest.raises(SchemaError, match="retired"):
        bandit.update(x[:1], np.array([1]), r[:1])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "retire", "update", "choose"]), st.integers(0, 7)),
                min_size=1, max_size=25),
       st.sampled_from(["ucb", "ts", "greedy"]))
def test_retired_actions_are_never_recommended(ops: list[tuple[str, int]], exploration: str) -> None:
    bandit = HybridLinearBandit(D, P, exploration=exploration, seed=1)
    bandit.add_action(100, np.eye(P)[0])  # one action that stays, so a choice always exists
    rng = np.random.default_rng(0)
    for op, action in ops:
        if op == "add" and action not in bandit.arms and action not in bandit.retired:
            bandit.add_action(action, np.eye(P)[action % P])
        elif op == "retire" and action in bandit.arms:
            beta_before = bandit.beta
            bandit.retire_action(action)
            np.testing.assert_allclose(bandit.beta, beta_before, atol=1e-8)
        elif op == "update":
            ids = bandit.active_actions
            acts = rng.choice(ids, size=5)
            bandit.update(rng.standard_normal((5, D)), acts, rng.standard_normal(5))
        elif op == "choose":
            chosen = bandit.choose(rng.standard_normal((20, D)))
            assert set(chosen.tolist()) <= set(bandit.active_actions.tolist())
            assert not set(chosen.tolist()) & bandit.retired
    chosen = bandit.choose(rng.standard_normal((20, D)))
    assert not set(chosen.tolist()) & bandit.retired


def test_choose_respects_available_subset() -> None:
    bandit = _bandit(n_actions=3)
    chosen = bandit.choose(np.random.default_rng(1).standard_normal((50, D)), available=np.array([2]))
    assert set(chosen.tolist()) == {2}
    with pytest.raises(ConfigError, match="available"):
        bandit.choose(np.zeros((1, D)), available=np.array([42]))


def test_bad_input_raises_clear_errors() -> None:
    bandit = _bandit(n_actions=2)
    x, a, r = _data(10, 2)
    props = np.full(10, 0.5)
    with pytest.raises(SchemaError, match="action 5 at row 3 is unknown"):
        bad_a = a.copy()
        bad_a[3] = 5
        bandit.warm_start(x, bad_a, r, props)
    with pytest.raises(SchemaError, match="4 columns"):
        bandit.warm_start(x[:, :3], a, r, props)
    zero = props.copy()
    zero[2] = 0.0
    with pytest.raises(SchemaError, match="row 2"):
        bandit.warm_start(x, a, r, zero)
    missing = props.copy()
    missing[7] = np.nan
    with pytest.raises(SchemaError, match="row 7"):
        bandit.warm_start(x, a, r, missing)
    nan_x = x.copy()
    nan_x[4, 1] = np.nan
    with pytest.raises(SchemaError, match="row 4"):
        bandit.update(nan_x, a, r)
    with pytest.raises(SchemaError, match="shape"):
        bandit.update(x, a, np.zeros((10, 2)))
    with pytest.raises(SchemaError, match="4 columns"):
        bandit.choose(np.zeros((2, 5)))
    with pytest.raises(ConfigError, match="exploration"):
        HybridLinearBandit(D, P, exploration="softmax")
    with pytest.raises(ConfigError, match="weights"):
        bandit.set_weights([1.0, 2.0])
    with pytest.raises(ConfigError, match="no active action"):
        HybridLinearBandit(D, P).choose(np.zeros((1, D)))


def test_memory_per_action_is_reported() -> None:
    bandit = _bandit(n_actions=2)
    mem = bandit.memory_bytes()
    # A_a, A_a^{-1}, b_a, A_a^{-1} b_a, phi, cost; + the float32 copy of A_a^{-1} widths read
    per = (2 * D * D + 2 * D * 1 + P + 1) * 8 + 4 * D * D
    assert mem["per_action"] == per
    assert mem["total"] == mem["shared"] + 2 * per
    exact = HybridLinearBandit(D, P, width_dtype="float64")
    assert exact.memory_bytes()["per_action"] == per + 4 * D * D


def test_intent_selector_routes_by_predicted_intent() -> None:
    rng = np.random.default_rng(11)
    x = np.column_stack([np.ones(4000), rng.standard_normal(4000), rng.standard_normal((4000, D - 2))])
    y = (rng.random(4000) < 1 / (1 + np.exp(-(-0.5 + 2.0 * x[:, 1])))).astype(float)
    high = _bandit(n_actions=3, exploration="greedy", m=2)
    low = _bandit(n_actions=3, exploration="greedy", m=2)
    actions = np.arange(4000) % 3
    # Objective 0 (the target event) pays for action 0, objective 1 (progression) for action 1.
    signals = np.column_stack([(actions == 0), (actions == 1)]).astype(float)
    selector = IntentPolicySelector({"high": high, "low": low}, threshold=0.5)
    selector.fit_intent(x, y)
    assert selector.coef[1] == pytest.approx(2.0, abs=0.3)
    selector.update(x, actions, signals)
    high.set_weights([1.0, 0.0])
    low.set_weights([0.0, 1.0])
    xq = np.column_stack([np.ones(6), np.array([2.0, 2.5, 3.0, -2.0, -2.5, -3.0]), np.zeros((6, D - 2))])
    assert selector.route(xq).tolist() == [True] * 3 + [False] * 3
    assert selector.choose(xq).tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(SchemaError, match="0/1"):
        selector.fit_intent(x, y + 0.5)
    with pytest.raises(ConfigError, match="'high' and 'low'"):
        IntentPolicySelector({"a": high, "b": low})


def test_incremental_add_retire_and_updates_match_a_full_refactor() -> None:
    for exploration in ("ucb", "ts"):
        bandit = _bandit(n_actions=3, exploration=exploration, lam_a=4.0)
        x, a, r = _data(100, 3, seed=12)
        bandit.update(x[:50], a[:50], r[:50])
        for i in range(50, 100):  # single rows: Sherman-Morrison and rank-one factor downdates
            bandit.update(x[i:i + 1], a[i:i + 1], r[i:i + 1])
        xq = np.random.default_rng(13).standard_normal((9, D))
        bandit.add_action(7, np.array([0.5, 0.5, 0.0]), cost=0.1)
        bandit.retire_action(1)
        inc_mean, inc_ids = bandit.expected_reward(xq)
        inc_width = bandit.ucb_width(xq)
        inc_beta = bandit.beta
        bandit.refactor()
        full_mean, full_ids = bandit.expected_reward(xq)
        assert inc_ids.tolist() == full_ids.tolist()
        np.testing.assert_allclose(inc_mean, full_mean, atol=1e-10)
        np.testing.assert_allclose(inc_width, bandit.ucb_width(xq), atol=1e-10)
        np.testing.assert_allclose(inc_beta, bandit.beta, atol=1e-10)


def test_width_small_and_large_batches_agree() -> None:
    """Few contexts go through R, many through cached (K, d, d) matrices: same widths."""
    bandit = _bandit(n_actions=3)
    x, a, r = _data(90, 3, seed=21)
    bandit.update(x, a, r)
    xq = np.random.default_rng(22).standard_normal((400, D))
    many = bandit.ucb_width(xq)
    one_by_one = np.vstack([bandit.ucb_width(xq[i:i + 1]) for i in range(0, 400, 37)])
    np.testing.assert_allclose(many[::37], one_by_one, rtol=1e-10)


def _brute_force_beta(x: np.ndarray, a: np.ndarray, r: np.ndarray, feats: np.ndarray, n_actions: int) -> np.ndarray:
    """The joint ridge regression solved with 60 significant digits (mpmath)."""
    import mpmath

    mpmath.mp.dps = 60
    k = feats.shape[1] * x.shape[1]
    dim = k + n_actions * x.shape[1]
    J = mpmath.eye(dim)
    rhs = mpmath.zeros(dim, 1)
    for xi, ai, ri in zip(x, a, r):
        f = np.zeros(dim)
        f[:k] = np.kron(feats[ai], xi)
        f[k + ai * x.shape[1]: k + (ai + 1) * x.shape[1]] = xi
        nz = np.flatnonzero(f)
        fm = [mpmath.mpf(float(v)) for v in f[nz]]
        for u, i in enumerate(nz.tolist()):
            rhs[i, 0] += fm[u] * mpmath.mpf(float(ri))
            for v, j in enumerate(nz.tolist()):
                J[i, j] += fm[u] * fm[v]
    sol = mpmath.lu_solve(J, rhs)
    return np.array([float(sol[i]) for i in range(k)])


@pytest.mark.parametrize("step", [1, 600])
def test_shared_coefficients_stay_exact_at_1e8_rows(step: int) -> None:
    """600 rows of weight 1e8 / 600 each (a row scaled by sqrt(w) counts w times): the
    learner's beta against the joint ridge solved in 60-digit arithmetic. Subtracting large
    sums (the textbook Schur complement) loses about 1e-7 of relative precision here."""
    d, p, K = 3, 2, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, d))
    x[:, 0] = 1.0
    a = np.arange(600) % K
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    r = np.einsum("nk,k->n", np.stack([np.kron(feats[ai], xi) for xi, ai in zip(x, a)]), rng.standard_normal(p * d))
    r += 0.3 * rng.standard_normal(600)
    root = np.sqrt(1e8 / 600)
    xs, rs = x * root, r * root
    bandit = HybridLinearBandit(d, p, exploration="greedy")
    for j in range(K):
        bandit.add_action(j, feats[j])
    for s in range(0, 600, step):
        bandit.update(xs[s:s + step], a[s:s + step], rs[s:s + step])
    ref = _brute_force_beta(xs, a, rs, feats, K)
    err = np.max(np.abs(bandit.beta[:, 0] - ref)) / np.max(np.abs(ref))
    print(f"relative error of beta at 1e8 rows, step {step}: {err:.1e}")
    assert err < 1e-12, err
    # weights given as sample_weight are the same thing as scaled rows
    weighted = HybridLinearBandit(d, p, exploration="greedy")
    for j in range(K):
        weighted.add_action(j, feats[j])
    weighted.update(x, a, r, sample_weight=np.full(600, 1e8 / 600))
    np.testing.assert_allclose(weighted.beta[:, 0], ref, rtol=1e-12, atol=1e-12)


def _mask_bandit(exploration: str) -> HybridLinearBandit:
    bandit = _bandit(n_actions=3, exploration=exploration, seed=3)
    x, a, r = _data(60, 3, seed=30)
    bandit.update(x, a, r + 3.0 * (a == 1)[:, None])  # action 1 is by far the best
    return bandit


@pytest.mark.parametrize("exploration", ["greedy", "ucb", "ts"])
def test_choose_never_picks_or_weights_an_ineligible_action(exploration: str) -> None:
    bandit = _mask_bandit(exploration)
    xq = np.random.default_rng(31).standard_normal((300, D))
    # one mask for everyone: action 1 excluded (a bool mask is never read as ids {0, 1})
    everyone = np.array([True, False, True])
    assert 1 not in set(bandit.choose(xq, everyone).tolist())
    probs = bandit.probabilities(xq[:40], 3, everyone, n_draws=30)
    assert np.all(probs[:, 1] == 0) and np.allclose(probs.sum(axis=1), 1.0)
    # per-user masks: each user has their own eligible set
    per_user = np.random.default_rng(32).random((300, 3)) < 0.5
    per_user[np.arange(300), np.arange(300) % 3] = True
    chosen = bandit.choose(xq, per_user)
    assert per_user[np.arange(300), chosen].all()
    probs = bandit.probabilities(xq, 3, per_user, n_draws=20)
    assert np.all(probs[~per_user] == 0) and np.allclose(probs.sum(axis=1), 1.0)
    assert np.all(bandit.greedy_probabilities(xq, 3, per_user)[~per_user] == 0)
    # the mask is applied, not merged: the excluded best action is really what gets dropped
    assert set(bandit.choose(xq, np.array([1])).tolist()) == {1}


def test_eligibility_input_is_never_confused() -> None:
    bandit = _mask_bandit("greedy")
    xq = np.zeros((4, D))
    with pytest.raises(SchemaError, match="integer action ids or a boolean mask"):
        bandit.choose(xq, np.array([1.0, 0.0, 1.0]))
    with pytest.raises(SchemaError, match="columns"):
        bandit.choose(xq, np.array([True, False]))  # too narrow for action id 2
    with pytest.raises(SchemaError, match=r"shape"):
        bandit.choose(xq, np.ones((3, 3), dtype=bool))  # 3 rows for 4 users
    with pytest.raises(SchemaError, match="1-D"):
        bandit.choose(xq, np.array([[0, 1], [1, 2], [0, 2], [0, 1]]))  # per-row id lists
    with pytest.raises(ConfigError, match="not active"):
        bandit.choose(xq, np.array([0, 9]))
    nothing = np.ones((4, 3), dtype=bool)
    nothing[2] = False
    with pytest.raises(ConfigError, match="user row 2 has no eligible"):
        bandit.choose(xq, nothing)
    with pytest.raises(ConfigError, match="no eligible"):
        bandit.greedy_probabilities(xq, 3, np.zeros(3, dtype=bool))
    with pytest.raises(ConfigError, match="no eligible"):
        bandit.choose(xq, [])


def test_weighted_warm_start_counts_rows_by_clipped_inverse_propensity() -> None:
    x, a, r = _data(80, 3, seed=40)
    props = np.where(a == 0, 0.8, 0.05)
    weighted = _bandit(exploration="greedy")
    weighted.warm_start(x, a, r, props, weighting="ips", max_weight=10.0)
    w = np.minimum(1.0 / props, 10.0)
    manual = _bandit(exploration="greedy")
    manual.update(x, a, r, sample_weight=w / w.mean())
    np.testing.assert_allclose(weighted.beta, manual.beta, atol=1e-12)
    plain = _bandit(exploration="greedy")
    plain.warm_start(x, a, r, props)
    assert not np.allclose(plain.beta, weighted.beta)
    with pytest.raises(ConfigError, match="weighting"):
        plain.warm_start(x, a, r, props, weighting="dr")
    with pytest.raises(SchemaError, match="sample_weight at row 3"):
        sw = np.ones(80)
        sw[3] = -1.0
        plain.update(x, a, r, sample_weight=sw)


@pytest.mark.parametrize("refresh_every", [1_000, 3])
def test_ucb_width_stays_exact_while_learning_online(refresh_every: int) -> None:
    """Decide, learn one row, decide again: the cached shared covariance that single UCB
    decisions read is downdated with every row (or rebuilt) and agrees with a fresh model,
    for one-hot and for mixed action features."""
    bandit = HybridLinearBandit(D, P, exploration="ucb", refresh_every=refresh_every, seed=3)
    feats = [np.eye(P)[0], np.eye(P)[1], np.eye(P)[2], np.array([1.0, 0.5, 0.0])]
    for a_id, phi in enumerate(feats):
        bandit.add_action(a_id, phi)
    x, a, r = _data(160, 4, seed=31)
    bandit.update(x[:40], a[:40], r[:40])
    xq = np.random.default_rng(32).standard_normal((1, D))
    seen = list(range(40))
    for i in range(40, 157):
        bandit.choose(xq)  # builds, then reads, the cache
        rows = [i, i + 1, i + 2] if i % 25 == 0 else [i]  # a block of rows now and then
        bandit.update(x[rows], a[rows], r[rows])
        seen += rows
    fresh = HybridLinearBandit(D, P, exploration="ucb", seed=3)
    for a_id, phi in enumerate(feats):
        fresh.add_action(a_id, phi)
    fresh.update(x[seen], a[seen], r[seen])
    np.testing.assert_allclose(bandit.ucb_width(xq), fresh.ucb_width(xq), rtol=1e-9)
    greedy = HybridLinearBandit(D, P, exploration="greedy", seed=3)  # the R path, no cache
    for a_id, phi in enumerate(feats):
        greedy.add_action(a_id, phi)
    greedy.update(x[seen], a[seen], r[seen])
    np.testing.assert_allclose(bandit.ucb_width(xq), greedy.ucb_width(xq), rtol=1e-9)


def test_float32_width_copy_changes_widths_by_less_than_1e5_and_the_state_not_at_all() -> None:
    """Decisions read A_a^{-1} from a float32 copy (width_dtype): their UCB widths agree
    with the float64 posterior's to ~1e-6 relative, the posterior itself (beta, means,
    ucb_width) is float64 and identical, and it stays so while learning online."""
    fast = _bandit(n_actions=3, exploration="ucb")
    exact = HybridLinearBandit(D, P, exploration="ucb", alpha=1.0, width_dtype="float64")
    for a in range(3):
        exact.add_action(a, np.eye(P)[a % P])
    x, a, r = _data(120, 3, seed=50)
    for learner in (fast, exact):
        learner.update(x[:60], a[:60], r[:60])
        for i in range(60, 120):
            learner.update(x[i:i + 1], a[i:i + 1], r[i:i + 1])
    assert fast._Ainv_w.dtype == np.float32 and exact._Ainv_w.dtype == np.float64
    xq = np.random.default_rng(51).standard_normal((200, D))
    np.testing.assert_array_equal(fast.beta, exact.beta)
    np.testing.assert_array_equal(fast.expected_reward(xq)[0], exact.expected_reward(xq)[0])
    np.testing.assert_array_equal(fast.ucb_width(xq), exact.ucb_width(xq))
    one = np.vstack([fast._width(xq[i:i + 1], exact=False) for i in range(200)])
    rel = np.abs(one - exact.ucb_width(xq)) / exact.ucb_width(xq)
    assert 0 < rel.max() < 1e-5  # the copy is really float32, and close
    np.testing.assert_allclose(fast.scores(xq[:1])[0], exact.scores(xq[:1])[0], rtol=1e-5)
    with pytest.raises(ConfigError, match="width_dtype"):
        HybridLinearBandit(D, P, width_dtype="float16")


@pytest.mark.parametrize("exploration", ["greedy", "ucb", "ts"])
@pytest.mark.parametrize("width_dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_decisions_after_an_update_read_the_same_mean_as_the_cached_posterior(
        exploration: str, width_dtype: str, tol: float) -> None:
    """After a single-row update no decision refreshes psi: the mean comes from
    y_a = A_a^{-1} x. It equals expected_reward (the float64 psi) to rounding, call after
    call and update after update; the shared beta kept current by Sherman-Morrison equals
    the exact R (R^T b_0); greedy builds psi once it pays (so a fixed posterior is cheap)."""
    learner = HybridLinearBandit(D, P, objectives=("o0", "o1"), weights=(1.0, 0.4), cost_weight=0.5,
                                 exploration=exploration, alpha=1.0, width_dtype=width_dtype, seed=4)
    for a_id in range(4):
        learner.add_action(a_id, np.eye(P)[a_id % P], cost=0.1 * a_id)
    x, a, r = _data(140, 4, m=2, seed=60)
    learner.update(x[:40], a[:40], r[:40])
    xq = np.random.default_rng(61).standard_normal((6, D))
    for i in range(40, 140):
        learner.update(x[i:i + 1], a[i:i + 1], r[i:i + 1])
        assert "psi" not in learner._lazy
        exact_mean = learner.expected_reward(xq)[0]  # builds the float64 psi
        learner._posterior_changed()  # drop it again: scores must not need it
        if exploration == "greedy":
            for _ in range(3):  # two direct reads, then the cached psi
                got = learner.scores(xq[:1])[0]
                np.testing.assert_allclose(got, exact_mean[:1], rtol=tol, atol=tol)
            assert "psi" in learner._lazy
        else:
            Y = learner._apply_Ainv(xq, exact=width_dtype == "float64")
            np.testing.assert_allclose(learner._mean_from(xq, Y), exact_mean, rtol=tol, atol=tol)
            assert "psi" not in learner._lazy
    beta_inc = learner.beta
    learner._refresh_beta()
    np.testing.assert_allclose(beta_inc, learner.beta, rtol=1e-10, atol=1e-12)


def test_ucb_scores_after_an_update_equal_mean_plus_width() -> None:
    """UCB scores read mean and width from one y_a = A_a^{-1} x: mean + alpha |w| width."""
    learner = _bandit(n_actions=3, exploration="ucb", m=1)
    learner.width_dtype = np.dtype("float64")
    learner._Ainv_w = learner._Ainv.copy()
    x, a, r = _data(60, 3, seed=70)
    learner.update(x[:30], a[:30], r[:30])
    xq = np.random.default_rng(71).standard_normal((5, D))
    for i in range(30, 60):
        learner.update(x[i:i + 1], a[i:i + 1], r[i:i + 1])
        score = learner.scores(xq)[0]
        want = learner.expected_reward(xq)[0] + learner.alpha * learner.ucb_width(xq)
        np.testing.assert_allclose(score, want, rtol=1e-10)
