"""What scoring from a cut saves the knapsack: its sensitivity table scored both ways, side by side.

    python benchmarks/downstream_speed.py --model resnet56 --weights ../shared/data/pretrained/cifar10jpeg/resnet56.pt \\
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --ratio 0.2 --options 3 --threads 1

For every decision in turn, its options (one decision changed from the whole network, as the knapsack's first
pass scores them) are scored in full (`Scorer`, no racing, the first 1,000 held-out images) and then from a cut
(`amc.downstream.DownstreamProbe`), so both see the same machine load. Checks that every score is the same,
and prints the seconds of each per stage of the network (the third of the decisions in depth order) and in all.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from amc.agents.knapsack import SENSITIVITY_IMAGES
from amc.budget import Budget
from amc.config import SearchConfig
from amc.downstream import DownstreamProbe
from amc.pipeline import prepare
from bench_args import add_model_and_data  # run as a script: benchmarks/ is on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_data(parser)
    parser.add_argument("--lbound", type=float)
    parser.add_argument("--options", type=int, default=3, help="options per decision (the knapsack scores 8)")
    parser.add_argument("--images", type=int, default=SENSITIVITY_IMAGES)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    config = SearchConfig(model=args.model, weights=args.weights, data=args.data, data_dir=args.data_dir,
                          ratio=args.ratio, lbound=args.lbound, agent="knapsack", threads=args.threads)
    torch.set_num_threads(args.threads)
    setup = prepare(config)
    budget = Budget(setup.graph, config.env_config)
    plain = setup.scorer.variant(racing=False, evaluator=setup.scorer.evaluator.limited(args.images))
    probe = DownstreamProbe(plain.variant())
    whole = [int(c) for c in budget.channels]
    t0 = time.perf_counter()
    probe.rebase(whole)
    rebase = time.perf_counter() - t0
    plain(whole)
    seconds = np.zeros((len(whole), 2))
    for i, allowed in enumerate(budget.allowed):
        picks = np.unique(np.round(np.linspace(0, len(allowed) - 2, args.options)).astype(int))
        for count in allowed[picks]:
            keep = list(whole)
            keep[i] = int(count)
            t0 = time.perf_counter()
            full = float(plain(keep))
            t1 = time.perf_counter()
            cut = float(probe(keep))
            seconds[i] += (t1 - t0, time.perf_counter() - t1)
            if full != cut:
                raise AssertionError(f"decision {i} at {count}: {full} in full, {cut} from a cut")
    print(f"{args.model}, {len(whole)} decisions x {args.options} options, {args.images} held-out images, "
          f"{args.threads} thread(s); the probe's base built and scored once in {rebase:.1f} s; every score equal")
    print("| decisions | in full (s) | from a cut (s) | ratio |")
    print("| --- | --- | --- | --- |")
    thirds = np.array_split(np.arange(len(whole)), 3)
    for name, rows in [(f"{r[0] + 1}-{r[-1] + 1}", r) for r in thirds] + [("all", np.arange(len(whole)))]:
        full, cut = seconds[rows].sum(axis=0)
        print(f"| {name} | {full:.1f} | {cut:.1f} | {full / cut:.2f}x |")


if __name__ == "__main__":
    main()
