"""Benchmark of the decision service: latency (p50/p99) and throughput over real HTTP.

The service (``python -m pulse_lib.production.serving``, FastAPI on uvicorn, one worker,
one torch thread) runs in its own process pinned to one core; the load generator runs in
this process pinned to the other core and talks to it over 127.0.0.1 with keep-alive
``http.client`` connections. The agent is the book's PulseRL network at the paper's size
(63 -> 256 -> 256 -> 2 actions x 200 quantiles; decisions use the mean over quantiles).

Measured:

- ``single_sequential``: one connection, one ``POST /decide`` at a time: the latency of a
  decision with nobody queueing;
- ``single_concurrent``: ``--clients`` connections at once: throughput of single decisions
  and the latency under that load;
- ``batch_<n>``: one connection sending ``POST /decide/batch`` of ``n`` users: latency per
  request and users decided per second;
- ``in_process``: the same agent's ``decide`` without HTTP, on this core, for the share of
  the latency that is scoring.

Besides wall-clock figures, the server process's CPU time per request is read from
``/proc/<pid>/stat``: on a shared machine it is close to what one dedicated core would
cost, and ``1 / cpu_per_request`` bounds the throughput of one core. The client's own CPU
use is recorded so a client-bound run is visible (a Python client on one core can saturate
before the server does).

    OMP_NUM_THREADS=1 /work/wt/heavy flock /tmp/bench.lock python benchmarks/serving.py
    OMP_NUM_THREADS=1 python benchmarks/serving.py --quick      # smoke test

Writes ``benchmarks/results/serving.json`` (or ``--out``) atomically. Absolute numbers move
with the machine's load (recorded before and after); ratios within one run are steadier.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, write_json

from pulse_lib.production.versioning import DEFAULT_SCHEMA, VersionedAgent

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pin(pid: int, core: int) -> int | None:
    """Pin a process to one core if the machine has more than one; return the core."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return None
    os.sched_setaffinity(pid, {core})
    return core


def pct(values: list[float]) -> dict[str, float]:
    v = np.asarray(values) * 1e3
    return {
        "p50_ms": round(float(np.percentile(v, 50)), 4),
        "p99_ms": round(float(np.percentile(v, 99)), 4),
        "max_ms": round(float(v.max()), 4),
    }


class Client:
    """A keep-alive HTTP connection sending JSON bodies; returns status and seconds."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: bytes) -> tuple[int, float, bytes]:
        start = time.perf_counter()
        self.conn.request(
            "POST", path, body=body, headers={"content-type": "application/json"}
        )
        response = self.conn.getresponse()
        data = response.read()
        return response.status, time.perf_counter() - start, data


def run_sequential(port: int, path: str, bodies: list[bytes], pid: int) -> dict:
    client = Client(port)
    cpu0, server0, t0 = time.process_time(), process_cpu_seconds(pid), time.perf_counter()
    latencies, errors = [], 0
    for body in bodies:
        status, seconds, _ = client.post(path, body)
        latencies.append(seconds)
        errors += status != 200
    wall = time.perf_counter() - t0
    server_cpu = process_cpu_seconds(pid) - server0
    return {
        "requests": len(bodies),
        "errors": int(errors),
        **pct(latencies),
        "requests_per_s": round(len(bodies) / wall, 1),
        "server_cpu_ms_per_request": round(server_cpu / len(bodies) * 1e3, 4),
        "client_cpu_share": round((time.process_time() - cpu0) / wall, 3),
    }


def run_concurrent(
    port: int, path: str, bodies: list[bytes], clients: int, pid: int
) -> dict:
    local = threading.local()

    def one(body: bytes) -> tuple[int, float]:
        if not hasattr(local, "client"):
            local.client = Client(port)
        status, seconds, _ = local.client.post(path, body)
        return status, seconds

    cpu0, server0, t0 = time.process_time(), process_cpu_seconds(pid), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - t0
    server_cpu = process_cpu_seconds(pid) - server0
    return {
        "requests": len(bodies),
        "clients": clients,
        "errors": int(sum(s != 200 for s, _ in results)),
        **pct([s for _, s in results]),
        "requests_per_s": round(len(bodies) / wall, 1),
        "server_cpu_ms_per_request": round(server_cpu / len(bodies) * 1e3, 4),
        "server_cpu_share": round(server_cpu / wall, 3),
        "client_cpu_share": round((time.process_time() - cpu0) / wall, 3),
    }


def in_process(agent: VersionedAgent, obs: np.ndarray, sizes: list[int], reps: int) -> dict:
    """Scoring alone (``agent.decide``) and decoding the request's JSON alone
    (``json.loads``), per request size, on this core: two parts of the server's work."""
    out = {}
    for n in sizes:
        x = obs[:n]
        body = json.dumps(
            {"requests": [{"user_id": i, "features": obs[i].tolist()} for i in range(n)]}
        )
        for _ in range(20):
            agent.decide(x, DEFAULT_SCHEMA)
        times, decode = [], []
        for _ in range(max(20, min(reps, 20 * reps // n))):
            t = time.perf_counter()
            agent.decide(x, DEFAULT_SCHEMA)
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            json.loads(body)
            decode.append(time.perf_counter() - t)
        out[f"rows_{n}"] = {
            **pct(times),
            "rows_per_s": round(n / np.median(times), 1),
            "json_decode_p50_ms": round(float(np.median(decode)) * 1e3, 4),
        }
    return out


def bench(quick: bool, clients: int) -> dict:
    import torch

    from pulse_lib.pulserl.agents import QuantileQNetwork

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hidden, quantiles = ((32, 32), 4) if quick else ((256, 256), 200)
    n_single = 200 if quick else 5_000
    n_concurrent = 200 if quick else 5_000
    batches = {8: 10, 64: 10} if quick else {32: 1_000, 256: 300, 1_024: 100}
    warmup = 20 if quick else 300
    agent = VersionedAgent(QuantileQNetwork(n_quantiles=quantiles, hidden=hidden))
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1_024, 63))
    singles = [
        json.dumps({"user_id": int(i), "features": obs[i % 1_024].tolist()}).encode()
        for i in range(max(n_single, n_concurrent) + warmup)
    ]
    cores = {"server": 0, "client": 1}
    results: dict = {"load_average_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        agent.save(Path(tmp) / "agent")
        port = free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1", PULSE_TORCH_THREADS="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        server = subprocess.Popen(
            [sys.executable, "-m", "pulse_lib.production.serving", "--agent",
             str(Path(tmp) / "agent"), "--port", str(port), "--max-batch", "1024"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            pinned = {
                "server": pin(server.pid, cores["server"]),
                "client": pin(0, cores["client"]),
            }
            deadline = time.monotonic() + 120
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/health")
                    health = json.loads(conn.getresponse().read())
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            "the service did not start: "
                            + server.stderr.read().decode()[-2000:]
                        ) from None
                    time.sleep(0.1)
            run_sequential(port, "/decide", singles[:warmup], server.pid)
            results["single_sequential"] = run_sequential(
                port, "/decide", singles[warmup : warmup + n_single], server.pid
            )
            results["single_concurrent"] = run_concurrent(
                port, "/decide", singles[warmup : warmup + n_concurrent], clients,
                server.pid,
            )
            for size, count in batches.items():
                body = json.dumps(
                    {"requests": [{"user_id": i, "features": obs[i].tolist()}
                                  for i in range(size)]}
                ).encode()
                run_sequential(port, "/decide/batch", [body] * 3, server.pid)
                r = run_sequential(port, "/decide/batch", [body] * count, server.pid)
                r["batch_size"] = size
                r["users_per_s"] = round(r["requests_per_s"] * size, 1)
                r["server_cpu_us_per_user"] = round(
                    r["server_cpu_ms_per_request"] * 1e3 / size, 3
                )
                results[f"batch_{size}"] = r
        finally:
            server.terminate()
            server.wait(30)
    sizes = [1, *batches]
    results["in_process"] = in_process(agent, obs, sizes, 200 if quick else 2_000)
    results["load_average_after"] = list(os.getloadavg())
    results["agent"] = {
        "version": agent.version,
        "architecture": agent.architecture,
        "served_version": health["agent_version"],
    }
    results["config"] = {
        "quick": quick,
        "clients": clients,
        "single_requests": n_single,
        "concurrent_requests": n_concurrent,
        "batches": {str(k): v for k, v in batches.items()},
        "warmup_requests": warmup,
        "pinned_cores": pinned,
        "server": "uvicorn, one worker, h11, asyncio loop; torch 1 thread",
        "client": "http.client keep-alive, this process",
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serving.json")
    parser.add_argument("--note", default="", help="how the run was made (e.g. under flock), recorded")
    args = parser.parse_args()
    result = bench(args.quick, args.clients)
    result["machine"] = machine_info()
    result["note"] = args.note
    write_json(args.out, result)
    s, c = result["single_sequential"], result["single_concurrent"]
    print(f"single: p50 {s['p50_ms']:.2f} ms p99 {s['p99_ms']:.2f} ms, "
          f"{s['requests_per_s']:.0f}/s sequential; {c['requests_per_s']:.0f}/s with "
          f"{c['clients']} clients (p99 {c['p99_ms']:.2f} ms)")
    for key, r in result.items():
        if key.startswith("batch_"):
            print(f"{key}: p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms, "
                  f"{r['users_per_s']:,.0f} users/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
