"""Which no-fine-tune score predicts a policy's accuracy after fine-tuning? BN recalibration x reconstruction.

    python benchmarks/bn_recalibration.py --model resnet56 --weights ../shared/data/pretrained/cifar10jpeg/resnet56.pt \\
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --policies 20 --finetune-steps 300 \\
        --out runs/bench/bn-study

Samples policies at the budget (uniform, then random actions through the environment's clipping, as a
search's candidates are), scores each without fine-tuning four ways (least-squares reconstruction on/off,
BN statistics recalibrated on training batches or not), then fine-tunes the pruned model our search
would export (reconstructed) for a fixed number of steps and scores it again. Reports Kendall's tau of each
no-fine-tune score with the fine-tuned accuracy. Every policy's numbers are saved as they are produced,
so a killed run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau

from amc.config import SearchConfig
from amc.data import batches
from amc.pipeline import prepare
from amc.scoring import build_scorer, recalibration_batches
from amc.search import build_env

CONDITIONS = ("ls", "ls+bn", "plain", "plain+bn")


def short_finetune(model: torch.nn.Module, dataset, info, steps: int, lr: float, seed: int) -> torch.nn.Module:
    """`steps` SGD steps (batch 128, cosine from `lr`, augmentation), bf16 autocast, channels-last."""
    model.train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    while step < steps:
        for x, y in batches(dataset.train, 128, mean=info.mean, std=info.std, shuffle=True, augment=True,
                            generator=generator):
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / steps))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--recalibration-batches", type=int, default=2, help="batches of 100 training images")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "policies.jsonl"
    done = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.exists() else []

    # scored as a search scores (3,000 calibration images, seed 0, fp32 on the whole held-out split), in full
    config = SearchConfig(model=args.model, weights=args.weights, data="cifar10", data_dir=args.data_dir,
                          ratio=args.ratio, bn_recalibration=0, racing=False, threads=args.threads)
    setup = prepare(config)
    dataset, info = setup.dataset, setup.info
    ls = setup.scorer  # least-squares reconstruction
    plain = build_scorer(setup.model, setup.graph, dataset, SearchConfig.resolve(config, reconstruct=False),
                         images=ls.calibration)
    recalibration = recalibration_batches(ls.calibration, args.recalibration_batches)
    scorers = {"ls": ls, "ls+bn": ls.variant(recalibration=recalibration),
               "plain": plain, "plain+bn": plain.variant(recalibration=recalibration)}
    env, _ = build_env(setup, config)
    rng = np.random.default_rng(0)
    policies = [env.budget.uniform_counts(env.budget.uniform_ratio())]
    with env.deferred_scoring():  # policies only: they are scored below
        while len(policies) < args.policies:  # random actions through the clipping, as a search's candidates
            env.reset()
            done_episode = False
            while not done_episode:
                _, _, done_episode, _, info_step = env.step(np.array([rng.uniform(0.2, 1.0)], dtype=np.float32))
            policies.append(info_step["keep_counts"])

    for index in range(len(done), len(policies)):
        keep = policies[index]
        t0 = time.perf_counter()
        row = {"policy": index, "keep": keep}
        for condition in CONDITIONS:
            row[condition] = scorers[condition](keep).accuracy
        tuned = short_finetune(ls.build(keep), dataset, info, args.finetune_steps, args.lr, seed=index)
        row["finetuned"] = ls.evaluator.top1(tuned)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        done.append(row)
        with results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "keep"}), flush=True)

    finetuned = [r["finetuned"] for r in done]
    lines = [(f"{args.model} at {args.ratio:g} MACs, {len(done)} policies (policy 0 = uniform), held-out top-1; "
             f"fine-tune: {args.finetune_steps} SGD steps of 128 from the reconstructed model, lr {args.lr}; "
             f"BN recalibration: {args.recalibration_batches} x 100 training images"),
             "", "| no-fine-tune score | mean top-1 | Kendall tau with fine-tuned top-1 |", "| --- | --- | --- |"]
    for condition in CONDITIONS:
        scores = [r[condition] for r in done]
        lines.append(f"| {condition} | {100 * np.mean(scores):.2f} | {kendalltau(scores, finetuned)[0]:.3f} |")
    lines.append(f"| (fine-tuned) | {100 * np.mean(finetuned):.2f} | 1 |")
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
