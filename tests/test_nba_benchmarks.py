"""Smoke test of the Part V benchmark script: it runs in --quick mode and writes valid JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_decision_benchmark_quick_writes_expected_json(tmp_path: Path) -> None:
    out = tmp_path / "nba_decision.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nba_decision.py"), "--quick", "--out", str(out)],
                   check=True, env=env, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert set(result) == {"config", "targets", "modes", "memory_bytes", "add_action",
                           "posterior_refresh_after_update_ms_median", "machine"}
    assert result["config"]["quick"] is True
    assert set(result["modes"]) == {"greedy", "ucb", "ts_per_decision", "ts_per_batch"}
    for mode in result["modes"].values():
        assert mode["latency_p99_us"] >= mode["latency_p50_us"] > 0
        assert mode["decisions_per_s"] > 0
    assert result["memory_bytes"]["per_action"] > 0
    assert {"cores", "cpu_model", "torch_threads", "date"} <= set(result["machine"])
