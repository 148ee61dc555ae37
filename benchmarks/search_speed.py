"""Where a search episode's time goes, against the physical limit: one bare forward pass of the pruned network
over the held-out split.

    python benchmarks/search_speed.py --model resnet56 --weights ../shared/data/pretrained/cifar10jpeg/resnet56.pt \\
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --episodes 40 --precision bf16 --out runs/bench/speed

Runs a short DDPG search (its episodes.jsonl records prune / recalibrate / evaluate / agent time per
episode), times the one-off setup (`amc.pipeline.prepare`: model, graph, feature sampling), then times a
bare forward pass of each of the last episodes' pruned networks over the same held-out batches, in the same
precision and thread count, interleaved with re-scoring the same network through the scorer's evaluator so
both see the same machine load; the ratio is (the episode's logged pruning and agent time + that
re-scoring) / bare forward. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import amc
from amc.config import SearchConfig
from amc.data import batches, load_dataset
from amc.pipeline import prepare
from amc.runs import RunDir
from bench_args import add_model_and_data  # run as a script: benchmarks/ is on sys.path


def bare_forward_seconds(model: torch.nn.Module, images: list[torch.Tensor], precision: str) -> float:
    """Forward passes only: no argmax, no accuracy bookkeeping, no layout conversion."""
    model.eval().to(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast:
        for x in images:
            model(x)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_and_data(parser, model="resnet56")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--bn-recalibration", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--last", type=int, default=10, help="episodes (from the end) to compare in detail")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data, args.data_dir)
    config = SearchConfig(model=args.model, weights=args.weights, data=args.data, data_dir=args.data_dir,
                          ratio=args.ratio, agent="ddpg", episodes=args.episodes, warmup=args.warmup, precision=args.precision,
                          bn_recalibration=args.bn_recalibration, threads=args.threads, seed=0)
    out = Path(args.out)
    t0 = time.perf_counter()
    amc.search(data=dataset, config=config, out=out, resume=RunDir(out).has_state())
    wall = time.perf_counter() - t0
    log = RunDir(out).read_episodes()

    # the one-off setup as the search does it: model, graph and the feature sampling for the least-squares
    # statistics (the data are loaded already)
    t0 = time.perf_counter()
    setup = prepare(config, dataset=dataset)
    sampling = time.perf_counter() - t0

    # the last episodes' networks: bare forward against the scorer's evaluator, interleaved
    scorer, info = setup.scorer, setup.info
    evaluator = scorer.evaluator
    images = [x.contiguous(memory_format=torch.channels_last)  # the evaluator's batches, as it lays them out
              for x, _ in batches(dataset.heldout, config.eval_batch_size, mean=info.mean, std=info.std)]
    ratios, bare_times = [], []
    for record in log[-args.last:]:
        pruned = scorer.build(record["keep"])
        evaluator.top1(pruned)  # warm
        scored, bare = float("inf"), float("inf")
        for _ in range(2):  # alternate, so that a change of machine load hits both
            t0 = time.perf_counter()
            evaluator.top1(pruned)
            scored = min(scored, time.perf_counter() - t0)
            bare = min(bare, bare_forward_seconds(pruned, images, args.precision))
        bare_times.append(bare)
        # the episode as it would run now: its logged non-scoring parts plus the scoring just timed
        overhead = record["seconds"] - record["timing"]["evaluate"]
        ratios.append((overhead + scored) / bare)

    def mean(key: str, part: str | None = None) -> float:
        rows = log[-args.last:]
        return statistics.mean(r["timing"][part] if part else r[key] for r in rows)

    lines = [f"{args.model}, {args.ratio:g} MACs, {args.precision}, {args.threads} threads, "
             f"{len(dataset.heldout)} held-out images, last {args.last} of {len(log)} episodes",
             "", "| part | seconds per episode | share |", "| --- | --- | --- |"]
    episode = mean("seconds")
    for part in ("prune", "recalibrate", "evaluate", "agent_and_env"):
        lines.append(f"| {part} | {mean('', part):.3f} | {mean('', part) / episode:.1%} |")
    lines += [f"| **episode** | {episode:.3f} | 100% |",
              f"| bare forward of the same networks | {statistics.mean(bare_times):.3f} | |",
              "", f"episode / bare forward: median {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f})",
              f"one-off setup (model, graph, feature sampling of {config.calibration_images} images x "
              f"{config.points_per_image} positions): {sampling:.1f} s; "
              f"search wall time for {len(log)} episodes: {wall:.0f} s"]
    text = "\n".join(lines)
    print(text)
    (out / "speed.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
