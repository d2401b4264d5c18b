"""Smoke tests: the coupon benchmarks run in quick mode and write valid JSON with the expected keys."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, keys", [
    ("coupons_lambda_compute", {"machine", "settings", "routes", "equal_quality", "equal_quality_one_se",
                                "budget_use", "budget_use_summary", "learning_curve", "validation"}),
    ("coupons_rbcq_speed", {"machine", "settings", "speed", "memory"}),
    ("coupons_lambda_zero", {"machine", "settings", "runs", "resolution", "summary", "check_rule"}),
])
def test_quick_run_writes_json(tmp_path: Path, name: str, keys: set[str]) -> None:
    path = load(name).main(["--quick", "--out-dir", str(tmp_path)])
    payload = json.loads(path.read_text())
    assert keys <= set(payload) and payload["quick"] is True
    assert {"cores", "cpu_model", "torch_threads", "date"} <= set(payload["machine"])
    if name == "coupons_lambda_compute":
        routes = {r["route"] for r in payload["routes"]}
        assert routes == {"lambda-generalized", "per-lambda retraining"}
        assert all(r["updates"] > 0 and r["probes"] >= 1 for r in payload["routes"])
        eq = payload["equal_quality"]
        assert {"target_retention", "tolerance", "per_seed"} <= set(eq) and len(eq["per_seed"]) == 2
        assert all({"seed", "budget_use", "true_retention"} <= set(b) for b in payload["budget_use"])
        for b in payload["budget_use"]:  # three searches on the same policy, each checked in the simulator
            for search in ("reme", "rollout_no_margin", "rollout_with_margin"):
                assert {"budget_use", "within_budget", "true_cost"} <= set(b[search])
        assert eq["tolerance"] == payload["settings"]["tolerance"]  # stated up front, not fitted
        val = payload["validation"]
        assert val["margin"] >= 0 and val["search_target"] == pytest.approx(payload["settings"]["budget"] - val["margin"])
        # the margin is calibrated on validation seeds, never on the measured ones
        assert set(val["seeds"]) == set(payload["settings"]["validation_seeds"])
        assert not set(val["seeds"]) & set(payload["settings"]["seeds"])
        assert all({"seed", "length", "error", "estimated_cost", "true_cost"} <= set(r) for r in val["rows"])
        assert {"rollout_cost", "eligible_ceiling_logged_states", "eligible_ceiling_own_states",
                "route"} <= set(payload["learning_curve"][0])
        at0 = [c for c in payload["learning_curve"] if c["lambda"] == 0.0]
        assert at0 and all("ceiling_policy_retention" in c for c in at0)
        summary = payload["budget_use_summary"]["rollout_with_margin"]
        assert {"runs_binding", "within_budget", "at_least_097_within", "seeds_all_binding_runs_ok"} <= set(summary)
    elif name == "coupons_lambda_zero":
        learners = {r["learner"] for r in payload["runs"]}
        assert {"single-lambda", "lambda-generalized", "untrained (control)", "smallest eligible (control)"} <= learners
        for r in payload["runs"]:
            assert 0 <= r["top_set_share"] <= 1 and r["retention_gap_se"] >= 0 and r["tolerance"] >= 0
            assert r["holds"] == (r["holds_top_set"] and r["holds_retention"])
        assert {r["n_users"] for r in payload["resolution"]} == set(payload["settings"]["sizes"])
        # the smallest eligible coupon is never more than the ceiling's share
        assert all(r["share_of_ceiling"] <= 1 + 1e-9 for r in payload["runs"])
    else:
        assert payload["memory"]["explicit_over_logged"] > 1
        assert all(s["rbcq_steps_per_s"] > 0 for s in payload["speed"])
