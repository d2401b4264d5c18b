"""Compute to reach a budget-satisfying coupon policy of equal quality: λ-generalization vs retraining.

Both routes train R-BCQ under one objective (undiscounted, per user-day) and end the same way: bisection
on λ with a cost estimate, then a per-user randomisation between the two policies of the final bracket
so that the expected estimated spend equals the search's target.

**The evaluator of the search.** REME's cost estimate at the chosen λ is off by up to ~0.6 per
user-day (the policy's own states are off the logged data), so a search on it lands anywhere between a
quarter of the budget and far over it, for both routes. Both routes search on a **model-based** estimate
(:mod:`pulse_lib.coupons.response_model`): one classifier of the next-day return, fitted once per seed
on the logged data (its updates and seconds are charged to both routes), and rollouts of the policy
from the logged day-0 states. The search aims at the budget minus a **safety margin** calibrated
before the measured seeds, on validation trainings (seeds ``validation_seeds``, every length of the
sweep): the rollout search is run at the budget itself, the simulator measures the true spend of the
mix it chose, and the margin is the mean of (true - estimated) spend plus ``margin_k`` standard
deviations of it from run to run (:func:`pulse_lib.coupons.budget.calibrate_margin`). The worst case
seen there (the largest underestimate) is searched on too. REME is trained at every λ-generalized
length, and its own search is reported beside (``budget_use``), with the rollout search without the
margin.

* **λ-generalized**: one R-BCQ over the whole λ grid; bisection on the rollout estimate to
  ``search_tol`` (a probe is a rollout, no training).
* **per-λ retraining**: every bisection probe trains a new R-BCQ at that λ; the bracket tolerance
  ``retrain_tol`` sets the number of probes (every probe is counted).

Training length is swept for each route. A run of length ``L`` is the first ``L`` steps of the longest
run (the schedule has no decay), so each route trains once per (seed, λ) to its longest length and
snapshots the shorter ones. The updates and seconds reported for a length are those a stand-alone run
of that length would spend (learner steps and time up to the snapshot, the response model, the search),
every probe included.

**Equal quality.** The quality target is the best retraining result (highest mean true retention over
seeds among the lengths whose runs all stay within budget) minus a tolerance stated up front,
``tolerance`` (absolute retention per user-day); the same with one standard error over seeds is
reported as a second reading. For each seed and route, the compute needed is that of the shortest
length whose policy is within budget (true spend <= budget + 2 Monte-Carlo standard errors) and reaches
the target. The ratio retraining / generalized is reported per seed and as a mean with a Student-t 95%
interval.

Writes ``results/coupons_lambda_compute.json`` (partial results after every seed). The seeds are
independent; the recorded run ran one process per validation seed, then one per measured seed, through
the CPU-slot wrapper, and merged them:

    python benchmarks/coupons_lambda_compute.py                  # validation + all seeds, one process
    for s in 100 101 102; do /work/wt/heavy python benchmarks/coupons_lambda_compute.py --validate \
        --seeds $s --out-dir /tmp/val & done; wait
    for s in 1 2 3; do /work/wt/heavy python benchmarks/coupons_lambda_compute.py --part --seeds $s \
        --validation /tmp/val/*.json --out-dir /tmp/parts & done; wait
    python benchmarks/coupons_lambda_compute.py --merge /tmp/parts/*.json   # the recorded run
    python benchmarks/coupons_lambda_compute.py --quick                     # a smoke test (seconds)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import RESULTS_DIR, machine_info, write_results

from pulse_lib.book import mean_ci
from pulse_lib.coupons import simulator as sim
from pulse_lib.coupons.budget import calibrate_margin
from pulse_lib.coupons.dataset import (
    STATE_SCALE,
    CouponDataset,
    LambdaSampler,
    lambda_grid,
)
from pulse_lib.coupons.pipeline import search_and_mix
from pulse_lib.coupons.rbcq import RBCQ, RBCQConfig, eligible_mask
from pulse_lib.coupons.reme import REME, REMEConfig, initial_states
from pulse_lib.coupons.response_model import ResponseModel, ResponseModelConfig

NAME = "coupons_lambda_compute"
FULL = {"n_users": 2_000, "budget": 0.8, "gen_lengths": [1_000, 2_000, 4_000], "retrain_lengths": [500, 1_000, 2_000],
            "eval_ratio": 0.5, "retrain_tol": 0.125, "search_tol": 1e-3, "truth_users": 10_000, "curve_users": 2_000,
            "curve_lambdas": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0], "tolerance": 0.01,
            "validation_seeds": [100, 101, 102], "margin_k": 2.0, "model_steps": 3_000, "model_rollouts": 10_000}
QUICK = {"n_users": 60, "budget": 0.8, "gen_lengths": [10, 20], "retrain_lengths": [5, 10], "eval_ratio": 0.5,
             "retrain_tol": 0.5, "search_tol": 0.05, "truth_users": 200, "curve_users": 100, "curve_lambdas": [0.0, 1.0],
             "tolerance": 0.01, "validation_seeds": [100, 101], "margin_k": 2.0, "model_steps": 20, "model_rollouts": 100}


def truth_of_mix(config: sim.CouponSimConfig, policy_of, mix, n_users: int, seed: int) -> dict:
    """True retention and cost of the per-user randomisation (exact mix of the two policies' values)."""
    high = sim.evaluate_policy(config, policy_of(mix.lam_high), n_users=n_users, seed=seed)
    low = high if mix.p_low == 0 else sim.evaluate_policy(config, policy_of(mix.lam_low), n_users=n_users, seed=seed)
    p = mix.p_low
    return {"true_retention": mix.combine(low.retention, high.retention),
            "true_cost": mix.combine(low.cost, high.cost),
            "retention_se": float(np.hypot(p * low.retention_se, (1 - p) * high.retention_se)),
            "cost_se": float(np.hypot(p * low.cost_se, (1 - p) * high.cost_se))}


def fit_response_model(data, s: dict, seed: int) -> ResponseModel:
    """The model-based evaluator of a seed: one classifier fit, shared by every λ and both routes."""
    model = ResponseModel(ResponseModelConfig(n_steps=s["model_steps"], n_rollouts=s["model_rollouts"]), seed=seed)
    model.fit(data, np.random.default_rng(20_000 + seed))
    return model


def rollout_cost(model: ResponseModel, policy, starts: np.ndarray, seed: int) -> float:
    return model.rollout(policy, starts, seed=30_000 + seed).cost


def validate(data, config, s: dict, rbcq: RBCQConfig, seed: int, progress: bool = False) -> list[dict]:
    """The rollout search's error on one validation training (a seed the measured runs do not use).

    Trains a λ-generalized R-BCQ to every length of the sweep and fits a response model (same seed, as a
    measured seed would); at each length, searches λ on the rollout aimed at the budget itself (no
    margin), mixes, and measures the mix's true spend in the simulator. The error is true - estimated.
    """
    learner = RBCQ(replace(rbcq, lambda_low=0.0, lambda_high=1.0), seed=seed)
    sampler = LambdaSampler(data, lambda_grid())
    rng = np.random.default_rng(seed)
    model = fit_response_model(data, s, seed)
    starts = initial_states(data.observations)
    rows, done = [], 0
    for length in s["gen_lengths"]:
        learner.fit(sampler, length - done, rng, progress=progress)
        done = length
        search, mix = search_and_mix(lambda lam: rollout_cost(model, learner.policy(lam), starts, seed),
                                     s["budget"], s["search_tol"])
        truth = truth_of_mix(config, learner.policy, mix, s["truth_users"], 5000 + seed)
        rows.append({"seed": seed, "length": length, "lambda": search.lam, "lambda_low": mix.lam_low,
                     "p_low": mix.p_low, "binds": search.lam > 0, "search_failed": bool(np.isnan(search.cost)),
                     "estimated_cost": mix.expected_cost, **truth,
                     "error": truth["true_cost"] - mix.expected_cost})
        print("validation", rows[-1], flush=True)
    return rows


def margin_from(rows: list[dict], s: dict) -> dict:
    """The safety margin from the validation runs where the budget binds (a search that stops at λ = 0
    aims at nothing, so its error says nothing about the aim)."""
    used = [r for r in rows if r["binds"] and not r["search_failed"]]
    if len(used) < 2:  # (tiny --quick trainings) fall back to every run that searched; said so
        used = [r for r in rows if not r["search_failed"]]
    errors = [r["error"] for r in used]
    if len(errors) >= 2:
        margin = calibrate_margin(errors, k=s["margin_k"])
        values = (margin.margin, margin.mean_error, margin.sd_error)
    else:
        values = (0.0, float("nan"), float("nan"))
    worst = max([0.0, *errors])
    return {"seeds": sorted({r["seed"] for r in rows}), "lengths": s["gen_lengths"], "rows": rows,
            "runs_used": len(used), "calibrated": len(errors) >= 2, "margin": values[0],
            "search_target": s["budget"] - values[0], "mean_error": values[1], "sd_error": values[2],
            "k": s["margin_k"],
            "worst_underestimate": worst, "worst_case_target": s["budget"] - worst,
            "rule": f"mean + {s['margin_k']:g} SD over validation runs of (true - estimated) spend of the mix "
                    "the rollout search chose when aimed at the budget (runs where the budget binds; at least 0)",
            "worst_case_rule": "largest (true - estimated) spend over the same runs (at least 0)"}


def own_trajectories(config: sim.CouponSimConfig, learner: RBCQ, lam: float, n_users: int, seed: int) -> dict:
    """The policy at λ run in the simulator: true spend and retention (per user-day, with SEs over users),
    and the largest coupon its BCQ filter allows on the states it visits itself (the λ = 0 check's
    ceiling: at λ = 0 the best policy spends it)."""
    eps = sim.simulate(config, learner.policy(lam), rng=np.random.default_rng(seed), n_users=n_users)
    values = np.asarray(config.coupon_values)
    per_user_c = eps.costs.reshape(n_users, config.horizon).mean(axis=1)
    per_user_r = eps.rewards.reshape(n_users, config.horizon).mean(axis=1)
    root = np.sqrt(n_users)
    out = {"true_cost": float(per_user_c.mean()), "true_cost_se": float(per_user_c.std(ddof=1) / root),
           "true_retention": float(per_user_r.mean()),
           "true_retention_se": float(per_user_r.std(ddof=1) / root),
           "eligible_ceiling_own_states": eligible_ceiling(learner, eps.observations, values, lam)}
    if lam == 0.0:  # the ceiling policy on the same users: what the λ = 0 policy leaves on the table
        best = sim.evaluate_policy(config, ceiling_policy(learner, lam), n_users=n_users, seed=seed)
        out.update(ceiling_policy_retention=best.retention, ceiling_policy_retention_se=best.retention_se,
                   ceiling_policy_cost=best.cost)
    return out


def ceiling_policy(learner: RBCQ, lam: float):
    """The policy the λ = 0 check compares with: the largest coupon the learner's BCQ filter allows in
    each state (the best eligible action when spend is free, since retention rises with the coupon)."""

    def act(states: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(states, dtype=np.float32) * STATE_SCALE)
        with torch.no_grad():
            mask = eligible_mask(learner.behaviour_logits(obs, torch.full((len(obs),), float(lam))),
                                 learner.config.bcq_threshold).numpy()
        return (mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)).astype(np.int64)

    return act


def eligible_ceiling(learner: RBCQ, observations: np.ndarray, values: np.ndarray, lam: float) -> float:
    """Mean over states of the largest coupon that passes the learner's BCQ filter at λ."""
    obs = torch.as_tensor(np.asarray(observations, dtype=np.float32) * STATE_SCALE)
    lam_t = torch.full((len(obs),), float(lam))
    with torch.no_grad():
        mask = eligible_mask(learner.behaviour_logits(obs, lam_t), learner.config.bcq_threshold).numpy()
    return float(np.where(mask, values[None, :], 0.0).max(axis=1).mean())


def other_searches(data, config, s, seed, snapshot, reme, model, sampler, starts, worst_case_target, length,
                   main_row, progress) -> dict:
    """Budget use of the same policy searched three other ways: REME, the rollout without a margin, the
    rollout with the worst-case margin (each mixed and checked in the simulator)."""
    evaluator = REME(snapshot.greedy, reme, seed=seed)
    evaluator.fit(sampler, int(length * s["eval_ratio"]), np.random.default_rng(10_000 + seed), progress=progress)
    out = {"seed": seed, "length": length, "reme_length": int(length * s["eval_ratio"])}
    for name, cost_of, aim in (
        ("reme", lambda lam: evaluator.estimate(starts, lam).cost, s["budget"]),
        ("rollout_no_margin", lambda lam: rollout_cost(model, snapshot.policy(lam), starts, seed), s["budget"]),
        ("rollout_worst_case_margin", lambda lam: rollout_cost(model, snapshot.policy(lam), starts, seed),
         worst_case_target),
    ):
        search, mix = search_and_mix(cost_of, aim, s["search_tol"])
        truth = truth_of_mix(config, snapshot.policy, mix, s["truth_users"], 5000 + seed)
        out[name] = {"lambda": search.lam, "estimated_cost": mix.expected_cost, "flagged": len(search.flagged),
                     "search_failed": bool(np.isnan(search.cost)), "binds": search.lam > 0, **truth}
    out["rollout_with_margin"] = {k: main_row[k] for k in (
        "lambda", "estimated_cost", "flagged", "search_failed", "true_retention", "true_cost", "retention_se",
        "cost_se")} | {"binds": main_row["lambda"] > 0}
    return out


def generalized_sweep(data, config, s, seed, rbcq, reme, model, target, worst_case_target, progress) -> tuple[list[dict], list[dict], list[dict]]:
    """One λ-generalized R-BCQ trained to each length in turn; a rollout search per snapshot.

    At every length, REME is trained too and the budget use of the same policy searched three other
    ways is recorded (:func:`other_searches`).
    """
    grid = lambda_grid()
    sampler = LambdaSampler(data, grid)
    starts = initial_states(data.observations)
    values = np.asarray(config.coupon_values)
    learner = RBCQ(replace(rbcq, lambda_low=0.0, lambda_high=1.0), seed=seed)
    rng = np.random.default_rng(seed)
    rows, curve, done = [], [], 0
    budget_use: list[dict] = []
    for length in s["gen_lengths"]:
        learner.fit(sampler, length - done, rng, progress=progress)
        done = length
        snapshot = copy.deepcopy(learner)
        start = time.perf_counter()
        search, mix = search_and_mix(lambda lam: rollout_cost(model, snapshot.policy(lam), starts, seed),
                                     target, s["search_tol"])
        search_seconds = time.perf_counter() - start
        truth = truth_of_mix(config, snapshot.policy, mix, s["truth_users"], 5000 + seed)
        rows.append({"route": "lambda-generalized", "search_failed": bool(np.isnan(search.cost)), "seed": seed,
                     "length": length, "model_updates": model.n_updates, "updates": length + model.n_updates,
                     "probes": len(search.evaluations),
                     "seconds": round(snapshot.train_seconds + model.train_seconds + search_seconds, 3),
                     "lambda": search.lam, "lambda_low": mix.lam_low, "p_low": mix.p_low,
                     "estimated_cost": mix.expected_cost, "flagged": len(search.flagged), **truth})
        print(rows[-1], flush=True)
        budget_use.append(other_searches(data, config, s, seed, snapshot, reme, model, sampler, starts,
                                         worst_case_target, length, rows[-1], progress))
        for lam in s["curve_lambdas"]:  # learning curve at fixed λ (truth from fewer users)
            policy = snapshot.policy(lam)
            own = own_trajectories(config, snapshot, lam, s["curve_users"], 7000 + seed)
            est = model.rollout(policy, starts, seed=30_000 + seed)
            curve.append({"seed": seed, "length": length, "lambda": lam, "route": "lambda-generalized", **own,
                          "rollout_cost": est.cost, "rollout_retention": est.retention,
                          "coupon_on_logged_states": float(np.mean(values[policy(data.observations)])),
                          "eligible_ceiling_logged_states": eligible_ceiling(snapshot, data.observations, values, lam)})
    return rows, curve, budget_use


def retraining_sweep(data, config, s, seed, rbcq, model, target) -> tuple[list[dict], list[dict]]:
    """Bisection with a new R-BCQ per probe, for each length; trainings shared across lengths.

    Also returns the λ = 0 check of the single-λ learner trained at λ = 0 (the search's first probe
    below λ = 1), for the learning curve: does a learner that sees only λ = 0 reach the ceiling?
    """
    starts = initial_states(data.observations)
    learners: dict[float, dict] = {}  # λ -> {"model", "rng", "done", "snapshots": {length: (model, seconds)}}

    def snapshot(lam: float, length: int) -> tuple[RBCQ, float]:
        entry = learners.setdefault(lam, {
            "model": RBCQ(replace(rbcq, lambda_low=lam, lambda_high=lam), seed=seed),
            "rng": np.random.default_rng(seed), "done": 0, "snapshots": {},
            "sampler": LambdaSampler(data, np.array([lam], dtype=np.float32))})
        if length not in entry["snapshots"]:
            for goal in sorted(x for x in s["retrain_lengths"] if x <= length and x not in entry["snapshots"]):
                entry["model"].fit(entry["sampler"], goal - entry["done"], entry["rng"])
                entry["done"] = goal
                entry["snapshots"][goal] = (copy.deepcopy(entry["model"]), entry["model"].train_seconds)
        return entry["snapshots"][length]

    rows, curve0 = [], []
    for length in s["retrain_lengths"]:
        probes: list[float] = []
        rollout_seconds = [0.0]

        def cost_of(lam: float) -> float:
            probes.append(lam)
            learner, _ = snapshot(lam, length)
            start = time.perf_counter()
            cost = rollout_cost(model, learner.policy(lam), starts, seed)
            rollout_seconds[0] += time.perf_counter() - start
            return cost

        start = time.perf_counter()
        search, mix = search_and_mix(cost_of, target, s["retrain_tol"])
        bookkeeping = time.perf_counter() - start  # includes any training done for the first time here
        seconds = sum(snapshot(lam, length)[1] for lam in probes) + model.train_seconds + rollout_seconds[0]
        policy_of = lambda lam: snapshot(lam, length)[0].policy(lam)
        truth = truth_of_mix(config, policy_of, mix, s["truth_users"], 5000 + seed)
        rows.append({"route": "per-lambda retraining", "search_failed": bool(np.isnan(search.cost)), "seed": seed,
                     "length": length, "model_updates": model.n_updates,
                     "updates": len(probes) * length + model.n_updates, "probes": len(probes),
                     "seconds": round(seconds, 3), "benchmark_seconds": round(bookkeeping, 3),
                     "probed": [round(p, 6) for p in probes], "lambda": search.lam, "lambda_low": mix.lam_low,
                     "p_low": mix.p_low, "estimated_cost": mix.expected_cost, "flagged": len(search.flagged),
                     **truth})
        print(rows[-1], flush=True)
        if 0.0 in learners:
            learner0 = snapshot(0.0, length)[0]
            values = np.asarray(config.coupon_values)
            curve0.append({"seed": seed, "length": length, "lambda": 0.0, "route": "single-lambda (λ = 0)",
                           **own_trajectories(config, learner0, 0.0, s["curve_users"], 7000 + seed),
                           "coupon_on_logged_states": float(np.mean(values[learner0.policy(0.0)(data.observations)])),
                           "eligible_ceiling_logged_states": eligible_ceiling(learner0, data.observations, values,
                                                                              0.0)})
    return rows, curve0


def within_budget(row: dict, budget: float) -> bool:
    return bool(row["true_cost"] <= budget + 2 * row["cost_se"])


def equal_quality(routes: list[dict], s: dict, seeds: list[int], tolerance: float | None = None) -> dict:
    """Compute each route needs to reach the quality target, per seed, and the ratio.

    ``tolerance``: absolute retention below the best retraining result; ``None``: one standard error
    over seeds of that result.
    """
    budget = s["budget"]
    retrain = [r for r in routes if r["route"] == "per-lambda retraining"]
    by_length = {}
    for length in s["retrain_lengths"]:
        rows = [r for r in retrain if r["length"] == length]
        if rows and all(within_budget(r, budget) for r in rows):
            by_length[length] = [r["true_retention"] for r in rows]
    fallback = not by_length
    if fallback:  # no length keeps every seed within budget: fall back to all lengths, said so
        by_length = {length: [r["true_retention"] for r in retrain if r["length"] == length]
                     for length in s["retrain_lengths"]}
    best_length = max(by_length, key=lambda k: np.mean(by_length[k]))
    best = np.asarray(by_length[best_length])
    se = float(best.std(ddof=1) / np.sqrt(best.size)) if best.size > 1 else 0.0
    tol = se if tolerance is None else float(tolerance)
    target = float(best.mean() - tol)
    per_seed = []
    for seed in seeds:
        entry = {"seed": seed}
        for route, key in (("lambda-generalized", "generalized"), ("per-lambda retraining", "retraining")):
            rows = sorted((r for r in routes if r["route"] == route and r["seed"] == seed), key=lambda r: r["updates"])
            ok = [r for r in rows if within_budget(r, budget) and r["true_retention"] >= target]
            hit = ok[0] if ok else None
            entry[key] = None if hit is None else {k: hit[k] for k in (
                "length", "updates", "model_updates", "seconds", "probes", "true_retention", "true_cost",
                "retention_se", "cost_se")}
        if entry["generalized"] and entry["retraining"]:
            gen, ret = entry["generalized"], entry["retraining"]
            entry["updates_ratio"] = ret["updates"] / gen["updates"]
            entry["seconds_ratio"] = ret["seconds"] / gen["seconds"]
            # R-BCQ updates alone (the evaluator's fit is the same for both routes)
            entry["learner_updates_ratio"] = (ret["updates"] - ret["model_updates"]) / (
                gen["updates"] - gen["model_updates"])
        per_seed.append(entry)
    ratios = [e["updates_ratio"] for e in per_seed if "updates_ratio" in e]
    sec = [e["seconds_ratio"] for e in per_seed if "seconds_ratio" in e]
    learner = [e["learner_updates_ratio"] for e in per_seed if "learner_updates_ratio" in e]
    out = {"best_retraining_length": best_length, "best_retraining_retention": float(best.mean()),
           "best_retraining_se": se, "tolerance": tol,
           "tolerance_rule": "one standard error over seeds" if tolerance is None else "stated up front (absolute)",
           "target_retention": target, "best_length_fallback_over_budget": fallback,
           "within_budget_rule": "true cost <= budget + 2 Monte-Carlo standard errors",
           "per_seed": per_seed, "seeds_reached_by_both": len(ratios)}
    for key, values in (("updates_ratio", ratios), ("seconds_ratio", sec), ("learner_updates_ratio", learner)):
        if len(values) >= 2:
            m, h = mean_ci(values)
            out.update({key: m, f"{key}_half_width": h})
        elif values:
            out.update({key: values[0], f"{key}_half_width": None})
    out["at_least_5x"] = bool(ratios) and out["updates_ratio"] >= 5
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: 1 2 3 (what the book reports); 1 2 with --quick")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--part", action="store_true",
                        help="write <name>_seed<first seed>.json (one of several processes; then --merge)")
    parser.add_argument("--validate", action="store_true",
                        help="only the validation trainings of --seeds (default: the settings' validation "
                             "seeds); writes <name>_validation_seed<first seed>.json")
    parser.add_argument("--validation", type=Path, nargs="+", default=None,
                        help="validation files (from --validate) to calibrate the margin from, instead of "
                             "training the validation seeds here")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="combine per-seed result files (runs of --seeds N) into one result")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out_dir)
    torch.set_num_threads(1)
    s = dict(QUICK if args.quick else FULL)
    suffix = "_quick" if args.quick else ""
    config = sim.CouponSimConfig(n_users=s["n_users"])
    data = CouponDataset.from_episodes(sim.simulate(config, rng=np.random.default_rng(0),
                                                    stochastic_policy=sim.logging_policy()))
    rbcq = RBCQConfig(hidden=8, n_heads=2, batch_size=32) if args.quick else RBCQConfig()
    reme = REMEConfig(hidden=8, n_heads=2, batch_size=32) if args.quick else REMEConfig()
    started = time.perf_counter()
    if args.validate:
        seeds = args.seeds or s["validation_seeds"]
        rows = [r for seed in seeds for r in validate(data, config, s, rbcq, seed, args.progress)]
        return write_results(f"{NAME}{suffix}_validation_seed{seeds[0]}",
                             {"benchmark": NAME, "quick": args.quick, "machine": machine_info(), "rows": rows,
                              "seconds": round(time.perf_counter() - started, 1)}, args.out_dir)
    seeds = args.seeds or ([1, 2] if args.quick else [1, 2, 3])
    if set(seeds) & set(s["validation_seeds"]):
        parser.error(f"seeds {s['validation_seeds']} calibrate the safety margin; measure other seeds")
    if args.validation:
        import json

        val_rows = [r for path in args.validation for r in json.loads(Path(path).read_text())["rows"]]
    else:
        val_rows = [r for seed in s["validation_seeds"] for r in validate(data, config, s, rbcq, seed,
                                                                            args.progress)]
    validation = margin_from(sorted(val_rows, key=lambda r: (r["seed"], r["length"])), s)
    target = validation["search_target"]
    print(f"validation: margin {validation['margin']:.4f}, search target {target:.4f}", flush=True)
    routes: list[dict] = []
    curve: list[dict] = []
    budget_use: list[dict] = []
    path = None
    settings = {**s, "seeds_planned": seeds, "lambda_grid": "0..1 step 0.05",
                "objective": "undiscounted retention and spend per user-day over the horizon",
                "search_evaluator": "response-model rollouts (model-based), aimed at budget - margin",
                "rbcq_hidden": rbcq.hidden, "rbcq_heads": rbcq.n_heads, "batch_size": rbcq.batch_size,
                "rbcq_lr": rbcq.lr}
    for i, seed in enumerate(seeds):
        model = fit_response_model(data, s, seed)
        rows, c, use = generalized_sweep(data, config, s, seed, rbcq, reme, model, target,
                                         validation["worst_case_target"], args.progress)
        routes += rows
        curve += c
        budget_use += use
        rows, c = retraining_sweep(data, config, s, seed, rbcq, model, target)
        routes += rows
        curve += c
        payload = summarise(args.quick, {**settings, "seeds": seeds[: i + 1]}, routes, curve, budget_use,
                            validation, [machine_info()], time.perf_counter() - started)
        name = NAME + suffix + (f"_seed{seeds[0]}" if args.part else "")
        path = write_results(name, payload, args.out_dir)
        eq = payload["equal_quality"]
        print(f"[{time.perf_counter() - started:.0f} s] seeds {seeds[: i + 1]}: equal-quality updates ratio "
              f"{eq.get('updates_ratio')}; wrote {path}", flush=True)
    return path


def summarise(quick: bool, settings: dict, routes: list[dict], curve: list[dict], budget_use: list[dict],
              validation: dict, machines: list[dict], wall: float) -> dict:
    """The result file: every run, the learning curve, equal quality and budget use."""
    budget = settings["budget"]
    uses = []
    for entry in budget_use:
        row = {"seed": entry["seed"], "length": entry["length"], "reme_length": entry["reme_length"]}
        for name in ("rollout_with_margin", "rollout_no_margin", "rollout_worst_case_margin", "reme"):
            r = entry[name]
            row[name] = {**r, "budget_use": r["true_cost"] / budget, "within_budget": within_budget(r, budget)}
        main = row["rollout_with_margin"]
        row.update(budget_use=main["budget_use"], true_retention=main["true_retention"], true_cost=main["true_cost"],
                   within_budget=main["within_budget"], binds=main["binds"])
        uses.append(row)
    summary = {}
    for name in ("rollout_with_margin", "rollout_no_margin", "rollout_worst_case_margin", "reme"):
        binding = [u[name] for u in uses if u[name]["binds"]]
        ok = [r["budget_use"] >= 0.97 and r["within_budget"] for r in binding]
        summary[name] = {"runs_binding": len(binding), "within_budget": sum(r["within_budget"] for r in binding),
                         "at_least_097_within": int(sum(ok)),
                         "lowest": min((r["budget_use"] for r in binding), default=None),
                         "highest": max((r["budget_use"] for r in binding), default=None),
                         "seeds_all_binding_runs_ok": sum(
                             all(u[name]["budget_use"] >= 0.97 and u[name]["within_budget"]
                                 for u in uses if u["seed"] == seed and u[name]["binds"])
                             and any(u[name]["binds"] for u in uses if u["seed"] == seed)
                             for seed in settings["seeds"])}
    return {
        "benchmark": NAME, "quick": quick, "machine": machines[0], "machines": machines,
        "settings": settings, "validation": validation, "routes": routes, "learning_curve": curve,
        "equal_quality": equal_quality(routes, settings, settings["seeds"], settings["tolerance"]),
        "equal_quality_one_se": equal_quality(routes, settings, settings["seeds"], None),
        "budget_use": uses,
        "budget_use_summary": summary,
        "budget_use_rule": "budget use = true spend / budget of the mix; within budget = true spend <= budget + "
                           "2 Monte-Carlo SE; target >= 0.97 and within budget wherever the budget binds",
        "benchmark_wall_seconds": round(wall, 1),
    }


def merge(paths: list[Path], out_dir: Path) -> Path:
    """One result from per-seed files run side by side (``--part --seeds N``), seeds in order."""
    import json

    parts = sorted((json.loads(Path(p).read_text()) for p in paths), key=lambda d: d["settings"]["seeds"][0])
    settings = {**parts[0]["settings"], "seeds": [x for d in parts for x in d["settings"]["seeds"]],
                "run_as": f"{len(parts)} processes, one per seed, after one process per validation seed, "
                          "through the 2-slot CPU wrapper"}
    settings.pop("seeds_planned", None)
    payload = summarise(parts[0]["quick"], settings, [r for d in parts for r in d["routes"]],
                        [c for d in parts for c in d["learning_curve"]],
                        [b for d in parts for b in _raw_budget_use(d)],
                        parts[0]["validation"], [d["machine"] for d in parts],
                        max(d["benchmark_wall_seconds"] for d in parts))
    path = write_results(NAME + ("_quick" if parts[0]["quick"] else ""), payload, out_dir)
    print(f"merged {len(parts)} parts: equal-quality updates ratio "
          f"{payload['equal_quality'].get('updates_ratio')}; wrote {path}")
    return path


def _raw_budget_use(payload: dict) -> list[dict]:
    """The per-seed search records of a part file, as ``summarise`` takes them."""
    return [{"seed": u["seed"], "length": u["length"], "reme_length": u["reme_length"],
             **{name: u[name] for name in ("rollout_with_margin", "rollout_no_margin", "rollout_worst_case_margin",
                                           "reme")}}
            for u in payload["budget_use"]]


if __name__ == "__main__":
    main()
