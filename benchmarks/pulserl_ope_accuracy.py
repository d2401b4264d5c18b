"""Accuracy of off-policy estimators against the surrogate's truth, over many logged datasets.

For each of ``n_datasets`` independent uniform-random logs (the stand-in for the release's
``10k_uniform_dataset_users``) and each target policy, every estimator of
``pulse_lib.pulserl.evaluation.estimate_with_intervals`` gives a value and a 95 % bootstrap
interval (over episodes; FQE-linear refits its model on every draw). Against the simulator's
truth (a large online run) we record per estimator: bias, standard deviation, RMSE, the share
of intervals that contain the truth (coverage) and the mean interval half-width; for FQE also
how often its convergence check passed.

``bias_diagnosis``: why FQE on the 63 features alone was biased low, by controlled
comparison on the same datasets: FQE-linear on the features only, with the simulator's
hidden state added (an oracle no real log has), with the send history, and with the send
history per age group (the library default); plus the logging policy itself as a target
(on-policy: every variant should match the logged returns) and, on the first datasets, the
features-only version on five times as many users (is it a matter of data?).
Writes ``benchmarks/results/pulserl_ope_accuracy.json`` after every dataset.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pulserl_common as common

NAME = "pulserl_ope_accuracy"


def summarise(rows: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Bias, sd, RMSE, coverage and half-width per estimator (over datasets and targets)."""
    out = {}
    for name, part in rows.groupby("estimator", sort=False):
        err = part["value"] - part["truth"]
        entry = {
            "n": len(part), "bias": float(err.mean()), "sd": float(err.std(ddof=1)) if len(part) > 1 else None,
            "rmse": float(np.sqrt((err**2).mean())),
            "coverage": float(((part["low"] <= part["truth"]) & (part["truth"] <= part["high"])).mean()),
            "mean_half_width": float(((part["high"] - part["low"]) / 2).mean()),
        }
        if "converged" in part and part["converged"].notna().any():
            entry["converged_share"] = float(part["converged"].dropna().astype(bool).mean())
        out[str(name)] = entry
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--datasets", default=None, help="a range 'a-b' of dataset indices (to run in parts)")
    parser.add_argument("--no-diagnosis", action="store_true", help="skip the FQE diagnosis (parts after the first)")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, help="merge result files of parts")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out_dir)
    common.setup_one_thread()
    from tqdm.auto import tqdm

    from pulse_lib.pulserl import evaluation as E
    from pulse_lib.pulserl import simulator as S

    if args.quick:
        n_datasets, n_users, n_truth, n_boot, n_diagnosis, n_big = 2, 40, 500, 50, 1, 1
        budget: dict[str, Any] = {"n_iterations": 3, "steps_per_iteration": 5, "hidden": (8,)}
        config = S.SimulatorConfig(horizon=5)
    else:
        n_datasets, n_users, n_truth, n_boot, n_diagnosis, n_big = 20, 600, 50_000, 500, 1, 5
        budget = {"n_iterations": 40, "steps_per_iteration": 50, "hidden": (32, 32)}  # the old FQE's 2,000 steps
        config = S.SimulatorConfig()
    sim = S.PulseSimulator(config)
    targets = {
        "never send (softened, eps 0.1)": E.soften(S.never_send, 0.1),
        "logging heuristic (rule, eps 0.1)": S.heuristic_policy,
        "rule, eps 0.5": S.logging_policy(0.5),
    }
    truth = {name: sim.evaluate(policy, n_truth, seed=77) for name, policy in targets.items()}
    on_policy = "uniform logging policy itself (on-policy)"
    truth_on_policy = sim.evaluate(S.uniform_policy, n_truth, seed=77)
    rows: list[dict[str, Any]] = []
    payload: dict[str, Any] = {
        "benchmark": NAME, "quick": args.quick, "machine": common.machine_info(),
        "settings": {"n_datasets": n_datasets, "n_users_per_dataset": n_users, "logging_policy": "uniform",
                     "horizon": config.horizon, "gamma": config.gamma, "n_truth_users": n_truth, "n_boot": n_boot,
                     "interval": "95 % percentile bootstrap over episodes (IS family: recomputed; "
                                 "FQE-linear: model refitted on each of min(n_boot, 200) draws; "
                                 "DM: reward model held fixed)",
                     "fqe": "FQE-linear (LSTD-Q fixed point; features + send history per age group, "
                            "x days left); the neural FQE (about 30 CPU-s per fit here) only in the "
                            "loss/horizon diagnosis",
                     "bias_diagnosis_big_users": 5 * n_users, "bias_diagnosis_big_datasets": n_big,
                     "diagnosis_budget": budget},
        "truth": {name: {"value": v.mean, "low": v.low, "high": v.high} for name, v in truth.items()},
        "truth_on_policy": {"value": truth_on_policy.mean, "low": truth_on_policy.low,
                            "high": truth_on_policy.high},
        "results": {},
    }
    # why the old FQE was low: the same data and budget, one change at a time
    diagnosis = []
    target = "never send (softened, eps 0.1)"
    for r in range(0 if args.no_diagnosis else n_diagnosis):
        table = S.generate_logged_dataset(n_users, seed=500 + r, logging_policy="uniform", config=config)
        variants = {
            "old: Huber loss, no days-left input": {"loss": "huber", "time_feature": False},
            "squared loss, no days-left input": {"loss": "mse", "time_feature": False},
            "squared loss + days-left input": {"loss": "mse", "time_feature": True},
        }
        for label, kwargs in variants.items():
            fit = E.fit_fqe(table, targets[target], config.gamma, seed=r, **budget, **kwargs)
            diagnosis.append({"dataset": r, "variant": label, "value": fit.estimate.value, "converged": fit.converged,
                                  "trace": [float(v) for v in fit.values], "truth": truth[target].mean})
        lin = E.fit_fqe_linear(table, targets[target], config.gamma, history=False)
        diagnosis.append({"dataset": r, "variant": "linear, solved at its fixed point (LSTD-Q), features only",
                              "value": lin.estimate.value, "converged": lin.converged,
                              "trace": [float(v) for v in lin.values], "truth": truth[target].mean})
    payload["fqe_diagnosis"] = {"target": target, "rows": diagnosis}
    indices = range(n_datasets)
    if args.datasets:
        lo, hi = (int(x) for x in args.datasets.split("-"))
        indices = range(lo, hi + 1)
    bias_rows: list[dict[str, Any]] = []
    for r in tqdm(indices, desc="logged datasets"):
        # the same table generate_logged_dataset gives, plus the hidden state (for the oracle only)
        table = sim.rollout(S.uniform_policy, n_users, seed=500 + r, record=True, hidden=True).transitions
        bias_rows += bias_diagnosis(table, {**targets, on_policy: S.uniform_policy},
                                    {**{k: v.mean for k, v in truth.items()}, on_policy: truth_on_policy.mean},
                                    config, dataset=r, users=n_users)
        if r < n_big:
            big = S.generate_logged_dataset(5 * n_users, seed=10_500 + r, logging_policy="uniform", config=config)
            big_return = float((big["reward"] * config.gamma ** big["t"]).groupby(big["eps_id"]).sum().mean())
            for name, policy in {**targets, on_policy: S.uniform_policy}.items():
                fit = E.fit_fqe_linear(big, policy, config.gamma, history=False)
                bias_rows.append({"dataset": r, "users": 5 * n_users, "target": name,
                                      "variant": "features only, 5x users", "value": fit.estimate.value,
                                      "logged_return": big_return,
                                      "truth": truth_on_policy.mean if name == on_policy else truth[name].mean})
        payload["bias_diagnosis"] = {"rows": bias_rows}
        reward_model = E.RewardModel(seed=r, max_iter=100).fit(table)
        for name, policy in targets.items():
            start = time.process_time()
            est = E.estimate_with_intervals(table, policy, config.gamma, reward_model=reward_model,
                                            fqe_linear=True, n_boot=n_boot, seed=r)
            for row in est.to_dict(orient="records"):
                rows.append({**row, "dataset": r, "target": name, "truth": truth[name].mean,
                             "cpu_seconds": round(time.process_time() - start, 1)})
        frame = pd.DataFrame(rows)
        payload["results"] = {
            "overall": summarise(frame),
            "by_target": {name: summarise(part) for name, part in frame.groupby("target", sort=False)},
            "rows": frame.replace({np.nan: None}).to_dict(orient="records"),
        }
        common.write_results(NAME, payload, args.out_dir)
    return common.write_results(NAME, payload, args.out_dir)


#: FQE-linear variants of the bias diagnosis: keyword arguments of ``fit_fqe_linear``.
BIAS_VARIANTS: dict[str, dict[str, Any]] = {
    "features only": {"history": False},
    "features + hidden state (oracle)": {"history": False, "extra": "hidden"},
    "features + send history": {"segment_feature": None},
    "features + send history per age group (default)": {},
}


def hidden_state(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The simulator's hidden state at s and s' (fatigue, proneness, responsiveness, and the
    two forms in which fatigue x proneness enters the dynamics)."""
    p, resp = table["hidden_proneness"].to_numpy(), table["hidden_responsiveness"].to_numpy()

    def cols(fatigue: np.ndarray) -> np.ndarray:
        return np.column_stack([fatigue, p, resp, fatigue * p, np.exp(-0.3 * fatigue * p)])

    return cols(table["hidden_fatigue"].to_numpy()), cols(table["next_hidden_fatigue"].to_numpy())


def bias_diagnosis(table: pd.DataFrame, targets: dict[str, Any], truth: dict[str, float], config: Any, *,
                   dataset: int, users: int) -> list[dict[str, Any]]:
    """FQE-linear's estimate per variant and target on one table, with the logged-return check."""
    from pulse_lib.pulserl import evaluation as E

    discounted = table["reward"] * config.gamma ** table["t"]
    logged_return = float(discounted.groupby(table["eps_id"]).sum().mean())
    rows = []
    for variant, kwargs in BIAS_VARIANTS.items():
        kwargs = {**kwargs, "extra": hidden_state(table)} if kwargs.get("extra") == "hidden" else kwargs
        for name, policy in targets.items():
            fit = E.fit_fqe_linear(table, policy, config.gamma, **kwargs)
            rows.append({"dataset": dataset, "users": users, "target": name, "variant": variant,
                             "value": fit.estimate.value, "truth": truth[name], "logged_return": logged_return})
    return rows


def merge(paths: list[Path], out_dir: Path) -> Path:
    """One result file from parts run with ``--datasets`` (same settings and truth)."""
    import json

    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    rows, seen = [], set()
    for part in parts:
        if part["settings"] != first["settings"] or part["truth"] != first["truth"]:
            raise SystemExit("cannot merge: the parts were run with different settings")
        for row in part["results"]["rows"]:
            key = (row["dataset"], row["target"], row["estimator"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
    frame = pd.DataFrame(rows)
    diagnosis = next((p["fqe_diagnosis"] for p in parts if p.get("fqe_diagnosis", {}).get("rows")), None)
    bias_rows = [row for p in parts for row in p.get("bias_diagnosis", {}).get("rows", [])]
    payload = {**first, "fqe_diagnosis": diagnosis, "bias_diagnosis": {"rows": bias_rows}, "parts": [p["machine"] for p in parts],
               "results": {"overall": summarise(frame),
                           "by_target": {n: summarise(g) for n, g in frame.groupby("target", sort=False)},
                           "rows": rows}}
    payload["settings"] = {**first["settings"], "n_datasets": int(frame["dataset"].nunique())}
    return common.write_results(NAME, payload, out_dir)


if __name__ == "__main__":
    print(main())
