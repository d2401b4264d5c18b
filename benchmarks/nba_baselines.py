"""Vowpal Wabbit and weighted warm starts beside the hybrid learner (chapter 12).

1. Journey simulator (chapter 12's ``ci`` world: 5,000 users, 10,000 skewed logged
   decisions, 300 online rounds of 100 users, one action launched and one retired): total
   regret over the same seeds of
   - ``hybrid`` (warm start on the logs as they are, then Thompson sampling),
   - ``hybrid, IPS-weighted warm start`` (rows weighted by ``min(1/mu, 20)``, mean 1),
   - ``offline-only`` with either warm start (greedy, never updated),
   - ``VW`` (``--cb_explore_adf --epsilon 0.05 -q ua``) warm-started on the same logs with
     their propensities, and ``VW, online only``.
2. Decision latency of one decision on that world (12 actions, 10 context features), p50/p99,
   both learners in the same process, after the same warm start.
3. Open Bandit sample (random logging policy, campaign ``all``, 10,000 impressions): both
   learners fit on the first half (by time) and their greedy policies evaluated on the second
   half by IPS and SNIPS (the logging propensities are known: 1/80), with 95% intervals.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/nba_baselines.py          # the recorded run
    OMP_NUM_THREADS=1 python benchmarks/nba_baselines.py --quick             # smoke test

Writes ``benchmarks/results/nba_baselines.json`` (or ``--out``) atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, write_json

from pulse_lib.book import mean_ci
from pulse_lib.nba.experiments import make_learner, run_online, run_strategy
from pulse_lib.nba.hybrid import HybridLinearBandit
from pulse_lib.nba.simulator import (
    JourneySimulator,
    LoggingPolicy,
    ObjectiveWeights,
    default_catalog,
    simulate_logs,
)
from pulse_lib.nba.vw import DEFAULT_ARGS, VWContextualBandit
from pulse_lib.ope import ips, snips


def make_vw(sim: JourneySimulator, weights: ObjectiveWeights, round_: int, seed: int) -> VWContextualBandit:
    vw = VWContextualBandit(sim.context_width, weights.learned, weights.cost, seed=seed)
    for a in np.flatnonzero(sim.catalog.live_mask(round_)):
        vw.add_action(int(a), sim.catalog.features[a], sim.catalog.costs[a])
    return vw


def simulator_part(quick: bool, seeds: list[int]) -> dict[str, object]:
    n_users, log_rounds, batch, online_rounds = (1_000, 20, 50, 40) if quick else (5_000, 100, 100, 300)
    start = log_rounds
    catalog = default_catalog(new_action_round=start + online_rounds // 3,
                              retire_round=start + 2 * online_rounds // 3)
    sim = JourneySimulator(catalog, n_users=n_users, seed=0)
    weights = ObjectiveWeights(target=1.0, progress=0.3, cost=1.0)
    logging_policy = LoggingPolicy(catalog)
    logs = simulate_logs(sim, logging_policy, log_rounds, batch, np.random.default_rng(1000))
    keep = np.isin(logs.actions, np.flatnonzero(catalog.live_mask(start)))
    regret: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}

    def record(name: str, res, t0: float) -> None:
        regret.setdefault(name, []).append(float(res.regret.sum() * batch))
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

    common = {"n_rounds": online_rounds, "batch": batch, "start_round": start, "exploration": "ts", "alpha": 0.25}
    for seed in seeds:
        for name, strategy, weighting in (("hybrid", "hybrid", "none"),
                                          ("hybrid, IPS-weighted warm start", "hybrid", "ips"),
                                          ("offline-only", "offline-only", "none"),
                                          ("offline-only, IPS-weighted", "offline-only", "ips")):
            t0 = time.perf_counter()
            res = run_strategy(strategy, sim, logs, logging_policy, weights, seed=seed, warm_weighting=weighting,
                               **common)
            record(name, res, t0)
        for name, warm in (("VW", True), ("VW, online only", False)):
            t0 = time.perf_counter()
            sim.reset()
            vw = make_vw(sim, weights, start, seed)
            if warm:
                vw.warm_start(logs.contexts[keep], logs.actions[keep], logs.outcomes.signals()[keep],
                              logs.propensities[keep], available=catalog.live_mask(start))
            res = run_online(sim, vw, weights, online_rounds, batch, np.random.default_rng(seed), start)
            vw.finish()
            record(name, res, t0)
    # single-decision latency, both warm-started on the same logs
    hybrid = make_learner(sim, weights, "ts", 0.25, round_=start)
    hybrid.warm_start(logs.contexts[keep], logs.actions[keep], logs.outcomes.signals()[keep], logs.propensities[keep])
    vw = make_vw(sim, weights, start, 0)
    vw.warm_start(logs.contexts[keep], logs.actions[keep], logs.outcomes.signals()[keep], logs.propensities[keep],
                  available=catalog.live_mask(start))
    x = sim.contexts(np.arange(min(n_users, 2_000)))
    latency = {}
    for name, learner in (("hybrid (Thompson, per decision)", hybrid), ("VW", vw)):
        lat = np.empty(x.shape[0])
        for i in range(x.shape[0]):
            t0 = time.perf_counter()
            learner.choose(x[i:i + 1])
            lat[i] = time.perf_counter() - t0
        latency[name] = {"p50_us": float(np.percentile(lat, 50) * 1e6), "p99_us": float(np.percentile(lat, 99) * 1e6)}
    vw.finish()
    summary = {}
    for name, values in regret.items():
        mean, half = mean_ci(values)
        summary[name] = {"regret_mean": mean, "regret_ci95_half": half, "per_seed": values,
                         "seconds_total": seconds[name]}
    return {"config": {"n_users": n_users, "logged_decisions": len(logs), "online_rounds": online_rounds,
                       "batch": batch, "seeds": seeds, "vw_args": DEFAULT_ARGS, "hybrid": "Thompson sampling, alpha 0.25",
                       "ips_weight_clip": 20.0},
            "regret": summary, "decision_latency": latency}


def obd_part(quick: bool) -> dict[str, object] | None:
    try:
        from pulse_lib.nba.obd import load_obd, obd_dir
    except ImportError:  # pragma: no cover
        return None
    try:
        df = load_obd("random", "all")
        items = pd.read_csv(obd_dir() / "random" / "all" / "item_context.csv", index_col=0).sort_values("item_id")
    except Exception as err:  # noqa: BLE001 - obp missing: the part is skipped and says why
        return {"skipped": str(err)}
    if quick:
        df = df.iloc[:1_000]
    users = pd.get_dummies(df[[f"user_feature_{i}" for i in range(4)]].astype(str)).to_numpy(float)
    pos = np.eye(3)[df.position.to_numpy()]
    x = np.column_stack([np.ones(len(df)), users, pos])
    feats = pd.get_dummies(items[["item_feature_1", "item_feature_3"]].astype(str)).to_numpy(float)
    f0 = items["item_feature_0"].to_numpy(float)
    phi = np.column_stack([feats, (f0 - f0.mean()) / f0.std()])
    a = df.item_id.to_numpy()
    y = df.click.to_numpy(float)
    mu = df.propensity_score.to_numpy(float)
    half = len(df) // 2
    tr, te = slice(0, half), slice(half, None)
    out: dict[str, object] = {"train_rows": half, "test_rows": len(df) - half, "context_width": x.shape[1],
                              "action_feature_width": phi.shape[1], "n_actions": phi.shape[0],
                              "on_policy_click_rate_random_test": float(y[te].mean())}
    hybrid = HybridLinearBandit(x.shape[1], phi.shape[1], exploration="greedy", prior_precision=1.0,
                                action_prior_precision=10.0)
    for i in range(phi.shape[0]):
        hybrid.add_action(i, phi[i])
    t0 = time.perf_counter()
    hybrid.warm_start(x[tr], a[tr], y[tr], mu[tr])
    fit_s = {"hybrid": time.perf_counter() - t0}
    picks = {"hybrid (greedy)": hybrid.expected_reward(x[te])[1][np.argmax(hybrid.expected_reward(x[te])[0], axis=1)]}
    vw = VWContextualBandit(x.shape[1], [1.0], 0.0, seed=0)
    for i in range(phi.shape[0]):
        vw.add_action(i, phi[i])
    t0 = time.perf_counter()
    vw.warm_start(x[tr], a[tr], y[tr], mu[tr])
    fit_s["VW"] = time.perf_counter() - t0
    scores, ids = vw.greedy_scores(x[te])
    picks["VW (greedy)"] = ids[np.argmax(scores, axis=1)]
    vw.finish()
    values = {}
    for name, pick in picks.items():
        target = (pick == a[te]).astype(float)
        e_ips, e_sn = ips(y[te], target, mu[te]), snips(y[te], target, mu[te])
        values[name] = {"IPS": e_ips.value, "IPS_ci95": list(e_ips.ci()), "SNIPS": e_sn.value,
                        "matches": int(target.sum()), "distinct_items_chosen": int(np.unique(pick).size)}
    out["values"] = values
    out["fit_seconds"] = fit_s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "nba_baselines.json")
    args = parser.parse_args()
    seeds = [0, 1] if args.quick else list(range(args.seeds))
    result = {"simulator": simulator_part(args.quick, seeds), "open_bandit": obd_part(args.quick),
              "quick": args.quick, "machine": machine_info()}
    write_json(args.out, result)
    for name, r in result["simulator"]["regret"].items():
        print(f"{name:>34}: regret {r['regret_mean']:.0f} ± {r['regret_ci95_half']:.0f}")
    print(result["simulator"]["decision_latency"])
    print(result["open_bandit"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
