"""How well the latency budget's cost model predicts real networks: channel-narrowed and block-dropped.

    python benchmarks/latency_model_error.py --model resnet56 --backend onnxruntime --policies 12

Builds the latency model exactly as `amc search --target latency --drop-blocks` does (per-layer table, each
droppable block timed whole, calibration on whole networks; `amc.latency.guard.calibrated_latency_model`), then
draws random policies through the environment at budgets spread over the reachable range, half with residual
blocks dropped and half channels only, builds each network and times it against the original side by side
(`measure_interleaved`, as the latency guard does). Prints per policy the predicted and measured latency ratio
and, per kind, the mean and largest relative error. Random weights: latency does not depend on the values.
"""

from __future__ import annotations

import argparse

import numpy as np

from amc import models
from amc.config import SearchConfig
from amc.env import Budget, CompressionEnv
from amc.graph import LayerGraph
from amc.latency import BACKENDS, cpu_name
from amc.latency.guard import calibrated_latency_model, measure_interleaved
from amc.pruning import ChannelPruner


def random_policy(env: CompressionEnv, rng: np.random.Generator, drops: bool) -> list[int]:
    """One episode of uniform random actions (drops only when `drops`), clipped to `env`'s budget."""
    env.reset()
    while True:
        low = 0.0 if drops else env.config.lbound
        _, _, done, _, info = env.step([rng.uniform(low, 1.0)])
        if done:
            return info["keep_counts"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--lbound", type=float, default=0.2)
    parser.add_argument("--channel-round", type=int, default=1, help="Kept channels in multiples of this.")
    parser.add_argument("--policies", type=int, default=12, help="Policies per kind (dropped / channels only).")
    parser.add_argument("--rounds", type=int, default=8, help="Interleaved rounds per measured pair.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model = models.create(args.model).eval()
    shape = models.model_info(model).input_shape
    graph = LayerGraph(model, shape)
    config = SearchConfig(model=args.model, target="latency", ratio=0.6, lbound=args.lbound, drop_blocks=True,
                          channel_round=args.channel_round,
                          latency_backend=args.backend, latency_threads=args.threads, latency_batch=args.batch)
    latency = calibrated_latency_model(model, graph, config.env_config, config)
    full = graph.full_keep()
    shrink = ChannelPruner(model, graph, None, selection="magnitude", reconstruct=False)
    rng = np.random.default_rng(args.seed)
    print(f"{args.model} on {args.backend}, batch {args.batch}, {args.threads} thread(s), channels in multiples of "
          f"{args.channel_round}, CPU {cpu_name()}; "
          f"calibration offset {latency.offset_ms:.3f} ms, scale {latency.scale:.3f}\n")
    print("| kind | budget | blocks dropped | MACs share | predicted ratio | measured ratio | error |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    errors: dict[str, list[float]] = {"blocks dropped": [], "channels only": []}
    for i in range(2 * args.policies):
        drops = i % 2 == 0
        budget = float(rng.uniform(0.45 if drops else 0.65, 0.95))
        env_config = SearchConfig.resolve(config, ratio=budget, drop_blocks=drops).env_config
        env = CompressionEnv(Budget(graph, env_config, latency.predict), lambda keep: 0.0)
        keep = random_policy(env, rng, drops)
        predicted = latency.predict(keep) / latency.predict(full)
        original_ms, pruned_ms = measure_interleaved([model, shrink.prune(keep)[0]], shape, config, args.rounds)
        measured = pruned_ms / original_ms
        kind = "blocks dropped" if drops else "channels only"
        errors[kind].append((predicted - measured) / measured)
        print(f"| {kind} | {budget:.2f} | {sum(k == 0 for k in keep)} | {graph.macs(keep) / graph.total_macs:.3f} "
              f"| {predicted:.3f} | {measured:.3f} | {errors[kind][-1]:+.1%} |", flush=True)
    print("\n| kind | policies | mean error | mean abs error | largest abs error |\n| --- | --- | --- | --- | --- |")
    for kind, values in errors.items():
        values = np.asarray(values)
        print(f"| {kind} | {len(values)} | {values.mean():+.1%} | {np.abs(values).mean():.1%} | "
              f"{np.abs(values).max():.1%} |")


if __name__ == "__main__":
    main()
