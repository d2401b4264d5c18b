"""Compute to reach a budget-satisfying coupon policy of equal quality: λ-generalization vs retraining.

Both routes train R-BCQ and REME (REME gets ``eval_ratio`` times the learner's steps) under one
objective (undiscounted, per user-day) and end the same way: bisection on λ with REME's cost
estimate, then a per-user randomisation between the two policies of the final bracket so that the
expected estimated spend equals the budget.

* **λ-generalized**: one R-BCQ and one REME over the whole λ grid; the bisection runs on the
  λ-conditioned REME to a tolerance of ``search_tol`` (a probe is a forward pass).
* **per-λ retraining**: every bisection probe trains a new R-BCQ at that λ and a new REME for it;
  the bracket tolerance ``retrain_tol`` sets the number of probes (every probe is counted).

Training length is swept for each route. A run of length ``L`` is the first ``L`` steps of the
longest run (the schedule has no decay), so each route trains once per (seed, λ) to its longest
length and snapshots the shorter ones; each snapshot gets its own REME. The updates and seconds
reported for a length are those a stand-alone run of that length would spend (its learner's steps
and time up to the snapshot, plus its REME, plus the search), every probe included.

**Equal quality.** The quality target is the best retraining result (highest mean true retention
over seeds among the lengths whose runs stay within budget) minus a tolerance: one standard error
over seeds of that mean, at least ``min_tolerance``. For each seed and route, the compute needed is
that of the shortest length whose policy is within budget (true spend <= budget + 2 Monte-Carlo
standard errors) and reaches the target. The ratio retraining / generalized is reported per seed
and as a mean with a Student-t 95% interval.

Writes ``results/coupons_lambda_compute.json`` (partial results after every seed). The seeds are
independent, so the recorded run ran one process per seed side by side and merged them (on a
shared, busy 2-core machine: about an hour of wall time at a load average near 20; the updates
are exact counts, the seconds are inflated by the load alike for both routes):

    nice -n 10 python benchmarks/coupons_lambda_compute.py                  # all seeds, one process
    for s in 0 1 2; do nice -n 10 python benchmarks/coupons_lambda_compute.py --part --seeds $s \
        --out-dir /tmp/parts & done; wait
    python benchmarks/coupons_lambda_compute.py --merge /tmp/parts/*.json   # the recorded run
    python benchmarks/coupons_lambda_compute.py --quick                     # a smoke test (seconds)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import RESULTS_DIR, machine_info, write_results  # noqa: E402

from pulse_lib.book import mean_ci  # noqa: E402
from pulse_lib.coupons import simulator as sim  # noqa: E402
from pulse_lib.coupons.budget import (  # noqa: E402
    BudgetInfeasibleError, BudgetNotBindingWarning, LambdaSearch, PolicyMix, randomise, search_bisection,
)
from pulse_lib.coupons.dataset import CouponDataset, LambdaSampler, lambda_grid  # noqa: E402
from pulse_lib.coupons.pipeline import COST_RANGE  # noqa: E402
from pulse_lib.coupons.rbcq import RBCQ, RBCQConfig  # noqa: E402
from pulse_lib.coupons.reme import REME, REMEConfig, initial_states  # noqa: E402

NAME = "coupons_lambda_compute"
FULL = dict(n_users=2_000, budget=0.8, gen_lengths=[1_000, 3_000], retrain_lengths=[500, 1_000],
            eval_ratio=0.5, retrain_tol=0.125, search_tol=1e-3, truth_users=10_000, curve_users=2_000,
            curve_lambdas=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0], min_tolerance=0.005)
QUICK = dict(n_users=60, budget=0.8, gen_lengths=[10, 20], retrain_lengths=[5, 10], eval_ratio=0.5,
             retrain_tol=0.5, search_tol=0.05, truth_users=200, curve_users=100, curve_lambdas=[0.0, 1.0],
             min_tolerance=0.005)


def truth_of_mix(config: sim.CouponSimConfig, policy_of, mix, n_users: int, seed: int) -> dict:
    """True retention and cost of the per-user randomisation (exact mix of the two policies' values)."""
    high = sim.evaluate_policy(config, policy_of(mix.lam_high), n_users=n_users, seed=seed)
    low = high if mix.p_low == 0 else sim.evaluate_policy(config, policy_of(mix.lam_low), n_users=n_users, seed=seed)
    p = mix.p_low
    return {"true_retention": mix.combine(low.retention, high.retention),
            "true_cost": mix.combine(low.cost, high.cost),
            "retention_se": float(np.hypot(p * low.retention_se, (1 - p) * high.retention_se)),
            "cost_se": float(np.hypot(p * low.cost_se, (1 - p) * high.cost_se))}


def search_and_mix(cost_of, budget: float, tol: float, low: float = 0.0, high: float = 1.0):
    """Bisection + mix; if no λ is estimated within budget, the cheapest policy (λ = high), flagged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetNotBindingWarning)
        try:
            search = search_bisection(cost_of, budget, low, high, tol, *COST_RANGE)
        except BudgetInfeasibleError:
            nan = float("nan")
            return LambdaSearch(high, nan, [(high, nan)], flagged=[(high, nan)]), PolicyMix(high, high, 0.0, nan, nan)
    return search, randomise(search, budget)


def generalized_sweep(data, config, s, seed, rbcq, reme, progress) -> tuple[list[dict], list[dict]]:
    """One λ-generalized R-BCQ trained to each length in turn; a REME and a search per snapshot."""
    grid = lambda_grid()
    sampler = LambdaSampler(data, grid)
    starts = initial_states(data.observations)
    learner = RBCQ(replace(rbcq, lambda_low=0.0, lambda_high=1.0), seed=seed)
    rng = np.random.default_rng(seed)
    rows, curve, done = [], [], 0
    for length in s["gen_lengths"]:
        learner.fit(sampler, length - done, rng, progress=progress)
        done = length
        snapshot = copy.deepcopy(learner)
        n_eval = int(length * s["eval_ratio"])
        evaluator = REME(snapshot.greedy, reme, seed=seed)
        evaluator.fit(sampler, n_eval, np.random.default_rng(10_000 + seed), progress=progress)
        start = time.perf_counter()
        search, mix = search_and_mix(lambda lam: evaluator.estimate(starts, lam).cost, s["budget"], s["search_tol"])
        search_seconds = time.perf_counter() - start
        truth = truth_of_mix(config, snapshot.policy, mix, s["truth_users"], 5000 + seed)
        rows.append({"route": "lambda-generalized", "search_failed": bool(np.isnan(search.cost)), "seed": seed, "length": length, "eval_length": n_eval,
                     "updates": length + n_eval, "probes": len(search.evaluations),
                     "seconds": round(snapshot.train_seconds + evaluator.train_seconds + search_seconds, 3),
                     "lambda": search.lam, "lambda_low": mix.lam_low, "p_low": mix.p_low,
                     "estimated_cost": mix.expected_cost, "flagged": len(search.flagged), **truth})
        print(rows[-1], flush=True)
        # learning curve and REME diagnostics at fixed λ (true values from fewer users)
        for lam in s["curve_lambdas"]:
            policy = snapshot.policy(lam)
            value = sim.evaluate_policy(config, policy, n_users=s["curve_users"], seed=7000 + seed)
            est = evaluator.estimate(starts, lam)
            curve.append({"seed": seed, "length": length, "lambda": lam, "true_cost": value.cost,
                          "true_retention": value.retention, "reme_cost": est.cost,
                          "reme_retention": est.retention,
                          "coupon_on_logged_states": float(np.mean(np.asarray(config.coupon_values)[
                              policy(data.observations)]))})
    return rows, curve


def retraining_sweep(data, config, s, seed, rbcq, reme) -> list[dict]:
    """Bisection with a new R-BCQ + REME per probe, for each length; trainings shared across lengths."""
    starts = initial_states(data.observations)
    learners: dict[float, dict] = {}  # λ -> {"model", "rng", "done", "snapshots": {length: (model, seconds)}}
    remes: dict[tuple[float, int], tuple[REME, float]] = {}

    def snapshot(lam: float, length: int) -> tuple[RBCQ, float]:
        entry = learners.setdefault(lam, {
            "model": RBCQ(replace(rbcq, lambda_low=lam, lambda_high=lam), seed=seed),
            "rng": np.random.default_rng(seed), "done": 0, "snapshots": {},
            "sampler": LambdaSampler(data, np.array([lam], dtype=np.float32))})
        if length not in entry["snapshots"]:
            for target in sorted(x for x in s["retrain_lengths"] if x <= length and x not in entry["snapshots"]):
                entry["model"].fit(entry["sampler"], target - entry["done"], entry["rng"])
                entry["done"] = target
                entry["snapshots"][target] = (copy.deepcopy(entry["model"]), entry["model"].train_seconds)
        return entry["snapshots"][length]

    rows = []
    for length in s["retrain_lengths"]:
        n_eval = int(length * s["eval_ratio"])
        probes: list[float] = []

        def cost_of(lam: float) -> float:
            probes.append(lam)
            model, _ = snapshot(lam, length)
            if (lam, length) not in remes:
                evaluator = REME(model.greedy, reme, seed=seed)
                evaluator.fit(learners[lam]["sampler"], n_eval, np.random.default_rng(10_000 + seed))
                remes[lam, length] = (evaluator, evaluator.train_seconds)
            return remes[lam, length][0].estimate(starts, lam).cost

        start = time.perf_counter()
        search, mix = search_and_mix(cost_of, s["budget"], s["retrain_tol"])
        bookkeeping = time.perf_counter() - start  # includes any training done for the first time here
        seconds = sum(snapshot(lam, length)[1] + remes[lam, length][1] for lam in probes)
        policy_of = lambda lam: snapshot(lam, length)[0].policy(lam)  # noqa: E731
        truth = truth_of_mix(config, policy_of, mix, s["truth_users"], 5000 + seed)
        rows.append({"route": "per-lambda retraining", "search_failed": bool(np.isnan(search.cost)), "seed": seed, "length": length, "eval_length": n_eval,
                     "updates": len(probes) * (length + n_eval), "probes": len(probes),
                     "seconds": round(seconds, 3), "benchmark_seconds": round(bookkeeping, 3),
                     "probed": [round(p, 6) for p in probes], "lambda": search.lam, "lambda_low": mix.lam_low,
                     "p_low": mix.p_low, "estimated_cost": mix.expected_cost, "flagged": len(search.flagged),
                     **truth})
        print(rows[-1], flush=True)
    return rows


def within_budget(row: dict, budget: float) -> bool:
    return bool(row["true_cost"] <= budget + 2 * row["cost_se"])


def equal_quality(routes: list[dict], s: dict, seeds: list[int]) -> dict:
    """Compute each route needs to reach the quality target, per seed, and the ratio."""
    budget = s["budget"]
    retrain = [r for r in routes if r["route"] == "per-lambda retraining"]
    by_length = {}
    for length in s["retrain_lengths"]:
        rows = [r for r in retrain if r["length"] == length]
        if rows and all(within_budget(r, budget) for r in rows):
            by_length[length] = [r["true_retention"] for r in rows]
    if not by_length:  # no length keeps every seed within budget: fall back to all lengths, said so
        by_length = {length: [r["true_retention"] for r in retrain if r["length"] == length]
                     for length in s["retrain_lengths"]}
    best_length = max(by_length, key=lambda k: np.mean(by_length[k]))
    best = np.asarray(by_length[best_length])
    se = float(best.std(ddof=1) / np.sqrt(best.size)) if best.size > 1 else 0.0
    tolerance = max(se, s["min_tolerance"])
    target = float(best.mean() - tolerance)
    per_seed = []
    for seed in seeds:
        entry = {"seed": seed}
        for route, key in (("lambda-generalized", "generalized"), ("per-lambda retraining", "retraining")):
            rows = sorted((r for r in routes if r["route"] == route and r["seed"] == seed), key=lambda r: r["updates"])
            ok = [r for r in rows if within_budget(r, budget) and r["true_retention"] >= target]
            hit = ok[0] if ok else None
            entry[key] = None if hit is None else {k: hit[k] for k in (
                "length", "updates", "seconds", "probes", "true_retention", "true_cost", "retention_se")}
        if entry["generalized"] and entry["retraining"]:
            entry["updates_ratio"] = entry["retraining"]["updates"] / entry["generalized"]["updates"]
            entry["seconds_ratio"] = entry["retraining"]["seconds"] / entry["generalized"]["seconds"]
        per_seed.append(entry)
    ratios = [e["updates_ratio"] for e in per_seed if "updates_ratio" in e]
    sec = [e["seconds_ratio"] for e in per_seed if "seconds_ratio" in e]
    out = {"best_retraining_length": best_length, "best_retraining_retention": float(best.mean()),
           "best_retraining_se": se, "tolerance": tolerance, "target_retention": target,
           "within_budget_rule": "true cost <= budget + 2 Monte-Carlo standard errors",
           "per_seed": per_seed, "seeds_reached_by_both": len(ratios)}
    if len(ratios) >= 2:
        m, h = mean_ci(ratios)
        ms, hs = mean_ci(sec)
        out.update(updates_ratio=m, updates_ratio_half_width=h, seconds_ratio=ms, seconds_ratio_half_width=hs)
    elif ratios:
        out.update(updates_ratio=ratios[0], updates_ratio_half_width=None, seconds_ratio=sec[0],
                   seconds_ratio_half_width=None)
    out["at_least_5x"] = bool(ratios) and out["updates_ratio"] >= 5
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: 0 1 2 (what the book reports); 0 1 with --quick")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--part", action="store_true",
                        help="write <name>_seed<first seed>.json (one of several processes; then --merge)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="combine per-seed result files (runs of --seeds N) into one result")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out_dir)
    torch.set_num_threads(1)
    s = dict(QUICK if args.quick else FULL)
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    config = sim.CouponSimConfig(n_users=s["n_users"])
    data = CouponDataset.from_episodes(sim.simulate(config, rng=np.random.default_rng(0),
                                                    stochastic_policy=sim.logging_policy()))
    rbcq = RBCQConfig(hidden=8, n_heads=2, batch_size=32) if args.quick else RBCQConfig()
    reme = REMEConfig(hidden=8, n_heads=2, batch_size=32) if args.quick else REMEConfig()
    routes: list[dict] = []
    curve: list[dict] = []
    started = time.perf_counter()
    path = None
    settings = {**s, "seeds_planned": seeds, "lambda_grid": "0..1 step 0.05",
                "objective": "undiscounted retention and spend per user-day over the horizon",
                "rbcq_hidden": rbcq.hidden, "rbcq_heads": rbcq.n_heads, "batch_size": rbcq.batch_size}
    for i, seed in enumerate(seeds):
        rows, c = generalized_sweep(data, config, s, seed, rbcq, reme, args.progress)
        routes += rows
        curve += c
        routes += retraining_sweep(data, config, s, seed, rbcq, reme)
        payload = summarise(args.quick, {**settings, "seeds": seeds[: i + 1]}, routes, curve,
                            [machine_info()], time.perf_counter() - started)
        name = NAME + ("_quick" if args.quick else "") + (f"_seed{seeds[0]}" if args.part else "")
        path = write_results(name, payload, args.out_dir)
        eq = payload["equal_quality"]
        print(f"[{time.perf_counter() - started:.0f} s] seeds {seeds[: i + 1]}: equal-quality updates ratio "
              f"{eq.get('updates_ratio')}; wrote {path}", flush=True)
    return path


def summarise(quick: bool, settings: dict, routes: list[dict], curve: list[dict], machines: list[dict],
              wall: float) -> dict:
    """The result file: every run, the learning curve, equal quality and budget use."""
    gen_longest = [r for r in routes
                   if r["route"] == "lambda-generalized" and r["length"] == max(settings["gen_lengths"])]
    return {
        "benchmark": NAME, "quick": quick, "machine": machines[0], "machines": machines,
        "settings": settings, "routes": routes, "learning_curve": curve,
        "equal_quality": equal_quality(routes, settings, settings["seeds"]),
        "budget_use": [{"seed": r["seed"], "length": r["length"], "budget_use": r["true_cost"] / settings["budget"],
                        "true_retention": r["true_retention"], "true_cost": r["true_cost"],
                        "within_budget": within_budget(r, settings["budget"])} for r in gen_longest],
        "benchmark_wall_seconds": round(wall, 1),
    }


def merge(paths: list[Path], out_dir: Path) -> Path:
    """One result from per-seed files run side by side (``--part --seeds N``), seeds in order."""
    import json

    parts = sorted((json.loads(Path(p).read_text()) for p in paths), key=lambda d: d["settings"]["seeds"][0])
    settings = {**parts[0]["settings"], "seeds": [x for d in parts for x in d["settings"]["seeds"]],
                "run_as": f"{len(parts)} processes side by side, one per seed (nice 10)"}
    settings.pop("seeds_planned", None)
    payload = summarise(parts[0]["quick"], settings, [r for d in parts for r in d["routes"]],
                        [c for d in parts for c in d["learning_curve"]], [d["machine"] for d in parts],
                        max(d["benchmark_wall_seconds"] for d in parts))
    path = write_results(NAME + ("_quick" if parts[0]["quick"] else ""), payload, out_dir)
    print(f"merged {len(parts)} parts: equal-quality updates ratio "
          f"{payload['equal_quality'].get('updates_ratio')}; wrote {path}")
    return path


if __name__ == "__main__":
    main()
