"""What every benchmark shares: the machine it ran on, and the atomic write of its result file."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from pulse_lib.io import atomic_write

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Cores, CPU, threads, versions, the date and the load average (how disturbed the timing was)."""
    try:
        import torch

        torch_threads: int | None = torch.get_num_threads()
        torch_version: str | None = torch.__version__
        cuda = bool(torch.cuda.is_available())
    except ImportError:
        torch_threads, torch_version, cuda = None, None, False
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch_threads": torch_threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch_version,
        "cuda": cuda,
        "load_average_1_5_15min": load,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (a crash never leaves half a result file)."""
    path = Path(path)
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2)
    return path


def write_results(name: str, payload: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically and return its path."""
    return write_json(Path(out_dir) / f"{name}.json", payload)
