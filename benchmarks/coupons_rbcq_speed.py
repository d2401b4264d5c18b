"""R-BCQ training speed (steps/s) and the memory of the λ-generalized dataset.

Memory: the explicit L-fold copy of the paper is measured on a slice and scaled (it grows linearly with
the number of transitions); the sampler's extra memory is one λ per minibatch row. Writes
``results/coupons_rbcq_speed.json``.

    python benchmarks/coupons_rbcq_speed.py            # the recorded run (about a minute, one thread)
    python benchmarks/coupons_rbcq_speed.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import RESULTS_DIR, machine_info, write_results

from pulse_lib.coupons import simulator as sim
from pulse_lib.coupons.dataset import (
    CouponDataset,
    LambdaSampler,
    lambda_grid,
    materialize,
)
from pulse_lib.coupons.rbcq import RBCQ, RBCQConfig
from pulse_lib.coupons.reme import REME, REMEConfig

NAME = "coupons_rbcq_speed"


def slice_dataset(data: CouponDataset, n: int) -> CouponDataset:
    fields = ("observations", "actions", "rewards", "costs", "next_observations", "terminals",
              "propensities", "behaviour_probs")
    return CouponDataset(*(None if getattr(data, f) is None else getattr(data, f)[:n] for f in fields))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n_users, n_steps, repeats = (50, 30, 1) if args.quick else (10_000, 1_000, 3)
    config = sim.CouponSimConfig(n_users=n_users)
    data = CouponDataset.from_episodes(sim.simulate(config, rng=np.random.default_rng(0),
                                                    stochastic_policy=sim.logging_policy()))
    grid = lambda_grid()
    sampler = LambdaSampler(data, grid)
    speed = []
    for heads in (1, 10):
        model = RBCQ(RBCQConfig(n_heads=heads), seed=0)
        evaluator = REME(model.greedy, REMEConfig(n_heads=heads), seed=0)
        rng = np.random.default_rng(0)
        model.fit(sampler, 20, rng)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model.fit(sampler, n_steps, rng)
            rbcq_rate = n_steps / (time.perf_counter() - start)
            start = time.perf_counter()
            evaluator.fit(sampler, n_steps, rng)
            reme_rate = n_steps / (time.perf_counter() - start)
            speed.append({"heads": heads, "rbcq_steps_per_s": rbcq_rate, "reme_steps_per_s": reme_rate})
            print(speed[-1])
    probe = slice_dataset(data, min(2_000, len(data)))
    explicit = sum(a.nbytes for a in materialize(probe, grid).values())
    memory = {
        "transitions": len(data), "lambda_values": int(grid.size),
        "logged_bytes": data.nbytes(),
        "explicit_copy_bytes_measured": explicit, "explicit_copy_measured_on": len(probe),
        "explicit_copy_bytes_scaled": int(explicit / len(probe) * len(data)),
        "sampler_extra_bytes_per_batch": sampler.extra_bytes(RBCQConfig().batch_size),
    }
    memory["explicit_over_logged"] = memory["explicit_copy_bytes_scaled"] / memory["logged_bytes"]
    print(memory)
    payload = {"benchmark": NAME, "quick": args.quick, "machine": machine_info(),
               "settings": {"n_users": n_users, "n_steps": n_steps, "repeats": repeats,
                            "batch_size": RBCQConfig().batch_size, "hidden": RBCQConfig().hidden},
               "speed": speed, "memory": memory}
    path = write_results(NAME + ("_quick" if args.quick else ""), payload, args.out_dir)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
