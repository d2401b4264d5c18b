"""Scoring throughput: a trained PulseRL policy deciding for 1,000,000 users on one core.

Target: at least 300,000 users/s. Times a forward pass of the Q-network over all users in
batches and the greedy decision, for the network sizes the book trains (64x64 in the ci
profile, 256x256 as in the paper's scale). Writes ``benchmarks/results/pulserl_scoring.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import pulserl_common as common

TARGET_USERS_PER_S = 300_000


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    common.setup_one_thread()
    from pulse_lib.pulserl import agents as A
    from pulse_lib.pulserl import simulator as S

    n_users, repeats = (20_000, 1) if args.quick else (1_000_000, 3)
    sim = S.PulseSimulator()
    rng = np.random.default_rng(0)
    obs = sim.observe(sim.sample_users(n_users, rng))
    results = {}
    for hidden in ((64, 64), (256, 256)):
        agent = A.TorchCQL(A.CQLConfig(hidden=hidden), seed=0)
        agent.fit(obs[:512], rng.integers(0, 2, 512), np.zeros(512), obs[:512], np.zeros(512), n_steps=3)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            decisions = agent.policy(obs)
            times.append(time.perf_counter() - start)
        best = min(times)
        rate = n_users / best
        results["x".join(map(str, hidden))] = {
            "users": n_users, "best_seconds": round(best, 4), "users_per_s": round(rate),
            "meets_target": bool(rate >= TARGET_USERS_PER_S), "send_share": round(float(decisions.mean()), 4)}
        print(hidden, results["x".join(map(str, hidden))], flush=True)
    payload = {"benchmark": "pulserl_scoring", "quick": args.quick, "machine": common.machine_info(),
               "target_users_per_s": TARGET_USERS_PER_S, "batch": 65_536, "results": results}
    return common.write_results("pulserl_scoring", payload, args.out_dir)


if __name__ == "__main__":
    print(main())
