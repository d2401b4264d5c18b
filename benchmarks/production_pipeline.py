"""The PulseRL pipeline at scale: events -> decisions for 1M and 10M users on Ray.

For each size: the raw event logs are generated (shards of 100,000 users, streamed to
Parquet), then the **daily run** (``pipeline.daily_decisions``: read each shard's users
and events, compute every user's 63 features, score them with a trained versioned
agent, write the decisions) is timed

- on a local Ray with 2 CPUs and with 1 CPU (scaling from 1 to 2 cores), and
- in one plain Python process, shard by shard, with no Ray at all (the same functions:
  Ray's overhead is the difference with the 1-CPU Ray run); these two comparisons run
  for sizes up to ``--compare-up-to`` (1M by default: the 10M size gets the 2-CPU run,
  its throughput and memory, to keep the benchmark within an hour here),

while a sampler thread reads ``/proc`` every 0.5 s for the whole process tree (this
process, Ray's GCS, raylet and every worker): peak resident memory summed over the tree
(RSS, which counts Ray's shared object store once per process mapping it: an upper
bound) and peak proportional set size (PSS, shared pages split between processes: the
physical memory the run took). The agent is trained once, by the full pipeline
(``pipeline.run_pipeline``: states, transitions, a Ray Tune sweep of CQL alpha, scoring)
on the smallest size's log; its stage times are recorded too (training is a fixed cost
per day: it does not grow with the user base).

The **projected cost of a daily run for 100M users** is computed from the measured
users per core-second of the 2-CPU Ray run at the largest size that finished, at an
assumed price per core-hour (``--usd-per-core-hour``, a parameter, default 0.04 USD:
an on-demand cloud vCPU is a few cents per hour), plus the training's measured
core-seconds. It is a projection: linear in users, no cluster start-up, storage or
network costs.

Rates are wall clock on a 2-core machine shared with other jobs (the load average is
recorded); ratios measured in the same run (Ray / one process, 2 CPUs / 1 CPU) are more
robust than absolute rates. Writes ``benchmarks/results/production_pipeline.json``
after every size, so a run stopped early keeps what finished. Another run of the
comparison size (e.g. when the cores are idle) is recorded beside it, not over it:

    python benchmarks/production_pipeline.py --sizes 1000000 --out-dir /tmp/pp
    python benchmarks/production_pipeline.py --add-rerun /tmp/pp/production_pipeline.json \
        --label "idle machine"
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

from machine import RESULTS_DIR, machine_info, write_results

NAME = "production_pipeline"
PAGE = 4096


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc/<pid>/task/*/children)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except OSError:
                continue
            out += kids
            stack += kids
    return out


def _memory(pid: int) -> tuple[int, int]:
    """``(rss, pss)`` bytes of one process (0, 0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            fields = {
                line.split()[0].rstrip(":"): int(line.split()[1]) * 1024
                for line in fh
                if line.split() and line.split()[0] in ("Rss:", "Pss:")
            }
        return fields.get("Rss", 0), fields.get("Pss", 0)
    except (OSError, ValueError, IndexError):
        return 0, 0


class TreeMemory:
    """Samples RSS and PSS summed over this process and all its descendants."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.sampler_cpu_s = 0.0  #: CPU time the sampling thread itself used
        self.peak_rss = self.peak_pss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        start = time.thread_time()
        while not self._stop.is_set():
            pids = [me, *_children(me)]
            rss = pss = 0
            for pid in pids:
                r, p = _memory(pid)
                rss += r
                pss += p
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(pids))
            self.sampler_cpu_s = time.thread_time() - start
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def record(self) -> dict[str, float]:
        return {
            "peak_rss_tree_gb": round(self.peak_rss / 1e9, 3),
            "peak_pss_tree_gb": round(self.peak_pss / 1e9, 3),
            "peak_processes": self.peak_processes,
            "memory_sampler_cpu_s": round(self.sampler_cpu_s, 2),
        }


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.returncode == 0 else -1


def _timed_daily(
    raw: Path, agent: Path, out: Path, *, num_cpus: int, use_ray: bool
) -> dict[str, Any]:
    from pulse_lib.production import pipeline as P

    P.remove_tree(out)
    config = P.PipelineConfig(num_cpus=num_cpus)
    with TreeMemory() as mem:
        start = time.perf_counter()
        cpu0 = os.times()
        n = P.daily_decisions(raw, agent, out, config=config, use_ray=use_ray)
        wall = time.perf_counter() - start
        cpu1 = os.times()
    decisions = P.read_decisions(out / "decisions")
    cores = num_cpus if use_ray else 1
    record = {
        "users": n,
        "cores": cores,
        "ray": use_ray,
        "wall_s": round(wall, 2),
        "users_per_s": round(n / wall),
        "users_per_s_per_core": round(n / wall / cores),
        "driver_cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 2),
        "send_share": round(float(decisions["send"].mean()), 4),
        "decisions_rows": len(decisions),
        **mem.record(),
    }
    record["within_8gb"] = bool(record["peak_pss_tree_gb"] <= 8.0)
    P.remove_tree(out)
    print("daily", record, flush=True)
    return record


def add_rerun(run_file: Path, label: str, out_dir: Path = RESULTS_DIR) -> Path:
    """Record another run of the comparison sizes (e.g. on idle cores) beside the main
    result: ``reruns`` of ``<out_dir>/production_pipeline.json`` gains this run's machine
    record and its per-size results; the main result is left as it was."""
    import json

    run = json.loads(Path(run_file).read_text())
    if run.get("benchmark") != NAME or run.get("quick"):
        raise SystemExit(f"{run_file}: not a full {NAME} result")
    target = Path(out_dir) / f"{NAME}.json"
    main_result = json.loads(target.read_text())
    main_result.setdefault("reruns", []).append(
        {"label": label, "machine": run["machine"], "results": run["results"]}
    )
    return write_results(NAME, main_result, out_dir)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder")
    parser.add_argument("--usd-per-core-hour", type=float, default=0.04)
    parser.add_argument(
        "--compare-up-to",
        type=int,
        default=1_000_000,
        help="largest size also run on 1 CPU and in one process (scaling, overhead)",
    )
    parser.add_argument(
        "--add-rerun",
        type=Path,
        default=None,
        help="a result file of another run (e.g. --sizes 1000000 on idle cores, written "
        "to another --out-dir): record it under 'reruns' of the main result, with --label",
    )
    parser.add_argument("--label", default="rerun", help="what the rerun was (recorded)")
    args = parser.parse_args(argv)
    if args.add_rerun is not None:
        return add_rerun(args.add_rerun, args.label, args.out_dir)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from pulse_lib.production import events as E
    from pulse_lib.production import pipeline as P

    sizes = [4_000] if args.quick else sorted(args.sizes)
    shard_size = 2_000 if args.quick else 100_000
    train = (
        P.PipelineConfig(train_users=1_000, n_steps=50, alphas=(0.5, 4.0))
        if args.quick
        else P.PipelineConfig(train_users=20_000, n_steps=2_000, alphas=(0.5, 2.0, 4.0))
    )
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="pulse_prod_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "benchmark": NAME,
        "quick": args.quick,
        "machine": machine_info(),
        "shard_size": shard_size,
        "usd_per_core_hour_assumed": args.usd_per_core_hour,
        "training_config": {
            "train_users": train.train_users,
            "n_steps": train.n_steps,
            "alphas": list(train.alphas),
            "hidden": list(train.hidden),
        },
        "sizes_requested": sizes,
        "results": {},
        "finished": [],
    }
    agent_dir: Path | None = None
    for n_users in sizes:
        key = f"{n_users}_users"
        raw = work / f"raw_{n_users}"
        entry: dict[str, Any] = {"users": n_users}
        if not (raw / E.CONFIG_FILE).is_file():
            shutil.rmtree(raw, ignore_errors=True)
            with TreeMemory() as mem:
                start = time.perf_counter()
                E.generate_events(
                    raw, E.EventsConfig(n_users=n_users, shard_size=shard_size, seed=0)
                )
                entry["generate_s"] = round(time.perf_counter() - start, 2)
            entry["generate_memory"] = mem.record()
        entry["raw_bytes"] = _du(raw)
        print(key, "events", entry, flush=True)
        if agent_dir is None:
            run_dir = work / "train_run"
            P.remove_tree(run_dir)
            with TreeMemory() as mem:
                start = time.perf_counter()
                result = P.run_pipeline(raw, run_dir, train)
                total = time.perf_counter() - start
            payload["training_run"] = {
                "log_users": n_users,
                "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
                "total_s": round(total, 2),
                "tune_core_s": round(result.timings["tune"] * train.num_cpus, 2),
                "alpha_chosen": result.alpha,
                "trials": result.trials.drop(columns=["agent_dir"]).to_dict("records"),
                "transitions": result.n_transitions,
                **mem.record(),
            }
            agent_dir = work / "agent"
            P.remove_tree(agent_dir)
            shutil.copytree(result.agent_dir, agent_dir)
            shutil.copy(
                P.V.manifest_path(result.agent_dir), P.V.manifest_path(agent_dir)
            )
            print("training", payload["training_run"], flush=True)
        out = work / "daily"
        entry["ray_2cpu"] = _timed_daily(raw, agent_dir, out, num_cpus=2, use_ray=True)
        write_results(
            NAME,
            payload | {"results": {**payload["results"], key: entry}},
            args.out_dir,
        )
        if args.quick or n_users <= args.compare_up_to:
            entry["ray_1cpu"] = _timed_daily(
                raw, agent_dir, out, num_cpus=1, use_ray=True
            )
            entry["one_process"] = _timed_daily(
                raw, agent_dir, out, num_cpus=1, use_ray=False
            )
            entry["scaling_2_over_1_cpu"] = round(
                entry["ray_2cpu"]["users_per_s"] / entry["ray_1cpu"]["users_per_s"], 3
            )
            entry["ray_1cpu_over_one_process_time"] = round(
                entry["ray_1cpu"]["wall_s"] / entry["one_process"]["wall_s"], 3
            )
        payload["results"][key] = entry
        payload["finished"].append(n_users)
        payload["projection"] = projection(payload, args.usd_per_core_hour)
        write_results(NAME, payload, args.out_dir)
        print(key, "done", flush=True)
    payload["projection"] = projection(payload, args.usd_per_core_hour)
    return write_results(NAME, payload, args.out_dir)


def projection(payload: dict[str, Any], usd_per_core_hour: float) -> dict[str, Any]:
    """Core-hours and dollars of a daily run for 100M users, from the largest finished
    size's 2-CPU Ray rate (a projection: linear in users)."""
    done = [n for n in payload["finished"]]
    if not done:
        return {}
    n = max(done)
    rate = payload["results"][f"{n}_users"]["ray_2cpu"]["users_per_s_per_core"]
    users = 100_000_000
    core_hours = users / rate / 3600.0
    marginal = None
    if len(done) >= 2:  # the rate of the users beyond the smaller size: no fixed costs
        small, large = sorted(done)[-2:]
        t_small, t_large = (
            payload["results"][f"{m}_users"]["ray_2cpu"]["wall_s"]
            for m in (small, large)
        )
        if t_large > t_small:
            marginal = round((large - small) / (t_large - t_small) / 2)
    training = payload.get("training_run", {}).get("tune_core_s", 0.0) / 3600.0
    return {
        "label": "PROJECTION (linear in users; no cluster start-up, storage, network)",
        "users": users,
        "from_size": n,
        "users_per_s_per_core_used": rate,
        "daily_scoring_core_hours": round(core_hours, 3),
        "marginal_users_per_s_per_core_between_sizes": marginal,
        "training_core_hours": round(training, 4),
        "usd_per_core_hour_assumed": usd_per_core_hour,
        "daily_usd": round((core_hours + training) * usd_per_core_hour, 4),
        "wall_hours_on_100_cores": round((core_hours + training) / 100, 4),
    }


if __name__ == "__main__":
    print(main())
