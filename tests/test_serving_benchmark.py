"""Smoke test of benchmarks/serving.py: it runs in --quick mode and writes valid JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_serving_benchmark_quick_writes_expected_json(tmp_path: Path) -> None:
    out = tmp_path / "serving.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "serving.py"),
            "--quick",
            "--out",
            str(out),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    assert result["config"]["quick"] is True
    assert result["agent"]["served_version"] == result["agent"]["version"]
    runs = ["single_sequential", "single_concurrent", "batch_8", "batch_64"]
    for key in runs:
        run = result[key]
        assert run["errors"] == 0, key
        assert run["max_ms"] >= run["p99_ms"] >= run["p50_ms"] > 0, key
        assert run["requests_per_s"] > 0 and run["server_cpu_ms_per_request"] >= 0
    assert result["batch_64"]["users_per_s"] == round(
        result["batch_64"]["requests_per_s"] * 64, 1
    )
    assert set(result["in_process"]) == {"rows_1", "rows_8", "rows_64"}
    assert {"cores", "cpu_model", "torch_threads", "date"} <= set(result["machine"])
