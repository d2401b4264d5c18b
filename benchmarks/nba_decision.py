"""Benchmark of the hybrid next-best-action learner: decision and update latency, throughput, memory.

Targets (from the Strange Loop 2019 talk's "realtime at massive scale"; ours, not the talk's
numbers): on one core with 50 actions, 100 context features and 4 action features (400 shared
features), p99 latency < 1 ms for one decision (greedy, UCB, Thompson sampling) and for one
update, and >= 1,000,000 batched greedy decisions per second.

Measured for every exploration: single decisions on a fixed posterior; single decisions
interleaved with single-row updates (learning online: each decision sees the previous
update); batched throughput. Thompson sampling is timed both per decision (exact joint draw)
and per refresh window (one joint draw, ``sample_coefficients``, served greedily).
Decisions read ``A_a^{-1}`` from a float32 copy (the learner's default ``width_dtype``),
and after an update they read the posterior mean through ``y_a = A_a^{-1} x`` from that
copy rather than refreshing every action's mean; ``float32_widths`` records what that
changes against a float64 learner: the relative error of the UCB widths, the largest error
of the mean, and the share of identical greedy, UCB and Thompson decisions.

    OMP_NUM_THREADS=1 flock /tmp/bench.lock python benchmarks/nba_decision.py   # the recorded run
    OMP_NUM_THREADS=1 python benchmarks/nba_decision.py --quick                 # smoke test

Writes ``benchmarks/results/nba_decision.json`` (or ``--out``) atomically. The machine's load
average is recorded before and after: other processes on the cores inflate the tail (p99).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, write_json

from pulse_lib.nba.hybrid import HybridLinearBandit

MODES = {  # name -> (exploration, sample_per)
    "greedy": ("greedy", "decision"),
    "ucb": ("ucb", "decision"),
    "ts_per_decision": ("ts", "decision"),
}
OLD_PER_ACTION_BYTES = 401_632  # the previous learner (kept B_a = sum x z^T, d x k, per action)


def build(d: int, p: int, n_actions: int, exploration: str, sample_per: str, seed: int = 0,
          width_dtype: str = "float32") -> HybridLinearBandit:
    """A learner with ``n_actions`` actions, warmed on random data so no matrix is trivial."""
    rng = np.random.default_rng(seed)
    learner = HybridLinearBandit(d, p, objectives=("target", "progress"), weights=(1.0, 0.3), cost_weight=1.0,
                                 exploration=exploration, alpha=0.3, sample_per=sample_per, seed=seed,
                                 width_dtype=width_dtype)
    for a in range(n_actions):
        learner.add_action(a, np.eye(p)[a % p], cost=0.01 * (a % 5))
    n = 20 * n_actions
    learner.update(rng.standard_normal((n, d)) / np.sqrt(d), np.arange(n) % n_actions, rng.random((n, 2)))
    learner.choose(rng.standard_normal((1, d)))  # compute the lazily cached pieces
    return learner


def pct(values: list[float] | np.ndarray, cpu: list[float] | np.ndarray | None = None) -> dict[str, float]:
    """Wall-clock percentiles, and (``cpu_*``) the same for the thread's CPU time.

    CPU time leaves out the time the thread waited for a core while other processes ran: on
    a shared, loaded machine it is what one dedicated core would show (up to cache effects).
    """
    v = np.asarray(values) * 1e6
    out = {"p50_us": float(np.percentile(v, 50)), "p99_us": float(np.percentile(v, 99)),
           "max_us": float(v.max())}
    if cpu is not None:
        c = np.asarray(cpu) * 1e6
        out.update(cpu_p50_us=float(np.percentile(c, 50)), cpu_p99_us=float(np.percentile(c, 99)))
    return out


def float32_effect(d: int, p: int, n_actions: int, n_contexts: int, n_online: int) -> dict[str, float]:
    """What reading ``A_a^{-1}`` from a float32 copy changes, against the float64 learner.

    Two learners with the same data and seed, one per ``width_dtype``: the relative error
    of the UCB widths decisions use, and the share of identical decisions for UCB and for
    per-decision Thompson sampling (same random stream), on a fixed posterior and while
    learning online (each learner updated with its own choices' rewards).
    """
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((n_contexts, d)) / np.sqrt(d)
    out: dict[str, float] = {}
    for exploration in ("greedy", "ucb", "ts"):
        pair = [build(d, p, n_actions, exploration, "decision", width_dtype=w) for w in ("float32", "float64")]
        if exploration == "ucb":
            exact = pair[1].ucb_width(xs)
            fast = pair[0]._width(pair[0]._check_contexts(xs), exact=False)
            out["ucb_width_max_rel_error"] = float(np.max(np.abs(fast - exact) / exact))
        if exploration == "greedy":  # the mean decisions read through float32 y_a
            exact_mean = pair[0].expected_reward(xs)[0]
            fast_mean = pair[0]._mean_from(xs, pair[0]._apply_Ainv(xs, exact=False))
            out["mean_max_abs_error"] = float(np.max(np.abs(fast_mean - exact_mean)))
            out["mean_scale"] = float(np.std(exact_mean))
        chosen = [np.array([lr.choose(xs[i:i + 1])[0] for i in range(n_contexts)]) for lr in pair]
        out[f"{exploration}_agreement_fixed"] = float(np.mean(chosen[0] == chosen[1]))
        same = 0
        rewards = rng.random((n_online, 2))
        for i in range(n_online):
            a = [lr.choose(xs[i:i + 1]) for lr in pair]
            same += int(a[0][0] == a[1][0])
            for lr, ai in zip(pair, a):
                lr.update(xs[i:i + 1], ai, rewards[i:i + 1])
        out[f"{exploration}_agreement_online"] = same / n_online
    return out


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def bench(quick: bool) -> dict[str, object]:
    d, p, n_actions = (10, 3, 5) if quick else (100, 4, 50)
    n_single = 200 if quick else 5_000
    big_batch = 1_000 if quick else 4_096
    small_batch = 200 if quick else 1_024
    rng = np.random.default_rng(1)
    load_before = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, object] = {}
    for mode, (exploration, sample_per) in MODES.items():
        learner = build(d, p, n_actions, exploration, sample_per)
        xs = rng.standard_normal((n_single, d)) / np.sqrt(d)
        fixed, fixed_cpu = np.empty(n_single), np.empty(n_single)
        for i in range(n_single):
            t0, c0 = clock()
            learner.choose(xs[i:i + 1])
            t1, c1 = clock()
            fixed[i], fixed_cpu[i] = t1 - t0, c1 - c0
        # learning online: decide, observe, update, next decision sees the update
        dec, upd, dec_cpu, upd_cpu = (np.empty(n_single) for _ in range(4))
        rewards = rng.random((n_single, 2))
        for i in range(n_single):
            t0, c0 = clock()
            a = learner.choose(xs[i:i + 1])
            t1, c1 = clock()
            learner.update(xs[i:i + 1], a, rewards[i:i + 1])
            t2, c2 = clock()
            dec[i], upd[i], dec_cpu[i], upd_cpu[i] = t1 - t0, t2 - t1, c1 - c0, c2 - c1
        batch = big_batch if mode == "greedy" else small_batch
        xb = rng.standard_normal((batch, d)) / np.sqrt(d)
        learner.choose(xb)  # warm-up
        reps = []
        for _ in range(3 if quick else 20):
            t0 = time.perf_counter()
            learner.choose(xb)
            reps.append(time.perf_counter() - t0)
        results[mode] = {
            "decision_fixed_posterior": pct(fixed, fixed_cpu),
            "decision_after_update": pct(dec, dec_cpu),
            "update_one_row": pct(upd, upd_cpu),
            "batch_size": batch,
            "decisions_per_s": float(batch / np.median(reps)),
            "decisions_per_s_best": float(batch / np.min(reps)),
        }
        if mode == "ucb":  # UCB keeps the most: the blocks of A_0^{-1} its widths read
            mem = learner.memory_bytes()
    # Thompson sampling per refresh window: one joint draw, then greedy serving from it.
    learner = build(d, p, n_actions, "ts", "batch")
    draw, draw_cpu, serve, serve_cpu = [], [], np.empty(n_single), np.empty(n_single)
    xs = rng.standard_normal((n_single, d)) / np.sqrt(d)
    for j in range(5 if quick else 50):
        learner.update(xs[j:j + 1], np.array([j % n_actions]), rng.random((1, 2)))  # a new posterior
        t0, c0 = clock()
        coef, ids, costs = learner.sample_coefficients()
        t1, c1 = clock()
        draw.append(t1 - t0)
        draw_cpu.append(c1 - c0)
    for i in range(n_single):
        t0, c0 = clock()
        ids[np.argmax(xs[i] @ coef.T - costs)]
        t1, c1 = clock()
        serve[i], serve_cpu[i] = t1 - t0, c1 - c0
    results["ts_per_window"] = {"draw": pct(draw, draw_cpu), "decision_served": pct(serve, serve_cpu)}
    # Adding an action (appends its prior; beta and the other actions are unchanged)
    add_ms = []
    for j in range(5 if quick else 20):
        t0 = time.perf_counter()
        learner.add_action(10_000 + j, np.eye(p)[j % p])
        add_ms.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    learner.refactor()
    refactor_ms = (time.perf_counter() - t0) * 1e3
    return {
        "config": {"context_width": d, "action_feature_width": p, "shared_width": d * p, "n_actions": n_actions,
                   "n_single_decisions": n_single, "quick": quick},
        "targets": {"latency_p99_us": 1000.0, "decisions_per_s": 1_000_000.0},
        "modes": results,
        "memory_bytes": {"shared": mem["shared"], "per_action": mem["per_action"], "total": mem["total"],
                         "cached": mem["cached"],
                         "per_action_previous_learner": OLD_PER_ACTION_BYTES if not quick else None},
        "float32_widths": float32_effect(d, p, n_actions, 200 if quick else 2_000, 100 if quick else 1_000),
        "add_action_ms_median": float(np.median(add_ms)),
        "full_refactor_ms": refactor_ms,
        "load_average_before": load_before,
        "machine": machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "nba_decision.json")
    parser.add_argument("--note", default="", help="how the run was made (e.g. under flock), recorded")
    args = parser.parse_args()
    result = bench(args.quick)
    result["note"] = args.note
    write_json(args.out, result)
    for mode, r in result["modes"].items():
        print(mode, {k: v for k, v in r.items()})
    print(f"memory per action {result['memory_bytes']['per_action']:,} B; load before "
          f"{result['load_average_before']}, after {result['machine']['load_average_1_5_15min']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
