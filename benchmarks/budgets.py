"""Issue 17's whole comparison in one command: every method at every budget, fine-tuned alike, tabulated.

    python benchmarks/budgets.py --model resnet20 --budgets 0.2:0.1 0.3 0.5 --seeds 0 1 2 \\
        --weights ../shared/data/pretrained/cifar10jpeg/resnet20.pt \\
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --device cuda --workers 12

Per budget (`RATIO` or `RATIO:LBOUND`), `peers.py` runs the methods into `runs/bench/budgets-r<depth>-r<ratio>`
(cached per method and seed; an interrupted search resumes), then `finetune_grid.py` plans the fine-tunes
(each row, the top-K candidates of every search for the finalist replay, the ranking study at `--study`),
runs them on `--device` (skipping what `--out` already holds) and writes `grid.md` and `pareto.png` into
`--out`. Kill it and start it again with the same command: it goes on where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import finetune_grid  # noqa: E402
import peers  # noqa: E402

METHODS = ["uniform+bn", "shallower-more+bn", "deeper-more+bn", "knapsack+bn", "tp-magnitude+lsq", "ddpg+bn",
           "ddpg+bn-shallower", "ddpg+bn-knapsack", "tpe+bn"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--budgets", nargs="+", default=["0.2:0.1", "0.3", "0.5"], help="RATIO or RATIO:LBOUND")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--study", help="the budget (RATIO) whose search logs give the ranking study")
    parser.add_argument("--device", default="cpu", help="where the fine-tunes run: cpu or cuda")
    parser.add_argument("--workers", type=int, default=1, help="fine-tunes at once")
    parser.add_argument("--bundle", default=".gpu")
    parser.add_argument("--out", default="runs/bench/budgets-grid")
    args = parser.parse_args(argv)
    depth = args.model.removeprefix("resnet")
    dirs = []
    for spec in args.budgets:
        ratio, _, lbound = spec.partition(":")
        out = f"runs/bench/budgets-r{depth}-r{ratio}"
        dirs.append(out)
        peers.run(peers.parse_args([
            "--model", args.model, "--weights", args.weights, "--data-dir", args.data_dir, "--ratio", ratio,
            "--lbound", lbound or "0.2", "--methods", *args.methods, "--seeds", *map(str, args.seeds),
            "--candidates", str(args.candidates), "--racing", "--latency-rounds", "0", "--precision", "bf16",
            "--threads", "1", "--out", out]))
    weights_dir = str(Path(args.weights).parent)
    study = [f"runs/bench/budgets-r{depth}-r{args.study}"] if args.study else []
    finetune_grid.main(["plan", "--budgets", *dirs, "--study", *study, "--data", args.data_dir,
                        "--weights-dir", weights_dir, "--bundle", args.bundle])
    results = Path(args.out) / "results.jsonl"
    finetune_grid.main(["run", "--bundle", args.bundle, "--out", args.out, "--device", args.device,
                        "--workers", str(args.workers)])
    finetune_grid.main(["collect", "--bundle", args.bundle, "--results", str(results), "--out", args.out])


if __name__ == "__main__":
    main()
