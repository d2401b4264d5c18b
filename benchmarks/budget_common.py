"""Machine description and atomic JSON output shared by the budget benchmarks."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

from pulse_lib.io import atomic_write
from machine import machine_info  # noqa: E402  (benchmarks/ is on sys.path)

RESULTS_DIR = Path(__file__).resolve().parent / "results"




def write_result(path: Path, result: dict[str, Any]) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {path}")
