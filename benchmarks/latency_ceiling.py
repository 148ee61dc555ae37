"""How much speed-up any channel pruning can buy at batch 1: networks built narrow from the start.

    python benchmarks/latency_ceiling.py --threads 1 --rounds 10

Issue 4 asks for a measured speed-up of at least 0.9x the MACs reduction. A pruned network can at best run
like the same architecture designed at the pruned widths, with every channel (residual stream, stem and
classifier inputs included) narrowed alike and rounded to hardware-friendly counts. This times such networks
against the originals (untrained weights: latency does not depend on the values) as the latency guard does
(`amc.latency.guard.measure_interleaved`: alternating rounds, each network's fastest round median, which
shrugs off a loaded moment better than a median over rounds), so the figure is an upper bound on what
pruning the same share of MACs can reach on this machine and backend. Prints a markdown table.
"""

from __future__ import annotations

import argparse

from amc import count_macs
from amc.config import SearchConfig
from amc.latency import BACKENDS, cpu_name
from amc.latency.guard import measure_interleaved
from amc.models.cifar_resnet import CifarResNet
from amc.models.mobilenet import mobilenet_v2

# (label, original, narrow): ResNet-56 with all stage widths scaled, mobilenet_v2 with its width multiplier
PAIRS = {
    "resnet56": [("stages 12/24/48 (0.75 width)", lambda: CifarResNet(9, stage_channels=(12, 24, 48))),
                 ("stages 11/23/45 (0.70 width)", lambda: CifarResNet(9, stage_channels=(11, 23, 45))),
                 ("stages 8/16/32 (0.50 width)", lambda: CifarResNet(9, stage_channels=(8, 16, 32)))],
    "mobilenet_v2": [("width_mult 0.75", lambda: mobilenet_v2(width_mult=0.75)),
                     ("width_mult 0.7", lambda: mobilenet_v2(width_mult=0.7))],
}
ORIGINALS = {"resnet56": lambda: CifarResNet(9), "mobilenet_v2": mobilenet_v2}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1, help="Images per call (32: throughput).")
    args = parser.parse_args(argv)
    shape = (3, 32, 32)
    print(f"CPU: {cpu_name()}, batch {args.batch}, {args.threads} thread(s), {args.rounds} interleaved rounds\n")
    print("| model | narrow network | MACs share | backend | original ms | narrow ms | speed-up "
          "| speed-up / MACs reduction |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        original = ORIGINALS[name]().eval()
        for label, build in PAIRS[name]:
            narrow = build().eval()
            share = count_macs(narrow, shape) / count_macs(original, shape)
            for backend in args.backends:
                settings = SearchConfig(latency_backend=backend, latency_batch=args.batch, latency_threads=args.threads)
                original_ms, narrow_ms = measure_interleaved([original, narrow], shape, settings, rounds=args.rounds)
                speedup = original_ms / narrow_ms
                print(f"| {name} | {label} | {share:.3f} | {backend} | {original_ms:.2f} | {narrow_ms:.2f} "
                      f"| {speedup:.2f}x | {speedup * share:.2f} |", flush=True)


if __name__ == "__main__":
    main()
