"""The machine a benchmark ran on, recorded beside every measurement (one definition for all)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


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
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
