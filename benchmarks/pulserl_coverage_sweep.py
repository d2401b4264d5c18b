"""Coverage sweep: BC, offline DQN, CQL and QR-CQL on logs of narrowing exploration.

The logger is the surrogate's marketer rule with exploration epsilon
(``pulse_lib.pulserl.simulator.logging_policy``): epsilon = 1 is a uniform coin, epsilon ->
0 the deterministic rule, under which the opposite of the rule's action is logged with
probability epsilon / 2. For each level and seed a fresh log is drawn, every learner is
trained with the same network, optimiser, budget and discount
(``pulse_lib.pulserl.coverage.SweepConfig``), and its greedy policy is run online on the
same fresh simulated users. Also recorded: learning curves (online value at checkpoints),
and Q-hat against Monte-Carlo returns on rarely- and commonly-logged actions at day 0.

Writes ``benchmarks/results/pulserl_coverage_sweep.json`` after every run (a partial file
is valid). The recorded file comes from
``--n-steps 4000 --n-checkpoints 8`` (4x the default budget, after the 1,000-step sweep's
curves were still moving), run in two parts (``--seeds 0,1`` and ``--seeds 2``) merged with
``--merge``: about 40 CPU-minutes, 75 wall-minutes under ``nice`` on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pulserl_common as common

NAME = "pulserl_coverage_sweep"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--seeds", default=None, help="comma-separated subset of seeds (to run in parts)")
    parser.add_argument("--levels", default=None, help="comma-separated subset of epsilons (to run in parts)")
    parser.add_argument("--n-steps", type=int, default=None,
                        help="gradient steps per learner (default 1,000; the learning curves say whether it is enough)")
    parser.add_argument("--n-checkpoints", type=int, default=None, help="online evaluations along training")
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="merge result files of parts (same settings, other seeds) into one")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out_dir)
    common.setup_one_thread()
    from tqdm.auto import tqdm

    from pulse_lib.pulserl import coverage as C
    from pulse_lib.pulserl import simulator as S

    if args.quick:
        levels, seeds, n_train, n_eval, n_mc = (1.0, 0.01), (0, 1), 60, 200, 100
        config = C.SweepConfig(n_steps=20, n_checkpoints=2, hidden=(8,), qr_quantiles=4)
    else:
        levels, seeds, n_train, n_eval, n_mc = (1.0, 0.3, 0.1, 0.01), (0, 1, 2), 1_500, 3_000, 2_000
        config = C.SweepConfig(n_steps=1_000, n_checkpoints=4, batch_size=512, learning_rate=2e-3,
                               target_update_interval=25)
    if args.n_steps is not None or args.n_checkpoints is not None:
        config = dataclasses.replace(config, n_steps=args.n_steps or config.n_steps,
                                     n_checkpoints=args.n_checkpoints or config.n_checkpoints)
    if args.seeds is not None:
        seeds = tuple(int(x) for x in args.seeds.split(","))
    if args.levels is not None:
        levels = tuple(float(x) for x in args.levels.split(","))
    sim = S.PulseSimulator(S.SimulatorConfig(gamma=config.gamma))
    eval_seed, mc_seed = 2024, 7

    def evaluate(policy: Any) -> float:
        return sim.evaluate(policy, n_eval, eval_seed).mean

    references = {name: evaluate(policy) for name, policy in {
        "never send": S.never_send, "always send": S.always_send, "uniform random": S.uniform_policy,
        "marketer rule (epsilon 0)": S.marketer_rule}.items()}
    references.update({f"logging policy (epsilon {eps:g})": evaluate(S.logging_policy(eps)) for eps in levels})
    runs: list[dict[str, Any]] = []
    payload: dict[str, Any] = {
        "benchmark": NAME, "quick": args.quick, "machine": common.machine_info(),
        "settings": {"epsilons": list(levels), "seeds": list(seeds), "n_train_users": n_train,
                     "n_eval_users": n_eval, "eval_seed": eval_seed, "n_mc_users": n_mc, "mc_seed": mc_seed,
                     "horizon": sim.config.horizon, "learners": list(C.LEARNER_NAMES),
                     "sweep_config": dataclasses.asdict(config),
                     "note": ("equal footing: one network, optimiser, budget and discount for all learners; "
                              f"QR-CQL with {config.qr_quantiles} quantiles (the paper: 200); "
                              "learning rate, batch and target interval changed from the paper's 5e-5 / 256 / 2,000 "
                              "to train in seconds on a busy shared CPU (see the learning curves)")},
        "references": references, "results": {"runs": runs},
    }
    # seeds outermost: a partial file already holds whole curves over the coverage levels
    jobs = [(eps, seed, name) for seed in seeds for eps in levels for name in C.LEARNER_NAMES]
    tables: dict[tuple[float, int], Any] = {}
    for eps, seed, name in tqdm(jobs, desc="coverage sweep"):
        if (eps, seed) not in tables:
            tables.clear()
            tables[(eps, seed)] = S.generate_logged_dataset(n_train, seed=1_000 + seed, epsilon=eps,
                                                            config=sim.config)
        table = tables[(eps, seed)]
        start = time.process_time()
        trained = C.train_learner(name, table, config, seed, evaluate=evaluate)
        run: dict[str, Any] = {
            "epsilon": eps, "seed": seed, "learner": name, "value": trained.curve[-1][1],
            "curve": trained.curve, "send_rate_on_logged_states": float(trained.policy(
                table[list(S.FEATURE_NAMES)].to_numpy(np.float32)).mean()),
            "transitions": len(table), "cpu_seconds": round(time.process_time() - start, 1)}
        if name != "BC":
            gap = C.rare_action_gap(trained, sim, S.logging_policy(eps), n_mc, mc_seed)
            run["q_vs_mc"] = gap.to_dict(orient="records")
        runs.append(run)
        common.write_results(NAME, payload, args.out_dir)
    return common.write_results(NAME, payload, args.out_dir)


def merge(paths: list[Path], out_dir: Path) -> Path:
    """One result file from parts run with ``--seeds``/``--levels`` (other settings must agree).

    A (level, seed, learner) run present in several parts is kept once (the first).
    """
    import json

    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    references: dict[str, float] = {}
    for part in parts:
        a = {k: v for k, v in first["settings"].items() if k not in ("seeds", "epsilons", "parts")}
        b = {k: v for k, v in part["settings"].items() if k not in ("seeds", "epsilons", "parts")}
        shared = set(references) & set(part["references"])
        if a != b or any(abs(references[k] - part["references"][k]) > 1e-12 for k in shared):
            raise SystemExit("cannot merge: the parts were run with different settings")
        references.update(part["references"])
    runs, seen = [], set()
    for part in parts:
        for run in part["results"]["runs"]:
            key = (run["epsilon"], run["seed"], run["learner"])
            if key not in seen:
                seen.add(key)
                runs.append(run)
    runs.sort(key=lambda r: (-r["epsilon"], r["seed"]))
    payload = {**first, "references": references,
               "settings": {**first["settings"], "seeds": sorted({r["seed"] for r in runs}),
                            "epsilons": sorted({r["epsilon"] for r in runs}, reverse=True),
                            "parts": [p["machine"] for p in parts]},
               "results": {"runs": runs}}
    return common.write_results(NAME, payload, out_dir)


if __name__ == "__main__":
    print(main())
