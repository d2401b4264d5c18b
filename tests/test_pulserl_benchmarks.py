"""Smoke test of the PulseRL benchmarks: each runs with --quick and writes valid JSON."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

EXPECTED = {
    "pulserl_cql_speed": {"d3rlpy_steps_per_s", "plain_torch_steps_per_s", "speedup_plain_over_d3rlpy"},
    "pulserl_scoring": {"users", "users_per_s", "meets_target"},
    "pulserl_memory": {"parquet_zstd_mb_per_million", "pandas_in_memory_mb_per_million", "d3rlpy_arrays_mb_per_million"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_quick_mode_writes_json(name: str, tmp_path: Path) -> None:
    # in-process (the scripts' main takes argv): no new interpreter, torch and d3rlpy imported once
    sys.path.insert(0, str(BENCH))
    try:
        script = importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
    written = script.main(["--quick", "--out-dir", str(tmp_path)])
    assert Path(written) == tmp_path / f"{name}.json"
    payload = json.loads((tmp_path / f"{name}.json").read_text())
    assert payload["quick"] is True
    assert {"cores", "cpu_model", "torch_threads", "date"} <= set(payload["machine"])
    results = payload["results"]
    values = list(results.values()) if all(isinstance(v, dict) for v in results.values()) else [results]
    for entry in values:
        assert EXPECTED[name] <= set(entry), (name, entry)
        for key in EXPECTED[name]:
            assert entry[key] is not None
    if name == "pulserl_scoring":  # the matrix-product ceiling, measured in the same run
        ceiling = payload["ceiling_256x256"]
        assert ceiling["gemm_only_users_per_cpu_s"] > 0 and ceiling["gflops_per_cpu_s"] > 0
        assert ceiling["flops_per_user"] == 2 * (63 * 256 + 256 * 256 + 256 * 2)
        assert 0 < ceiling["library_share_of_ceiling"] < 2
        # ONNX Runtime beside PyTorch in the same run: the same scores, the same decisions
        onnx = payload["onnx_results"]
        assert set(onnx) == set(results)
        for entry in onnx.values():
            assert entry["users_per_cpu_s"] > 0 and entry["speedup_over_torch"] > 0
            assert entry["max_abs_difference_from_torch"] < 1e-4
            assert entry["decision_agreement_with_torch"] > 0.999
        assert str(payload["onnx_chosen_chunk"]) in payload["onnx_chunk_sweep_users_per_cpu_s"]["256x256"]
