"""Does R-BCQ at λ = 0 converge to the top of its BCQ filter, once the data can tell the top apart?

At λ = 0 spend is free, so the best policy gives the largest coupon the BCQ filter allows (the
*ceiling*). The simulator's lift is flat at the top, so at the book's data size (2,000 users) the
large coupons differ by less than the noise of 0/1 returns. This benchmark grows the logged data
(``sizes``, users; training steps scaled with the data, ``steps_per_user`` at each of two lengths)
and measures, for each learner, size, length and seed, the λ = 0 check of
:mod:`pulse_lib.coupons.convergence`:

* the share of the ceiling (mean coupon / mean ceiling on the policy's own trajectories: the old number);
* the share of decisions in the **top set** of their state (coupons the logged data cannot tell from
  the ceiling: exact next-day gap within ``n_se`` standard errors of its estimate from the data);
* the retention gap to the ceiling policy (same simulated users and random numbers, paired standard
  error over users) against the tolerance the top set allows (exact per-user-day loss of its smallest
  coupon).

Learners (group ``main``): R-BCQ trained at λ = 0 alone (``single-lambda``, every size) and the λ-generalized R-BCQ
(grid 0..1 step 0.05) evaluated at λ = 0 (sizes up to ``gen_max_users``, to bound the compute). Two
**negative controls** run the same check where it must fail: an untrained R-BCQ (no updates) and a
deliberately wrong policy, the *smallest* coupon the trained filter allows. Each seed draws its own
logged data (logging policy of Chapter 9, data seed = seed) and its own learner. A **diagnostic** (group
``expected-rewards``) trains the single-λ R-BCQ on the same transitions with each 0/1 reward replaced by
its exact probability (the simulator's hidden state): it removes the reward noise and nothing else.
Two follow-ups ask whether the optimiser is the limit: group ``optimiser`` reruns the diagnostic at
``expected_max_users`` with one setting changed at a time (``OPTIMISER_VARIANTS``), and group ``tuned``
runs the setting that passed there (``TUNED``, chosen after seeing the diagnostic) on the 0/1 rewards.
Compute of the recorded run: about 12-13 minutes per seed for ``main``, 2 minutes per seed for the
diagnostic, 8 for ``optimiser`` and 4 for ``tuned``, on one thread each.

Writes ``results/coupons_lambda_zero.json``. The recorded run ran one process per seed through the
CPU-slot wrapper and merged them:

    for s in 1 2 3; do /work/wt/heavy python benchmarks/coupons_lambda_zero.py --part --seeds $s \
        --out-dir /tmp/lz & done
    for s in 1 2 3; do /work/wt/heavy python benchmarks/coupons_lambda_zero.py --part --seeds $s \
        --groups expected-rewards --out-dir /tmp/lz & done; wait
    for s in 1 2 3; do /work/wt/heavy python benchmarks/coupons_lambda_zero.py --part --seeds $s \
        --groups optimiser --out-dir /tmp/lz & done             # about 8 minutes per seed
    for s in 1 2 3; do /work/wt/heavy python benchmarks/coupons_lambda_zero.py --part --seeds $s \
        --groups tuned --out-dir /tmp/lz & done; wait           # about 4 minutes per seed
    python benchmarks/coupons_lambda_zero.py --merge /tmp/lz/*.json     # the recorded run
    python benchmarks/coupons_lambda_zero.py --quick                   # a smoke test (seconds)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import RESULTS_DIR, machine_info, write_results

from pulse_lib.book import mean_ci
from pulse_lib.coupons import simulator as sim
from pulse_lib.coupons.convergence import (
    data_resolution,
    exact_next_day_probabilities,
    exact_next_day_table,
    lambda_zero_check,
)
from pulse_lib.coupons.dataset import (
    STATE_SCALE,
    CouponDataset,
    LambdaSampler,
    lambda_grid,
)
from pulse_lib.coupons.rbcq import RBCQ, RBCQConfig, eligible_mask

NAME = "coupons_lambda_zero"
FULL = {"sizes": [2_000, 8_000, 32_000], "steps_per_user": [0.5, 2.0], "gen_max_users": 8_000, "eval_users": 10_000,
            "n_se": 2.0, "min_top_set_share": 0.9, "expected_max_users": 8_000}
QUICK = {"sizes": [100, 200], "steps_per_user": [0.1, 0.2], "gen_max_users": 100, "eval_users": 300, "n_se": 2.0,
             "min_top_set_share": 0.9, "expected_max_users": 100}
#: The type-level ceilings of the logging policy's filter (τ = 0.3): coupons 2.1, 1.9 and 1.4.
LOGGING_CEILINGS = (20, 18, 13)


def ceilings_of(learner: RBCQ, states: np.ndarray, lam: float) -> np.ndarray:
    """Largest coupon index the learner's BCQ filter allows in each state at λ."""
    obs = torch.as_tensor(np.asarray(states, dtype=np.float32) * STATE_SCALE)
    with torch.no_grad():
        mask = eligible_mask(learner.behaviour_logits(obs, torch.full((len(obs),), float(lam))),
                             learner.config.bcq_threshold).numpy()
    return (mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)).astype(np.int64)


def floor_policy(learner: RBCQ, lam: float):
    """A deliberately wrong policy (negative control): the smallest coupon the filter allows."""

    def act(states: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(states, dtype=np.float32) * STATE_SCALE)
        with torch.no_grad():
            mask = eligible_mask(learner.behaviour_logits(obs, torch.full((len(obs),), float(lam))),
                                 learner.config.bcq_threshold).numpy()
        return np.argmax(mask, axis=1).astype(np.int64)

    return act


def check_policy(config, resolution, learner: RBCQ, policy, values, s: dict, seed: int) -> dict:
    """The λ = 0 check of ``policy`` (ceilings from ``learner``'s filter), on its own trajectories;
    the ceiling policy runs on the same users with the same random numbers (paired difference)."""
    n, horizon = s["eval_users"], config.horizon
    own = sim.simulate(config, policy, rng=np.random.default_rng(7000 + seed), n_users=n)
    top = sim.simulate(config, lambda st: ceilings_of(learner, st, 0.0), rng=np.random.default_rng(7000 + seed),
                       n_users=n)
    diff = top.rewards.reshape(n, horizon).mean(1) - own.rewards.reshape(n, horizon).mean(1)
    ceilings = ceilings_of(learner, own.observations, 0.0)
    check = lambda_zero_check(resolution, own.observations[:, 1].astype(int), ceilings, own.actions, values,
                              float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(n)), s["min_top_set_share"])
    types = own.observations[:, 1].astype(int)
    return {"share_of_ceiling": check.share_of_ceiling, "top_set_share": check.top_set_share,
            "top_set_share_by_type": [float(resolution.in_top_set(types[types == k], ceilings[types == k],
                                                                   own.actions[types == k]).mean())
                                      if np.any(types == k) else None for k in range(3)],
            "retention_gap": check.retention_gap, "retention_gap_se": check.retention_gap_se,
            "tolerance": check.tolerance, "holds_top_set": check.holds_top_set,
            "holds_retention": check.holds_retention, "holds": check.holds,
            "spend": float(own.costs.mean()), "mean_ceiling": float(values[ceilings].mean()),
            "retention": float(own.rewards.mean()), "ceiling_policy_retention": float(top.rewards.mean())}


def resolution_record(resolution) -> dict:
    """The resolution at the logging filter's type ceilings, for the result file."""
    return {"counts_min": int(resolution.counts.min()), "counts_max": int(resolution.counts.max()),
            "bottom_at_logging_ceiling": [int(resolution.bottom[k, c]) for k, c in enumerate(LOGGING_CEILINGS)],
            "loss_at_logging_ceiling": [float(resolution.loss[k, c]) for k, c in enumerate(LOGGING_CEILINGS)],
            "two_se_next_to_ceiling": [float(resolution.n_se * resolution.se[k, c, c - 1])
                                       for k, c in enumerate(LOGGING_CEILINGS)],
            "gap_next_to_ceiling": [float(resolution.gap[k, c, c - 1]) for k, c in enumerate(LOGGING_CEILINGS)]}


#: Group ``optimiser``: is the noise-free failure the optimiser's? The diagnostic learner again, at the
#: largest diagnostic size only, with one setting changed at a time (label -> RBCQConfig overrides).
OPTIMISER_VARIANTS = {
    "lr 1e-4, batch 1024": {"lr": 1e-4, "batch_size": 1024},
    "hidden 256": {"hidden": 256},
    "target sync every 50": {"target_update_every": 50},
}
#: Group ``tuned``: the optimiser setting that passed without reward noise, on the 0/1 rewards.
TUNED = ("lr 1e-4, batch 1024", {"lr": 1e-4, "batch_size": 1024})


def run_seed(s: dict, seed: int, rbcq: RBCQConfig, progress: bool, groups: tuple[str, ...] = ("main",)
             ) -> tuple[list[dict], list[dict]]:
    """Every size for one seed: the data, its resolution, the learners along their lengths, the controls.

    ``groups``: ``main`` (single-λ and λ-generalized R-BCQ, the two controls) and/or ``expected-rewards``
    (a diagnostic: the single-λ R-BCQ trained on the same transitions with each 0/1 reward replaced by its
    exact probability, sizes up to ``expected_max_users``; the top sets stay those of the 0/1 data) and/or
    ``optimiser`` (that diagnostic at ``expected_max_users`` with each of ``OPTIMISER_VARIANTS``) and/or
    ``tuned`` (single-λ R-BCQ on the 0/1 rewards at ``expected_max_users`` with the ``TUNED`` setting).
    """
    rows, resolutions = [], []
    table = sim.exact_retention_table(sim.CouponSimConfig())
    for n_users in s["sizes"]:
        if "main" not in groups and n_users > s["expected_max_users"]:
            continue
        if set(groups) <= {"optimiser", "tuned"} and n_users != s["expected_max_users"]:
            continue
        config = sim.CouponSimConfig(n_users=n_users)
        values = np.asarray(config.coupon_values)
        episodes = sim.simulate(config, rng=np.random.default_rng(seed), stochastic_policy=sim.logging_policy())
        data = CouponDataset.from_episodes(episodes)
        resolution = data_resolution(data, exact_next_day_table(config, episodes), table, s["n_se"])
        datasets, overrides = {}, {}
        if "main" in groups:
            resolutions.append({"seed": seed, "n_users": n_users, "transitions": len(data),
                                **resolution_record(resolution)})
            datasets["single-lambda"] = (data, np.array([0.0], dtype=np.float32))
            if n_users <= s["gen_max_users"]:
                datasets["lambda-generalized"] = (data, lambda_grid())
        if "expected-rewards" in groups and n_users <= s["expected_max_users"]:
            expected = exact_next_day_probabilities(config, episodes).astype(np.float32)
            datasets["single-lambda, expected rewards (diagnostic)"] = (
                CouponDataset(data.observations, data.actions, expected, data.costs, data.next_observations,
                              data.terminals), np.array([0.0], dtype=np.float32))
        if "optimiser" in groups and n_users == s["expected_max_users"]:
            expected = exact_next_day_probabilities(config, episodes).astype(np.float32)
            for label, change in OPTIMISER_VARIANTS.items():
                name = f"single-lambda, expected rewards, {label} (diagnostic)"
                datasets[name] = (
                    CouponDataset(data.observations, data.actions, expected, data.costs, data.next_observations,
                                  data.terminals), np.array([0.0], dtype=np.float32))
                overrides[name] = change
        if "tuned" in groups and n_users == s["expected_max_users"]:
            name = f"single-lambda, {TUNED[0]}"
            datasets[name] = (data, np.array([0.0], dtype=np.float32))
            overrides[name] = TUNED[1]
        del episodes
        lengths = [max(1, int(round(f * n_users))) for f in s["steps_per_user"]]  # noqa: RUF046
        for name, (train_data, grid) in datasets.items():
            learner = RBCQ(replace(rbcq, lambda_low=float(grid.min()), lambda_high=float(grid.max()),
                                   **overrides.get(name, {})), seed=seed)
            sampler, rng, done = LambdaSampler(train_data, grid), np.random.default_rng(seed), 0
            if name == "single-lambda":  # negative control: the same learner before any update
                learner.set_horizon(config.horizon)
                rows.append({"learner": "untrained (control)", "seed": seed, "n_users": n_users, "length": 0,
                             **check_policy(config, resolution, learner, learner.policy(0.0), values, s, seed)})
            for length in lengths:
                start = time.perf_counter()
                learner.fit(sampler, length - done, rng, progress=progress)
                done = length
                rows.append({"learner": name, "seed": seed, "n_users": n_users, "length": length,
                             "train_seconds": round(time.perf_counter() - start, 1),
                             **check_policy(config, resolution, learner, learner.policy(0.0), values, s, seed)})
                print({k: rows[-1][k] for k in ("learner", "seed", "n_users", "length", "share_of_ceiling",
                                                 "top_set_share", "retention_gap", "tolerance", "holds")},
                      flush=True)
            if name == "single-lambda":  # negative control: the smallest eligible coupon, trained filter
                rows.append({"learner": "smallest eligible (control)", "seed": seed, "n_users": n_users,
                             "length": lengths[-1],
                             **check_policy(config, resolution, learner, floor_policy(learner, 0.0), values, s,
                                            seed)})
    return rows, resolutions


def summarise(quick: bool, settings: dict, rows: list[dict], resolutions: list[dict], machines: list[dict],
              wall: float) -> dict:
    """The result file: every run, the resolution per dataset, and means over seeds per cell."""
    cells = {}
    for r in rows:
        cells.setdefault((r["learner"], r["n_users"], r["length"]), []).append(r)
    summary = []
    for (learner, n_users, length), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        entry = {"learner": learner, "n_users": n_users, "length": length, "seeds": [r["seed"] for r in rs],
                 "holds": sum(r["holds"] for r in rs), "holds_top_set": sum(r["holds_top_set"] for r in rs),
                 "holds_retention": sum(r["holds_retention"] for r in rs)}
        for key in ("share_of_ceiling", "top_set_share", "retention_gap", "retention_gap_se", "tolerance"):
            vals = [r[key] for r in rs]
            m, h = mean_ci(vals) if len(vals) >= 2 else (vals[0], None)
            entry[key], entry[f"{key}_half_width"] = m, h
        summary.append(entry)
    return {"benchmark": NAME, "quick": quick, "machine": machines[0], "machines": machines,
            "settings": settings, "runs": rows, "resolution": resolutions, "summary": summary,
            "check_rule": f"holds if at least {settings['min_top_set_share']:g} of the λ = 0 decisions lie in "
                          "the top set of their state (coupons whose exact next-day gap to the ceiling is within "
                          f"{settings['n_se']:g} SE of its estimate from the logged data) and the retention gap to "
                          f"the ceiling policy is at most the top set's exact loss + {settings['n_se']:g} paired SE",
            "benchmark_wall_seconds": round(wall, 1)}


def merge(paths: list[Path], out_dir: Path) -> Path:
    """One result from per-seed files (``--part --seeds N``), seeds in order."""
    parts = sorted((json.loads(Path(p).read_text()) for p in paths), key=lambda d: d["settings"]["seeds"][0])
    settings = {**parts[0]["settings"], "seeds": sorted({x for d in parts for x in d["settings"]["seeds"]}),
                "groups": sorted({g for d in parts for g in d["settings"].get("groups", ["main"])}),
                # settings a group added (its variants) come from the parts that ran it
                **{k: v for d in parts for k, v in d["settings"].items() if k not in parts[0]["settings"]},
                "run_as": f"{len(parts)} processes (one per seed and group of learners) through the 2-slot "
                          "CPU wrapper"}
    payload = summarise(parts[0]["quick"], settings, [r for d in parts for r in d["runs"]],
                        [r for d in parts for r in d["resolution"]], [d["machine"] for d in parts],
                        max(d["benchmark_wall_seconds"] for d in parts))
    path = write_results(NAME + ("_quick" if parts[0]["quick"] else ""), payload, out_dir)
    print(f"merged {len(parts)} parts; wrote {path}")
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 1 2 3; 1 2 with --quick")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--part", action="store_true", help="write <name>_seed<first seed>.json (then --merge)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="combine per-seed result files")
    parser.add_argument("--groups", nargs="+", default=["main"], choices=["main", "expected-rewards", "optimiser", "tuned"],
                        help="main: the learners and controls; expected-rewards: the noise-free diagnostic; "
                             "optimiser: that diagnostic with other optimiser settings; tuned: the 0/1 "
                             "rewards with the setting that passed there")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out_dir)
    torch.set_num_threads(1)
    s = dict(QUICK if args.quick else FULL)
    seeds = args.seeds or ([1, 2] if args.quick else [1, 2, 3])
    rbcq = RBCQConfig(hidden=8, n_heads=2, batch_size=32) if args.quick else RBCQConfig()
    settings = {**s, "seeds": seeds, "rbcq_hidden": rbcq.hidden, "rbcq_heads": rbcq.n_heads,
                "batch_size": rbcq.batch_size, "rbcq_lr": rbcq.lr, "bcq_threshold": rbcq.bcq_threshold,
                "lambda_grid": "0..1 step 0.05 (lambda-generalized); 0 (single-lambda)",
                "data": "logging policy of chapter 9, data seed = learner seed", "groups": args.groups,
                "optimiser_variants": OPTIMISER_VARIANTS, "tuned": dict([TUNED])}
    started = time.perf_counter()
    rows, resolutions = [], []
    path = None
    for seed in seeds:
        r, res = run_seed(s, seed, rbcq, args.progress, tuple(args.groups))
        rows += r
        resolutions += res
        group = "" if args.groups == ["main"] else "_" + "_".join(args.groups)
        name = NAME + ("_quick" if args.quick else "") + (f"{group}_seed{seeds[0]}" if args.part else "")
        path = write_results(name, summarise(args.quick, settings, rows, resolutions, [machine_info()],
                                             time.perf_counter() - started), args.out_dir)
        print(f"[{time.perf_counter() - started:.0f} s] seed {seed} done; wrote {path}", flush=True)
    return path


if __name__ == "__main__":
    main()
