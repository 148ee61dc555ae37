"""Does bf16 scoring rank candidates like fp32? Held-out top-1 of sampled 50%-MACs policies, both ways.

    python benchmarks/scoring_precision.py --model resnet56 \
        --weights ../shared/data/pretrained/cifar10jpeg/resnet56.pt \
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --policies 12

Policy 0 is uniform, the rest are random actions through the environment's budget clipping.
Prints per-policy accuracies and times, Kendall's tau between the two precisions and the mean gap.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import kendalltau

from amc.config import SearchConfig
from amc.evaluate import Evaluator
from amc.pipeline import prepare
from amc.search import build_env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--policies", type=int, default=12)
    args = parser.parse_args()
    # a search's scorer (3,000 calibration images, seed 0, no BN recalibration) scoring in fp32, and in bf16
    config = SearchConfig(model=args.model, weights=args.weights, data="cifar10", data_dir=args.data_dir,
                          ratio=args.ratio, bn_recalibration=0, racing=False)
    setup = prepare(config)
    scorer, info = setup.scorer, setup.info
    fp32 = scorer.evaluator
    bf16 = Evaluator(setup.dataset.heldout, info.mean, info.std, precision="bf16")
    print(f"unpruned held-out top-1 (fp32): {setup.baseline_top1():.4f}")
    env, _ = build_env(setup, config)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(args.policies):
        env.reset()
        done = False
        with env.deferred_scoring():  # the policy only: it is scored below, both ways
            while not done:
                action = env.budget.uniform_ratio() if i == 0 else rng.uniform(env.config.lbound, 1.0)
                _, _, done, _, info_step = env.step(np.array([action], dtype=np.float32))
        net = scorer.build(info_step["keep_counts"])
        t0 = time.perf_counter()
        a = fp32.top1(net)
        t1 = time.perf_counter()
        b = bf16.top1(net)
        t2 = time.perf_counter()
        rows.append((a, b, t1 - t0, t2 - t1))
        print(f"policy {i}: macs ratio {info_step['macs_ratio']:.4f}  fp32 {a:.4f} ({t1 - t0:.1f}s)  "
              f"bf16 {b:.4f} ({t2 - t1:.1f}s)", flush=True)
    a, b, ta, tb = map(list, zip(*rows))
    print(f"Kendall tau {kendalltau(a, b)[0]:.3f}; mean |fp32 - bf16| {100 * np.mean(np.abs(np.subtract(a, b))):.3f} "
          f"points; median time fp32 {np.median(ta):.2f}s bf16 {np.median(tb):.2f}s "
          f"(torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
