"""Smoke tests of the coverage sweep and OPE accuracy benchmarks (--quick writes valid JSON)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _script(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_coverage_sweep_quick_and_merge(tmp_path: Path) -> None:
    script = _script("pulserl_coverage_sweep")
    a = Path(script.main(["--quick", "--out-dir", str(tmp_path / "a"), "--seeds", "0"]))
    b = Path(script.main(["--quick", "--out-dir", str(tmp_path / "b"), "--seeds", "1"]))
    merged = json.loads(Path(script.main(["--merge", str(a), str(b), "--out-dir", str(tmp_path)])).read_text())
    runs = merged["results"]["runs"]
    assert merged["quick"] is True and merged["settings"]["seeds"] == [0, 1]
    assert {(r["epsilon"], r["learner"], r["seed"]) for r in runs} == {
        (e, name, s) for e in (1.0, 0.01) for name in ("BC", "DQN", "CQL", "QR-CQL") for s in (0, 1)}
    for run in runs:
        assert len(run["curve"]) == 2 and run["value"] == run["curve"][-1][1]
        assert ("q_vs_mc" in run) == (run["learner"] != "BC")
    assert {"never send", "logging policy (epsilon 0.01)"} <= set(merged["references"])


def test_ope_accuracy_quick(tmp_path: Path) -> None:
    payload = json.loads(Path(_script("pulserl_ope_accuracy").main(["--quick", "--out-dir", str(tmp_path)])).read_text())
    overall = payload["results"]["overall"]
    assert set(overall) == {"IS", "WIS", "PDIS", "WPDIS", "DM", "FQE-linear"}
    for entry in overall.values():
        assert entry["n"] == 2 * 3 and 0.0 <= entry["coverage"] <= 1.0 and entry["rmse"] >= abs(entry["bias"])
    assert len(payload["fqe_diagnosis"]["rows"]) == 4
    bias = payload["bias_diagnosis"]["rows"]  # 2 datasets x 4 variants x 4 targets + 4 on 5x users
    assert len(bias) == 2 * 4 * 4 + 4
    assert {r["variant"] for r in bias} >= {"features only", "features + hidden state (oracle)"}
    assert all(np.isfinite(r["value"]) for r in bias)
