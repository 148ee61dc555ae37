"""Measured speed-up of a run's pruned model over its original, per backend, against the MACs reduction.

    python benchmarks/latency_speedup.py runs/r20-ddpg --threads 1 --rounds 20 --repeats 25

The original network is the run's model and weights (from RUN_DIR/config.json, or --model / --weights).
Latency at `--batch` (default 1; 32 for throughput) of both is measured at a fixed thread count with torch and
onnxruntime, each round as the latency guard measures a pair (original, then pruned) so that machine noise hits
both alike; the speed-up is the median over rounds of the per-round ratio. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from common import latency_pair

import amc
from amc import count_macs, models
from amc.errors import AmcError
from amc.latency import BACKENDS, cpu_name
from amc.models.factory import trusting
from amc.runs import CONFIG_FILE, RunDir


def original_model(run_dir: Path, pruned, name: str | None, weights: str | None):
    """The unpruned network of the run, with its weights where they can be found (latency hardly depends
    on the values, so a missing file is a warning, not an error)."""
    info = models.model_info(pruned)
    run = RunDir(run_dir)
    config = run.read_config("timed") if (run / CONFIG_FILE).exists() else {}
    search = config.get("search", {})
    name = name or search.get("model") or info.name
    weights = weights or search.get("weights") or models.bundled_weights(name)
    if weights is not None and not Path(weights).exists():
        warnings.warn(f"original weights {weights} not found; timing a randomly initialised {name}", stacklevel=1)
        weights = None
    if "model" in config and name == search.get("model"):  # the run's own record: factories and timm too
        with trusting(True):  # a run of the person benchmarking it
            original = models.rebuild(config["model"], run_dir / CONFIG_FILE)
        if weights is not None:
            models.load_weights(original, weights)
        return original.eval()
    return models.create(name, num_classes=info.num_classes, weights=weights, **info.kwargs).eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="Output directory of `amc search`.")
    parser.add_argument("--model", help="Original model name (default: the run's).")
    parser.add_argument("--weights", help="Original weights (default: the run's, else the bundled ones).")
    parser.add_argument("--finetuned", action="store_true", help="Time the fine-tuned weights of the run.")
    parser.add_argument("--threads", type=int, default=1, help="Intra-op threads of every backend.")
    parser.add_argument("--rounds", type=int, default=20, help="Interleaved rounds per backend.")
    parser.add_argument("--repeats", type=int, default=25,
                        help="Accepted for older command lines; each round times as the latency guard does.")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--batch", type=int, default=1, help="Images per call (32: throughput).")
    args = parser.parse_args(argv)

    if args.finetuned:
        from amc.finetune import load_finetuned
        pruned = load_finetuned(args.run_dir)
    else:
        pruned = amc.load_pruned(args.run_dir)
    original = original_model(args.run_dir, pruned, args.model, args.weights)
    shape = models.model_info(pruned).input_shape
    macs_original, macs_pruned = count_macs(original, shape), count_macs(pruned, shape)
    print(f"{models.model_info(original).name}: {macs_original / 1e6:.2f}M -> {macs_pruned / 1e6:.2f}M MACs "
          f"({args.run_dir}); CPU {cpu_name()}; batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds "
          "(each: the latency guard's pair of measurements)\n", flush=True)
    print("| backend | threads | original ms | pruned ms | speed-up (IQR) | MACs reduction "
          "| speed-up / MACs reduction |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    reduction = macs_original / macs_pruned
    for backend in args.backends:
        r = latency_pair(original, pruned, shape, args.rounds, backend=backend, threads=args.threads, batch=args.batch)
        print(f"| {backend} | {args.threads} | {r['original_ms']:.3f} | {r['pruned_ms']:.3f} | "
              f"{r['speedup']:.2f}x ({r['speedup_iqr']:.2f}) | {reduction:.2f}x | {r['speedup'] / reduction:.2f} |",
              flush=True)


if __name__ == "__main__":
    try:
        main()
    except AmcError as e:
        sys.exit(f"error: {e}")
