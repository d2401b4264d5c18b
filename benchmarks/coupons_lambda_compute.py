"""Compute to reach a budget-satisfying coupon policy: one λ-generalized training vs per-λ retraining.

Both routes train R-BCQ and REME with the same sizes and steps per training; the λ-generalized route
trains once and scans the λ grid with REME, per-λ retraining bisects on λ with a new R-BCQ + REME per
probe. Every chosen policy is checked in the simulator (true cost and retention). Writes
``results/coupons_lambda_compute.json``.

    python benchmarks/coupons_lambda_compute.py            # the recorded run (a few minutes, one thread)
    python benchmarks/coupons_lambda_compute.py --quick    # a smoke test (seconds)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import RESULTS_DIR, machine_info, write_results  # noqa: E402

from pulse_lib.coupons import simulator as sim  # noqa: E402
from pulse_lib.coupons.budget import BudgetNotBindingWarning  # noqa: E402
from pulse_lib.coupons.dataset import CouponDataset, lambda_grid  # noqa: E402
from pulse_lib.coupons.pipeline import lambda_generalized, per_lambda_retraining  # noqa: E402
from pulse_lib.coupons.rbcq import RBCQConfig  # noqa: E402
from pulse_lib.coupons.reme import REMEConfig  # noqa: E402

NAME = "coupons_lambda_compute"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: 0 1 2 (what the book reports); 0 with --quick")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = (dict(n_users=100, n_steps=20, n_eval_steps=20, tol=0.5, truth_users=500, budget=0.8)
                if args.quick else
                dict(n_users=2_000, n_steps=1_500, n_eval_steps=1_000, tol=0.05, truth_users=20_000, budget=0.8))
    config = sim.CouponSimConfig(n_users=settings["n_users"])
    data = CouponDataset.from_episodes(sim.simulate(config, rng=np.random.default_rng(0),
                                                    stochastic_policy=sim.logging_policy()))
    rbcq, reme = RBCQConfig(), REMEConfig()
    routes = []
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    for seed in args.seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BudgetNotBindingWarning)
            probes: list[float] = []
            gen = lambda_generalized(data, lambda_grid(), settings["budget"], n_steps=settings["n_steps"],
                                     n_eval_steps=settings["n_eval_steps"], seed=seed, rbcq=rbcq, reme=reme)
            per = per_lambda_retraining(data, settings["budget"], n_steps=settings["n_steps"],
                                        n_eval_steps=settings["n_eval_steps"], seed=seed, tol=settings["tol"],
                                        rbcq=rbcq, reme=reme, on_probe=probes.append)
        for route, run, trainings in (("lambda-generalized", gen, 1), ("per-lambda retraining", per, len(probes))):
            truth = sim.evaluate_policy(config, run.learner.policy(run.search.lam), n_users=settings["truth_users"],
                                        seed=5000 + seed)
            routes.append({"route": route, "seed": seed, "trainings": trainings, "updates": run.updates,
                           "seconds": round(run.seconds, 3), "lambda": run.search.lam,
                           "estimated_cost": run.search.cost, "true_cost": truth.cost,
                           "true_retention": truth.retention, "retention_se": truth.retention_se,
                           "within_budget": bool(truth.cost <= settings["budget"])})
            print(routes[-1])
    gen_rows = [r for r in routes if r["route"] == "lambda-generalized"]
    per_rows = [r for r in routes if r["route"] != "lambda-generalized"]
    payload = {
        "benchmark": NAME, "quick": args.quick, "machine": machine_info(),
        "settings": {**settings, "seeds": args.seeds, "lambda_grid": "0..1 step 0.05",
                     "rbcq_hidden": rbcq.hidden, "rbcq_heads": rbcq.n_heads, "batch_size": rbcq.batch_size},
        "routes": routes,
        "updates_ratio": float(np.mean([p["updates"] for p in per_rows]) / np.mean([g["updates"] for g in gen_rows])),
        "seconds_ratio": float(np.mean([p["seconds"] for p in per_rows]) / np.mean([g["seconds"] for g in gen_rows])),
        "retention_difference": float(np.mean([g["true_retention"] for g in gen_rows])
                                      - np.mean([p["true_retention"] for p in per_rows])),
    }
    path = write_results(NAME + ("_quick" if args.quick else ""), payload, args.out_dir)
    print(f"wrote {path}: updates ratio {payload['updates_ratio']:.2f}, seconds ratio {payload['seconds_ratio']:.2f}")
    return path


if __name__ == "__main__":
    main()
