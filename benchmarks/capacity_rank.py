"""Does the share of parameters a policy keeps predict its accuracy after fine-tuning better than its held-out
score does? (issue 17: at 20% MACs the search's score ranks the policies that fine-tune best last.)

Reads the policies and results of `finetune_grid.py` (jobs.json with keep counts, results*.jsonl with the
test top-1 after the full fine-tune and the rebuilt model's held-out top-1) and prints, per budget, Kendall's
tau against the fine-tuned test top-1 of: held-out top-1 before fine-tuning (BN recalibrated), the share of
parameters kept, and held-out + beta x parameter share for a few beta. Fine-tune seed 0 only.

    python benchmarks/capacity_rank.py --jobs runs/grid/jobs-final.json \\
        --results runs/grid/results1.jsonl runs/grid/results2.jsonl runs/grid/results3.jsonl \\
        --budgets budgets-r20-r0.2 budgets-r20-r0.3 --model resnet20
"""

from __future__ import annotations

import argparse

import numpy as np
from grid_files import fine_tunes, read_jobs, read_records
from scipy.stats import kendalltau

from amc import models
from amc.graph import LayerGraph

BETAS = (0.1, 0.3, 0.5, 1.0, 2.0)


def points(jobs: dict, result_files: list[str], budget: str, graph: LayerGraph) -> list[tuple[float, float, float]]:
    """(parameter share, held-out before FT, test after FT) of every policy of `budget` fine-tuned with seed 0."""
    out = []
    for (job_id, ft_seed), r in fine_tunes(read_records(result_files)).items():
        if ft_seed == 0 and job_id.startswith(budget + "/") and job_id in jobs:
            out.append((graph.params(jobs[job_id]["keep"]) / graph.total_params, r["heldout_rebuilt"], r["test_top1"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", required=True, help="finetune_grid.py's jobs.json")
    parser.add_argument("--results", nargs="+", required=True, help="its results.jsonl files")
    parser.add_argument("--budgets", nargs="+", required=True, help="budget names, e.g. budgets-r20-r0.2")
    parser.add_argument("--model", required=True, help="zoo name of the network the policies prune")
    parser.add_argument("--sensible", type=float, default=0.0,
                        help="also rank only the policies whose held-out top-1 is at least this")
    args = parser.parse_args()
    model = models.create(args.model).eval()
    graph = LayerGraph(model, models.model_info(model).input_shape)
    jobs = {j["id"]: j for j in read_jobs(args.jobs)}
    print("| budget | policies | held-out | parameter share | " + " | ".join(f"held-out + {b} x params" for b in BETAS)
          + " |")
    print("|" + " --- |" * (4 + len(BETAS)))
    for budget in args.budgets:
        pts = points(jobs, args.results, budget, graph)
        sets = [("", pts)] + ([(f", held-out >= {args.sensible}", [p for p in pts if p[1] >= args.sensible])]
                              if args.sensible else [])
        for label, subset in sets:
            if len(subset) < 5:
                continue
            params, heldout, test = map(np.array, zip(*subset))
            taus = [kendalltau(heldout, test)[0], kendalltau(params, test)[0]]
            taus += [kendalltau(heldout + b * params, test)[0] for b in BETAS]
            print(f"| {budget}{label} | {len(subset)} | " + " | ".join(f"{t:.2f}" for t in taus) + " |")


if __name__ == "__main__":
    main()
