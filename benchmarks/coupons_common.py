"""Shared bits of the coupon benchmarks: machine description and atomic JSON output."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

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
    """Cores, CPU model, torch threads and the date: printed next to every number."""
    import torch

    return {
        "cores": os.cpu_count(), "cpu_model": cpu_model(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_results(name: str, payload: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    """Write ``results/<name>.json`` atomically and return its path."""
    path = out_dir / f"{name}.json"
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2)
    return path
