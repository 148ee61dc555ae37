"""Episodes per minute on Ray actors (`--workers N`) against the single-process default, same search.

    python benchmarks/ray_throughput.py --model resnet20 --weights ../shared/data/pretrained/cifar10jpeg/resnet20.pt \\
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --episodes 300 --workers 2 --out runs/bench/ray

Runs the same DDPG search (model, budget, seed, episodes) three times, one after the other on the same
machine: in one process with `--workers` threads, scoring every candidate in full and racing them (the
single-process default), and on `--workers` local Ray actors of one thread each (Ray scores in full). Throughput
is taken between the first and the last finished episode (setup, Ray start-up and the final export are
reported apart), and the final quality of both is printed: held-out top-1 of the best policy and its test
top-1. Prints a markdown table; each search is an ordinary run directory, resumed if it exists.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import amc
from amc.config import SearchConfig
from amc.data import load_dataset
from amc.runs import RunDir
from bench_args import add_model_and_data  # run as a script: benchmarks/ is on sys.path


def timed_search(config: SearchConfig, data, out: Path) -> dict:
    finished: list[float] = []
    t0 = time.perf_counter()
    result = amc.search(config=config, data=data, out=out, resume=RunDir(out).has_state(),
                        progress=lambda record: finished.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    rate = (len(finished) - 1) / (finished[-1] - finished[0]) * 60 if len(finished) > 1 else float("nan")
    summary = RunDir(out).read_summary()
    first = finished[0] - t0 if finished else float("nan")
    return {"episodes_per_min": rate, "wall_s": wall, "first_episode_s": first, "episodes": len(finished),
            "best_val_top1": result.best_val_top1, "test_top1": summary.test_top1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_and_data(parser, model="resnet20")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    data = load_dataset(args.data, args.data_dir)
    common = dict(model=args.model, weights=args.weights, data=args.data, data_dir=args.data_dir, ratio=args.ratio,
                  agent="ddpg", episodes=args.episodes, precision=args.precision, seed=args.seed)
    rows = {
        f"one process, {args.workers} threads, full scoring": timed_search(
            SearchConfig(**common, threads=args.workers, racing=False), data, Path(args.out, "single")),
        f"one process, {args.workers} threads, racing (the default)": timed_search(
            SearchConfig(**common, threads=args.workers), data, Path(args.out, "single-racing")),
        f"Ray, {args.workers} actors x 1 thread": timed_search(
            SearchConfig(**common, threads=1, workers=args.workers), data, Path(args.out, f"ray{args.workers}")),
    }
    lines = [f"{args.model}, {args.ratio:g} MACs, {args.episodes} episodes, seed {args.seed}, {args.precision}", "",
             "| run | episodes / min | first episode done at s | wall s | best held-out top-1 | test top-1 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['episodes_per_min']:.1f} | {r['first_episode_s']:.0f} | {r['wall_s']:.0f} | "
                     f"{100 * r['best_val_top1']:.2f} | {100 * r['test_top1']:.2f} |")
    text = "\n".join(lines)
    print(text)
    Path(args.out, "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
