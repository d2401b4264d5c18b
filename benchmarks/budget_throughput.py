"""Simulator throughput: the batched NumPy budget simulator vs gymnasium's SyncVectorEnv.

Both step the same dynamics (:func:`pulse_lib.budget_env.step_batch`) with uniform random
actions; we count environment steps (days) per second of wall time, one thread.

    python benchmarks/budget_throughput.py            # normal mode (about a minute)
    python benchmarks/budget_throughput.py --quick    # tiny sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gymnasium as gym
import numpy as np
import torch
from machine import RESULTS_DIR, machine_info, write_json

from pulse_lib.budget_env import BatchedBudgetEnv, BudgetEnv, synthetic_posterior
from pulse_lib.funnel import TRUE_PARAMS


def batched_steps_per_second(n_envs: int, n_calls: int, seed: int = 0) -> float:
    params = synthetic_posterior(TRUE_PARAMS, 200, 0.05, np.random.default_rng(seed))
    env = BatchedBudgetEnv(params, n_envs)
    actions = np.random.default_rng(seed).uniform(size=(64, n_envs, params.n_channels + 1))
    env.reset(seed=seed)
    start = time.perf_counter()
    for call in range(n_calls):
        _, _, done, _ = env.step(actions[call % 64])
        if done:
            env.reset()
    return n_envs * n_calls / (time.perf_counter() - start)


def sync_vector_steps_per_second(n_envs: int, n_calls: int, seed: int = 0) -> float:
    params = synthetic_posterior(TRUE_PARAMS, 200, 0.05, np.random.default_rng(seed))
    env = gym.vector.SyncVectorEnv([lambda: BudgetEnv(params) for _ in range(n_envs)])
    actions = np.random.default_rng(seed).uniform(size=(64, n_envs, params.n_channels + 1)).astype(np.float32)
    env.reset(seed=seed)
    start = time.perf_counter()
    for call in range(n_calls):
        env.step(actions[call % 64])  # autoreset: the step after the last day resets that env
    elapsed = time.perf_counter() - start
    env.close()
    return n_envs * n_calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "budget_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [16, 64] if args.quick else [64, 256, 1024, 4096]
    repeats = 1 if args.quick else 3
    rows = []
    for n_envs in sizes:
        calls_batched = 30 if args.quick else max(60, 600_000 // n_envs)
        calls_sync = 5 if args.quick else max(30, 20_000 // n_envs)
        # best of `repeats`: other processes share the cores, the best run is the least disturbed
        batched = max(batched_steps_per_second(n_envs, calls_batched, seed=r) for r in range(repeats))
        sync = max(sync_vector_steps_per_second(n_envs, calls_sync, seed=r) for r in range(repeats))
        rows.append({"n_envs": n_envs, "batched_steps_per_s": batched, "sync_vector_steps_per_s": sync,
                     "speedup": batched / sync})
        print(f"n_envs={n_envs:5d}  batched {batched:12,.0f}/s  SyncVectorEnv {sync:10,.0f}/s  x{batched / sync:6.1f}")
    result = {
        "benchmark": "budget simulator throughput (env steps per second)",
        "mode": "quick" if args.quick else "normal",
        "machine": machine_info(),
        "method": "uniform random actions; best of repeats; steps = days x parallel episodes",
        "measurements": {f"n_envs_{r['n_envs']}": r for r in rows},
        "speedup": max(r["speedup"] for r in rows),
    }
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
