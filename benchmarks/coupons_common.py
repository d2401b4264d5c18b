"""Shared bits of the coupon benchmarks: machine description and atomic JSON output."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from pulse_lib.io import atomic_write
from machine import machine_info  # noqa: E402  (benchmarks/ is on sys.path)

RESULTS_DIR = Path(__file__).resolve().parent / "results"




def write_results(name: str, payload: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    """Write ``results/<name>.json`` atomically and return its path."""
    path = out_dir / f"{name}.json"
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2)
    return path
