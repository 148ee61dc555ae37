"""One knapsack refinement around the global magnitude allocation (fine-grained mode): can the knapsack improve
on NNCF's rule once it is the base? (issue 31, RESULTS.md "amc's default in fine-grained mode").

    PYTHONPATH=src python benchmarks/knapsack_refine_around.py --model resnet56 \\
        --weights ../shared/data/pretrained/cifar10jpeg/resnet56.pt \\
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --ratio 0.2 --out refine.json

The rounds `amc.agents.knapsack.knapsack_ratios` runs (`knapsack.refinements`, each kept only if it scores higher
on the same 1,000 held-out images), but starting from the global ranking's allocation. Writes the start, each
round's allocation, score and seconds, and the kept allocation's fp32 held-out and test top-1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from amc.agents import knapsack
from amc.budget import Budget
from amc.config import SearchConfig
from amc.evaluate import Evaluator
from amc.pipeline import prepare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet56")
    p.add_argument("--weights")
    p.add_argument("--data", default="cifar10")
    p.add_argument("--data-dir")
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--lbound", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    config = SearchConfig(model=a.model, weights=a.weights, data=a.data, data_dir=a.data_dir, method="fine-grained",
                          target="params", ratio=a.ratio, lbound=a.lbound, agent="knapsack", episodes=1,
                          heldout_limit=1000, threads=1, device="cpu")
    setup = prepare(config)
    budget = Budget(setup.graph, config.env_config)
    probe = knapsack._probe(setup.scorer, knapsack.SENSITIVITY_IMAGES)
    keep = knapsack.references(budget, setup.scorer.pruner)["global magnitude"]
    score = float(probe(keep))
    out = {"start": keep, "start_score": score, "rounds": []}
    t0 = time.perf_counter()
    for r, (new, new_score) in enumerate(itertools.islice(knapsack.refinements(budget, probe, keep, score), a.rounds)):
        out["rounds"].append({"keep": new, "score": new_score, "seconds": time.perf_counter() - t0})
        print(f"round {r + 1}: {score:.4f} -> {new_score:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if new_score <= score:
            break
        keep, score = new, new_score
        t0 = time.perf_counter()
    model = setup.scorer.build(keep).eval()
    out["final"] = keep
    for split in ("heldout", "test"):
        out[f"{split}_top1"] = Evaluator(getattr(setup.dataset, split), setup.info.mean, setup.info.std).top1(model)
    with open(a.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
