"""Memory of the PulseRL transition table: Parquet on disk and pandas / d3rlpy in memory.

Reported per million transitions (from a table of the stated size). Writes
``benchmarks/results/pulserl_memory.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pulserl_common as common


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    from pulse_lib.pulserl import agents as A
    from pulse_lib.pulserl import data as D
    from pulse_lib.pulserl import simulator as S

    A.quiet_d3rlpy()
    n_users = 100 if args.quick else 10_000
    table = S.generate_logged_dataset(n_users, seed=0)
    n = len(table)
    with tempfile.TemporaryDirectory() as tmp:
        path = D.write_parquet(table, Path(tmp) / "t.parquet")
        parquet_bytes = path.stat().st_size
        json_bytes = sum(p.stat().st_size for p in D.write_release(table.iloc[: min(n, 20_000)], Path(tmp) / "rel"))
        json_rows = min(n, 20_000)
    pandas_bytes = int(table.memory_usage(deep=True).sum())
    dataset = D.to_mdp_dataset(table)
    d3_bytes = sum(ep.observations.nbytes + ep.actions.nbytes + ep.rewards.nbytes for ep in dataset.episodes)
    per_million = 1e6 / n
    results = {
        "transitions": n, "columns": int(table.shape[1]),
        "parquet_zstd_mb_per_million": round(parquet_bytes * per_million / 1e6, 2),
        "rllib_json_mb_per_million": round(json_bytes * 1e6 / json_rows / 1e6, 2),
        "pandas_in_memory_mb_per_million": round(pandas_bytes * per_million / 1e6, 2),
        "d3rlpy_arrays_mb_per_million": round(d3_bytes * per_million / 1e6, 2),
    }
    print(results)
    payload = {"benchmark": "pulserl_memory", "quick": args.quick, "machine": common.machine_info(), "results": results}
    return common.write_results("pulserl_memory", payload, args.out_dir)


if __name__ == "__main__":
    print(main())
