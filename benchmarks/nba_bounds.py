"""When does each lower bound say yes? Approval rate and coverage against the log size.

On chapter 13's world (journey simulator, stages frozen; current policy = the historical rule)
each replication draws a fresh log of the current policy of each size and computes every
estimate and lower bound (delta = 0.05) for two candidates:

- ``learned (ε = 0.1)``, truly about twice as good as the current policy: the *approval rate*
  is how often its lower bound beats the current policy's on-policy mean reward on the log
  (the deploy rule of chapter 13);
- ``sms blast``, truly worse, with importance weights up to ~54: the hard case for coverage.

Coverage (lower bound <= true value) is reported with Clopper–Pearson 95% intervals. The
bootstrap bounds are left out (their resampling dominates the cost at large logs; chapter 13
measures their coverage at its own log size).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/nba_bounds.py            # the recorded run
    OMP_NUM_THREADS=1 python benchmarks/nba_bounds.py --quick               # smoke test

Writes ``benchmarks/results/nba_bounds.json`` (or ``--out``) atomically.
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

from pulse_lib.nba.bounds import clopper_pearson
from pulse_lib.nba.experiments import bound_replication, bounds_world

CANDIDATES = ["learned (ε = 0.1)", "sms blast (100% sms_discount, rarely logged)"]
BETTER = CANDIDATES[0]


def bench(sizes: list[int], reps: int, seed: int = 2024) -> dict[str, object]:
    world = bounds_world()
    rng = np.random.default_rng(seed)
    records = []
    t0 = time.perf_counter()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):  # type: ignore[no-redef]
            return x
    for rep in tqdm(range(reps), desc="replications"):
        for n in sizes:
            for rec in bound_replication(world, n, rng, names=CANDIDATES):
                rec["rep"] = rep
                records.append(rec)
    seconds = time.perf_counter() - t0
    df = pd.DataFrame(records)
    df = df[df.method != "estimate"].assign(bound=lambda d: d.estimator + " + " + d.method)
    df["holds"] = df.value <= df.truth
    df["approves"] = df.value > df.current_on_policy
    bounds = sorted(df.bound.unique())
    per_size: dict[str, dict[str, object]] = {}
    for bound in bounds:
        rows = {}
        for n in sizes:
            d = df[(df.bound == bound) & (df.n_logs == n)]
            entry: dict[str, object] = {}
            for cand in CANDIDATES:
                c = d[d.candidate == cand]
                k, m = int(c.holds.sum()), len(c)
                entry[cand] = {"coverage": k / m, "coverage_cp95": clopper_pearson(k, m),
                               "mean_gap": float((c.truth - c.value).mean())}
            b = d[d.candidate == BETTER]
            k, m = int(b.approves.sum()), len(b)
            entry["approval_rate"] = k / m
            entry["approval_cp95"] = clopper_pearson(k, m)
            rows[str(n)] = entry
        approving = [n for n in sizes if rows[str(n)]["approval_rate"] >= 0.5]
        per_size[bound] = {"by_size": rows, "first_size_approving_half": approving[0] if approving else None}
    return {
        "config": {"sizes": sizes, "replications": reps, "delta": 0.05, "candidates": CANDIDATES,
                   "better_candidate": BETTER, "seed": seed,
                   "approval_rule": "lower bound > the current policy's mean reward on the same log",
                   "true_values": {c: world.truth[c] for c in CANDIDATES},
                   "true_value_current": world.v_current,
                   "max_weight": {c: world.max_weight[c] for c in CANDIDATES}},
        "bounds": per_size,
        "seconds": seconds,
        "machine": machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few replications (smoke test)")
    parser.add_argument("--reps", type=int, default=1_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 2_000, 5_000, 10_000])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "nba_bounds.json")
    args = parser.parse_args()
    sizes, reps = ([500, 1_000], 3) if args.quick else (args.sizes, args.reps)
    result = bench(sizes, reps)
    result["config"]["quick"] = args.quick
    write_json(args.out, result)
    for bound, r in result["bounds"].items():
        rates = " ".join(f"{r['by_size'][str(n)]['approval_rate']:.2f}" for n in sizes)
        print(f"{bound:>16}: approval by size {rates}; first >= 50%: {r['first_size_approving_half']}")
    print(f"{result['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
