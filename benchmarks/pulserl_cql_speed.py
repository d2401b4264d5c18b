"""Training speed: d3rlpy DiscreteCQL vs the plain-PyTorch CQL update, same network and batch.

Both use a 63 -> 256 -> 256 -> 2 MLP, batch 256, Adam, one torch thread, on surrogate PulseRL
transitions; also the quantile version (QR Q-function) of both. Writes
``benchmarks/results/pulserl_cql_speed.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


import pulserl_common as common


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    common.setup_one_thread()
    import d3rlpy

    from pulse_lib.pulserl import agents as A
    from pulse_lib.pulserl import data as D
    from pulse_lib.pulserl import simulator as S

    A.quiet_d3rlpy()
    n_users, n_steps, n_quantiles = (50, 20, 8) if args.quick else (2_000, 400, 32)
    table = S.generate_logged_dataset(n_users, seed=0)
    dataset = D.to_mdp_dataset(table)
    arrays = (D.observations(table), table["action"].to_numpy(), table["reward"].to_numpy(),
              D.observations(table, next_=True), table["done"].to_numpy(float))
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256])
    results = {}
    for label, quantiles in (("mean_q", 1), (f"qr_{n_quantiles}_quantiles", n_quantiles)):
        q_factory = (d3rlpy.models.MeanQFunctionFactory() if quantiles == 1
                     else d3rlpy.models.QRQFunctionFactory(n_quantiles=quantiles))
        algo = d3rlpy.algos.DiscreteCQLConfig(alpha=4.0, batch_size=256, learning_rate=5e-5, encoder_factory=encoder,
                                              q_func_factory=q_factory).create(device="cpu")
        A.fit_d3rlpy(algo, dataset, n_steps=5)  # build and warm up
        start = time.perf_counter()
        A.fit_d3rlpy(algo, dataset, n_steps=n_steps)
        d3_rate = n_steps / (time.perf_counter() - start)
        agent = A.TorchCQL(A.CQLConfig(alpha=4.0, n_quantiles=quantiles, hidden=(256, 256)), seed=0)
        agent.fit(*arrays, n_steps=5)
        start = time.perf_counter()
        agent.fit(*arrays, n_steps=n_steps)
        torch_rate = n_steps / (time.perf_counter() - start)
        results[label] = {"d3rlpy_steps_per_s": round(d3_rate, 1), "plain_torch_steps_per_s": round(torch_rate, 1),
                          "speedup_plain_over_d3rlpy": round(torch_rate / d3_rate, 2)}
        print(label, results[label], flush=True)
    payload = {"benchmark": "pulserl_cql_speed", "quick": args.quick, "machine": common.machine_info(),
               "setting": {"network": "63-256-256-2 MLP", "batch_size": 256, "steps_timed": n_steps,
                           "transitions": len(table), "alpha": 4.0},
               "results": results}
    return common.write_results("pulserl_cql_speed", payload, args.out_dir)


if __name__ == "__main__":
    print(main())
