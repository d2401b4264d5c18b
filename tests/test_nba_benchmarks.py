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
    assert set(result) == {"config", "targets", "modes", "memory_bytes", "add_action_ms_median",
                           "full_refactor_ms", "load_average_before", "machine", "note", "float32_widths"}
    assert result["config"]["quick"] is True
    assert set(result["modes"]) == {"greedy", "ucb", "ts_per_decision", "ts_per_window"}
    for name, mode in result["modes"].items():
        timings = ("draw", "decision_served") if name == "ts_per_window" else (
            "decision_fixed_posterior", "decision_after_update", "update_one_row")
        for key in timings:
            assert mode[key]["max_us"] >= mode[key]["p99_us"] >= mode[key]["p50_us"] > 0
        if name != "ts_per_window":
            assert mode["decisions_per_s"] > 0
    assert result["memory_bytes"]["per_action"] > 0
    f32 = result["float32_widths"]
    assert 0 <= f32["ucb_width_max_rel_error"] < 1e-4
    for key in ("ucb_agreement_fixed", "ucb_agreement_online", "ts_agreement_fixed", "ts_agreement_online"):
        assert 0.9 <= f32[key] <= 1.0
    assert {"cores", "cpu_model", "torch_threads", "date"} <= set(result["machine"])


def test_bounds_benchmark_quick_writes_expected_json(tmp_path: Path) -> None:
    out = tmp_path / "nba_bounds.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nba_bounds.py"), "--quick", "--out", str(out)],
                   check=True, env=env, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["config"]["quick"] is True
    assert {"IPS + EB", "IPS + betting", "DR + betting", "IPS + HCOPE"} <= set(result["bounds"])
    for bound in result["bounds"].values():
        for entry in bound["by_size"].values():
            lo, hi = entry["approval_cp95"]
            assert lo <= entry["approval_rate"] <= hi
    assert "load_average_1_5_15min" in result["machine"]
