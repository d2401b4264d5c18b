"""Training speed: d3rlpy DiscreteCQL vs the plain-PyTorch CQL update, same network and batch.

Both train CQL(H) on a 63 -> 256 -> 256 -> 2 MLP with the released PulseRL configuration
(dlb-rl/pulse-rl, ``src/train_model/batch_rl/fixed_replay/configs/quantile.gin``): alpha 4,
gamma 0.99, Adam learning rate 5e-5 and epsilon 3.125e-4, target copy every 2,000 gradient
steps, batch 256; one torch thread, surrogate PulseRL transitions. Three Q-functions: the mean
(1 quantile), 32 quantiles and the paper's 200 quantiles (d3rlpy ``QRQFunctionFactory``,
``TorchCQL(n_quantiles=...)``). The two learners are timed in alternating rounds in one run,
so a change in the machine's load hits both; the ratio ``speedup_plain_over_d3rlpy`` is the
robust number, the absolute steps/s depend on the load (recorded). d3rlpy at 200 quantiles
does about one step per second, so it is timed over fewer steps than TorchCQL.

Also recorded: the quantile Huber loss alone (forward + backward at batch 256 x 200 x 200),
pairwise reference vs the library's exact sorted form; and the wall time of one ``full``-profile
seed of chapter 07's QR-CQL (50,000 gradient steps), extrapolated from the timed steps.
Writes ``benchmarks/results/pulserl_cql_speed.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pulserl_common as common

FULL_PROFILE_STEPS = 50_000  # chapter 07's `full` profile: gradient steps per seed
RELEASED = {"alpha": 4.0, "gamma": 0.99, "learning_rate": 5e-5, "adam_epsilon": 3.125e-4,
            "target_update_interval": 2_000, "batch_size": 256}


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    common.setup_one_thread()
    import d3rlpy
    import torch

    from pulse_lib.pulserl import agents as A
    from pulse_lib.pulserl import data as D
    from pulse_lib.pulserl import simulator as S

    A.quiet_d3rlpy()
    n_users = 50 if args.quick else 2_000
    # (quantiles, d3rlpy steps per round, TorchCQL steps per round, rounds)
    plan = ([(1, 4, 4, 1), (8, 3, 3, 1)] if args.quick
            else [(1, 100, 200, 4), (32, 50, 200, 4), (200, 6, 500, 4)])
    table = S.generate_logged_dataset(n_users, seed=0)
    dataset = D.to_mdp_dataset(table)
    arrays = (D.observations(table), table["action"].to_numpy(), table["reward"].to_numpy(),
              D.observations(table, next_=True), table["done"].to_numpy(float))
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256])
    results = {}
    for quantiles, d3_steps, torch_steps, rounds in plan:
        q_factory = (d3rlpy.models.MeanQFunctionFactory() if quantiles == 1
                     else d3rlpy.models.QRQFunctionFactory(n_quantiles=quantiles))
        algo = d3rlpy.algos.DiscreteCQLConfig(
            alpha=RELEASED["alpha"], gamma=RELEASED["gamma"], batch_size=RELEASED["batch_size"],
            learning_rate=RELEASED["learning_rate"], target_update_interval=RELEASED["target_update_interval"],
            optim_factory=d3rlpy.optimizers.AdamFactory(eps=RELEASED["adam_epsilon"]),
            encoder_factory=encoder, q_func_factory=q_factory).create(device="cpu")
        agent = A.TorchCQL(A.CQLConfig(n_quantiles=quantiles, alpha=RELEASED["alpha"], gamma=RELEASED["gamma"],
                                       learning_rate=RELEASED["learning_rate"], batch_size=RELEASED["batch_size"],
                                       hidden=(256, 256), target_update_interval=RELEASED["target_update_interval"]),
                           seed=0)
        for group in agent.optim.param_groups:  # the released Adam epsilon, whatever CQLConfig's default
            group["eps"] = RELEASED["adam_epsilon"]
        A.fit_d3rlpy(algo, dataset, n_steps=3)  # build and warm up
        agent.fit(*arrays, n_steps=5)
        d3_wall = d3_cpu = torch_wall = torch_cpu = 0.0
        for _ in range(rounds):  # alternate, so a change of load hits both
            wall, cpu = _timed(lambda algo=algo, n=d3_steps: A.fit_d3rlpy(algo, dataset, n_steps=n))
            d3_wall, d3_cpu = d3_wall + wall, d3_cpu + cpu
            wall, cpu = _timed(lambda agent=agent, n=torch_steps: agent.fit(*arrays, n_steps=n))
            torch_wall, torch_cpu = torch_wall + wall, torch_cpu + cpu
        d3_rate, torch_rate = d3_steps * rounds / d3_wall, torch_steps * rounds / torch_wall
        label = "mean_q" if quantiles == 1 else f"qr_{quantiles}_quantiles"
        results[label] = {
            "n_quantiles": quantiles, "d3rlpy_steps_timed": d3_steps * rounds, "plain_steps_timed": torch_steps * rounds,
            "d3rlpy_steps_per_s": round(d3_rate, 2), "plain_torch_steps_per_s": round(torch_rate, 1),
            "speedup_plain_over_d3rlpy": round(torch_rate / d3_rate, 1),
            "speedup_by_cpu_time": round((torch_steps / torch_cpu) / (d3_steps / d3_cpu), 1)}
        print(label, results[label], flush=True)
    top = results[max(results, key=lambda k: results[k]["n_quantiles"])]
    top_steps_per_s = top["plain_torch_steps_per_s"]
    full_seed = {"steps": FULL_PROFILE_STEPS, "n_quantiles": top["n_quantiles"], "extrapolated": True,
                 "from_timed_steps": top["plain_steps_timed"],
                 "plain_torch_hours": round(FULL_PROFILE_STEPS / top_steps_per_s / 3600, 2),
                 "d3rlpy_hours": round(FULL_PROFILE_STEPS / top["d3rlpy_steps_per_s"] / 3600, 1)}
    print("full-profile seed (extrapolated)", full_seed, flush=True)

    # the loss alone at the paper's size: pairwise reference vs the exact sorted form
    size = (16, 32) if args.quick else (256, 200)
    pred = torch.randn(*size, requires_grad=True)
    target = torch.randn(*size)
    loss_ms = {}
    for name, fn, reps in (("pairwise", A.quantile_huber_loss_pairwise, 3), ("sorted", A.quantile_huber_loss, 30)):
        fn(pred, target).backward()  # warm up
        best = min(_timed(lambda fn=fn: fn(pred, target).backward())[0] for _ in range(reps))
        loss_ms[name] = round(best * 1e3, 2)
    loss_ms["speedup"] = round(loss_ms["pairwise"] / loss_ms["sorted"], 1)
    print("quantile Huber loss, forward + backward, ms", loss_ms, flush=True)

    payload = {"benchmark": "pulserl_cql_speed", "quick": args.quick, "machine": common.machine_info(),
               "setting": {"network": "63-256-256-2 MLP (x quantiles)", **RELEASED,
                           "config_source": "dlb-rl/pulse-rl src/train_model/batch_rl/fixed_replay/configs/quantile.gin",
                           "transitions": len(table), "timing": "alternating rounds, wall clock; CPU-time ratio too"},
               "results": results, "full_profile_seed_qr_cql": full_seed,
               "quantile_loss_fwd_bwd_ms": {"batch": size[0], "quantiles": size[1], **loss_ms}}
    return common.write_results("pulserl_cql_speed", payload, args.out_dir)


if __name__ == "__main__":
    print(main())
