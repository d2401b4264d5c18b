"""Benchmark: fit time and ESS/s of the channel response model per backend (CmdStan, PyMC, nutpie).

Each backend runs in a fresh subprocess with empty compile caches (a new Stan build folder, a
new PyTensor compile directory), so its first fit includes compilation, as a reader's first run
on Colab would. It then fits the chapter's data (the shipped funnel, 730 days x 4 channels) and
a 10x larger table (``generate_funnel`` with 10x the days). For each fit it records wall time,
compile time, sampling time, the smallest bulk ESS over the model's parameters and ESS/s.

    python benchmarks/channel_model_backends.py            # normal mode (about 10 CPU minutes)
    python benchmarks/channel_model_backends.py --quick    # tiny sizes, CmdStan only, warm caches

Writes ``benchmarks/results/channel_model_backends.json`` (``..._quick.json`` with ``--quick``;
``--out`` to change) atomically, with
the machine it ran on (cores, CPU model, load average, torch threads, date).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import RESULTS_DIR, machine_info, write_json

NAME = "channel_model_backends"




def _model_version() -> int:
    from pulse_lib.funnel import DATASET_VERSION

    return DATASET_VERSION


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (CmdStan samples in a child)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def worker(backend: str, sizes: list[int], draws: int, chains: int, seed: int) -> list[dict[str, Any]]:
    """Fit each table size in turn in this process; the first fit pays for compilation."""
    import logging

    import numpy as np

    from pulse_lib import bayes_compat as bc
    from pulse_lib import channel_model as cm
    from pulse_lib.funnel import generate_funnel

    logging.getLogger("pymc").setLevel(logging.ERROR)
    out = []
    for n_days in sizes:
        frame = generate_funnel(n_days=n_days)
        cpu0 = _cpu_seconds()
        start = time.perf_counter()
        idata = cm.fit_channel_model(frame, backend=backend, draws=draws, chains=chains, seed=seed)
        wall = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu0
        summary = bc.summary(idata, var_names=list(cm.SUMMARY_VARS), kind="diagnostics")
        attrs = idata.posterior.attrs
        sampling = float(attrs["pulse_sampling_seconds"])
        ess_min = float(summary["ess_bulk"].min())
        out.append({
            "backend": backend, "rows": len(frame), "n_days": n_days, "draws": draws, "chains": chains,
            "wall_seconds": wall, "cpu_seconds": cpu,
            # PyMC compiles inside pm.sample: no separate compile time (null), sampling includes it.
            "compile_seconds": None if np.isnan(attrs["pulse_compile_seconds"]) else float(attrs["pulse_compile_seconds"]),
            "sampling_seconds": sampling,
            "ess_bulk_min": ess_min, "ess_bulk_min_per_second_sampling": ess_min / sampling,
            "ess_bulk_min_per_second_wall": ess_min / wall,
            "r_hat_max": None if chains < 2 else float(summary["r_hat"].max()),  # R-hat needs 2+ chains
            "divergences": int(idata.sample_stats["diverging"].sum()),
        })
    return out


def run_backend(
    backend: str, sizes: list[int], draws: int, chains: int, seed: int, cold: bool = True
) -> list[dict[str, Any]]:
    """Run :func:`worker` in a fresh subprocess, with empty compile caches when ``cold``."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{backend}-") as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1", CI="1")
        if cold:
            env.update(PULSE_STAN_CACHE=str(Path(tmp) / "stan"), PYTENSOR_FLAGS=f"compiledir={Path(tmp) / 'pytensor'}")
        cmd = [sys.executable, __file__, "--worker", backend, "--sizes", *map(str, sizes),
               "--draws", str(draws), "--chains", str(chains), "--seed", str(seed)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{backend} worker failed:\n{proc.stderr[-3000:]}")
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        for row in rows:
            row["subprocess_total_wall_seconds"] = time.perf_counter() - start
        print(f"{backend}: " + "; ".join(f"{r['rows']} rows {r['wall_seconds']:.0f} s" for r in rows), flush=True)
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, CmdStan only: a smoke test")
    parser.add_argument("--backends", nargs="+", default=None, choices=["cmdstan", "pymc", "nutpie"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--chains", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.sizes, args.draws, args.chains, args.seed)))
        return 0

    
    if args.quick:
        sizes, draws, chains = [20, 200], args.draws or 100, args.chains or 1
        backends = args.backends or ["cmdstan"]
    else:
        sizes, draws, chains = [730, 7300], args.draws or 300, args.chains or 2
        backends = args.backends or ["cmdstan", "pymc", "nutpie"]
    info = machine_info()
    results = []
    for backend in backends:
        results += run_backend(backend, sizes, draws, chains, args.seed, cold=not args.quick)
    payload = {
        "benchmark": NAME, "mode": "quick" if args.quick else "normal", "machine": info,
        "model_version": _model_version(),  # the funnel model (pulse_lib.funnel) measured
        "load_average_1min_at_end": os.getloadavg()[0],
        "settings": {"sizes_days": sizes, "channels": 4, "draws": draws, "chains": chains, "tune": draws,
                     "seed": args.seed, "chains_in_parallel": 1, "cold_compile_caches": not args.quick},
        "note": ("Each backend ran in a fresh process" + (
            " with empty compile caches: its first fit includes compilation." if not args.quick else
            " with warm compile caches.") + " Wall times depend on other load on the machine "
            "(see the load averages); cpu_seconds counts this process and its children."),
        "results": results,
    }
    # A quick run never overwrites the normal run's results, which the book displays.
    out = args.out or RESULTS_DIR / (f"{NAME}_quick.json" if args.quick else f"{NAME}.json")
    write_json(out, payload)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
