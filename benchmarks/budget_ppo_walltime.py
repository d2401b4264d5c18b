"""PPO wall time on CPU to reach a given return on the budget simulator.

PPO learns pacing from scratch here (``pace_prior=False``, initial log sd -0.5): with the pace
prior its first rollouts already start near the target, which would measure nothing.

Target: the training episodes' mean return (stochastic policy) reaches ``target_fraction`` (default 0.98) of
what the plug-in planner with the simulator's own posterior (the robust plan) gets on the same
kind of episodes. Posterior: the synthetic stand-in (truth + noise), so the benchmark needs no
CmdStan. One torch thread.

    python benchmarks/budget_ppo_walltime.py            # normal mode (a few minutes)
    python benchmarks/budget_ppo_walltime.py --quick    # tiny run, for the smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from machine import RESULTS_DIR, machine_info, write_json

from pulse_lib.budget_env import (
    BatchedBudgetEnv,
    planner_policy,
    run_policy,
    synthetic_posterior,
)
from pulse_lib.funnel import DATASET_VERSION, TRUE_PARAMS
from pulse_lib.ppo import PPOConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "budget_ppo_walltime.json")
    parser.add_argument("--target-fraction", type=float, default=0.98)
    args = parser.parse_args()
    torch.set_num_threads(1)
    posterior = synthetic_posterior(TRUE_PARAMS, 200, 0.05, np.random.default_rng(0))
    n_envs = 64
    reference_env = BatchedBudgetEnv(posterior, 1024)
    reference = float(run_policy(reference_env, planner_policy(posterior), seed=123)["returns"].mean())
    target = args.target_fraction * reference
    seeds = (0,) if args.quick else (0, 1, 2)
    total_steps = 4_000 if args.quick else 400_000
    runs = []
    curves: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        cfg = PPOConfig(total_steps=total_steps, n_envs=n_envs, learning_rate=1e-3, seed=seed,
                        pace_prior=False, init_log_std=-0.5)
        history = train(BatchedBudgetEnv(posterior, n_envs), cfg).history
        hit = next((h for h in history if h["mean_return"] >= target), None)
        runs.append({
            "seed": seed,
            "seconds_to_target": None if hit is None else hit["wall_seconds"],
            "env_steps_to_target": None if hit is None else hit["env_steps"],
            "total_seconds": history[-1]["wall_seconds"],
            "total_env_steps": history[-1]["env_steps"],
            "final_mean_return": history[-1]["mean_return"],
        })
        curves[f"seed_{seed}"] = {key: [h[key] for h in history] for key in ("env_steps", "wall_seconds", "mean_return")}
        print(runs[-1])
    result = {
        "benchmark": "PPO wall time to a target training return (CPU, one thread)",
        "mode": "quick" if args.quick else "normal",
        "machine": machine_info(),
        "model_version": DATASET_VERSION,  # the funnel model (pulse_lib.funnel) measured
        "config": {"n_envs": n_envs, "learning_rate": 1e-3, "total_steps": total_steps, "device": "cpu",
                   "pace_prior": False, "init_log_std": -0.5},
        "reference_return": reference,
        "target_fraction": args.target_fraction,
        "target_return": target,
        "runs": {f"seed_{run['seed']}": run for run in runs},
        "curves": curves,
    }
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
