"""NVIDIA ModelOpt's FastNAS pruning (`modelopt.torch.prune.prune(mode="fastnas")`) as a peer at the same MACs budget.

FastNAS sorts each layer's channels by importance, maps how the score falls as each layer narrows, then
bisects over channel widths, scoring subnets with the user's function: here top-1 on the first
`SCORE_IMAGES` held-out images (fp32), its BatchNorm statistics re-estimated for each subnet on
`CALIBRATION_BATCHES` batches of 8 training images. Its channel divisor is set to 1 (its default of 32 leaves
16- and 32-channel convs unprunable). One search gives three rows: its model as it returns it (`fastnas`; its
BN statistics are the original's, stale), the same with BN re-estimated as our +bn rows are (`fastnas+bn`),
and only its per-layer counts through our pruner, least squares and BN recalibration (`fastnas-counts`).
"""

from __future__ import annotations

import copy
import time
from importlib import metadata
from pathlib import Path

import torch
from peer_bench import Bench
from peer_methods import FASTNAS_CHECKPOINT, FASTNAS_INSTALL, FastNAS
from peer_rows import read_row, write_row
from torch import nn

from amc.cost import count_macs
from amc.data import batches
from amc.errors import AmcError
from amc.evaluate import recalibrate_batchnorm

SCORE_IMAGES = 1000  # FastNAS's score function: top-1 on this prefix of the held-out split
CALIBRATION_BATCH = 8  # images per batch of FastNAS's BN calibration loader
CALIBRATION_BATCHES = 50  # ModelOpt's BN queue length: with fewer batches it skips the recalibration altogether
CHECKPOINT = FASTNAS_CHECKPOINT
SUFFIXES = {"raw": "", "bn": "+bn", "counts": "-counts"}  # variant -> method name after "fastnas"


class OverBudget(Exception):
    """FastNAS's model exceeds the budget as we count MACs (its FLOPs are torchprofile's); its rows carry this."""


def require_modelopt() -> None:
    """Import ModelOpt's pruning, or raise a one-line AmcError naming the install line. torchprofile 0.1 is
    refused up front: FastNAS counts FLOPs with it and fails on 0.1.0."""
    try:
        import modelopt.torch.prune  # noqa: F401
        profile = metadata.version("torchprofile")
    except (ImportError, metadata.PackageNotFoundError) as e:
        raise AmcError(f"the fastnas methods need NVIDIA ModelOpt ({e}): {FASTNAS_INSTALL}") from None
    if profile != "0.0.4":
        raise AmcError(f"the fastnas methods need torchprofile 0.0.4 for FastNAS's FLOPs, found {profile}: "
                       f"{FASTNAS_INSTALL}")


def fastnas_mode() -> list[tuple[str, dict]]:
    """FastNAS's default search space with every channel and feature divisor set to 1."""
    from modelopt.torch.prune.fastnas import FastNASConfig

    config = FastNASConfig().model_dump()
    for rules in config.values():
        for rule in rules.values():
            for key in ("channel_divisor", "feature_divisor"):
                if rule and key in rule:
                    rule[key] = 1
    return [("fastnas", config)]


def calibration_loader(bench: Bench) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`CALIBRATION_BATCHES` batches of `CALIBRATION_BATCH` training images (seed-0 calibration order, never
    held-out)."""
    n = min(CALIBRATION_BATCHES * CALIBRATION_BATCH, len(bench.dataset.train))
    split = bench.dataset.train.subset(bench.dataset.calibration_indices(n, seed=0))
    return list(batches(split, CALIBRATION_BATCH, mean=bench.info.mean, std=bench.info.std))


def search(bench: Bench, checkpoint: Path) -> tuple[nn.Module, float]:
    """FastNAS on a contiguous copy of the model at the budget; (its returned model, search seconds)."""
    import modelopt.torch.prune as mtp

    # FastNAS refuses channels-last weights, which our evaluator leaves behind: every score restores the layout
    net = copy.deepcopy(bench.model).to(memory_format=torch.contiguous_format).eval()
    evaluator = bench.heldout.limited(SCORE_IMAGES)

    def score(model: nn.Module) -> float:
        accuracy = evaluator.top1(model)
        model.to(memory_format=torch.contiguous_format)
        return accuracy

    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    loader = calibration_loader(bench)
    t0 = time.perf_counter()
    pruned, _ = mtp.prune(net, mode=fastnas_mode(), constraints={"flops": f"{100 * bench.args.ratio:g}%"},
                          dummy_input=torch.zeros(1, *bench.info.input_shape),
                          config={"data_loader": loader, "max_iter_data_loader": len(loader), "score_func": score,
                                  "checkpoint": str(checkpoint), "verbose": False})
    return pruned.to(memory_format=torch.contiguous_format).eval(), time.perf_counter() - t0


def counts(bench: Bench, pruned: nn.Module) -> list[int]:
    """FastNAS's kept channels per amc decision (the width of each decision's producers in its model). OverBudget
    where its model exceeds the budget as we count MACs; an AssertionError where it is not what our pruner gives
    for those counts (one width for every producer of a coupled group, the same MACs)."""
    modules = dict(pruned.named_modules())
    keep = []
    for d in bench.graph.decisions:
        widths = {_width(modules[m.module]) for m in d.members if m.role == "producer"}
        if len(widths) != 1:
            raise AssertionError(f"FastNAS gave the coupled producers of {d.producer} different widths {widths}")
        keep.append(widths.pop())
    macs = count_macs(pruned, bench.info.input_shape)
    if macs > bench.budget_macs:
        raise OverBudget(f"not run: FastNAS's model at {100 * bench.args.ratio:g}% of its FLOPs keeps "
                         f"{macs / bench.original_macs:.3f} of the MACs as we count them, over the budget")
    if macs != bench.graph.macs(keep):
        raise AssertionError(f"FastNAS's model has {macs} MACs, its counts give {bench.graph.macs(keep)} through "
                             "our graph: it pruned a layer our decisions do not cover")
    return keep


def _width(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def fastnas_rows(bench: Bench, checkpoint: Path, out: Path) -> dict[str, dict]:
    """All three rows of one FastNAS search, by method name."""
    resumed = checkpoint.exists()
    net, seconds = search(bench, checkpoint)
    keep = counts(bench, net)
    scorer = bench.scorer(0, recalibrate=True, racing=False)  # our +bn rows' recalibration images
    common = {"keep": keep, "ratios": [k / d.channels for k, d in zip(keep, bench.graph.decisions)],
              "fastnas_score_images": min(SCORE_IMAGES, bench.heldout.size),
              **({"resumed": True} if resumed else {})}  # a resumed search's seconds omit the part before the kill
    recalibrated = copy.deepcopy(net)
    t1 = time.perf_counter()
    recalibrate_batchnorm(recalibrated, scorer.recalibration)
    recalibrated.to(memory_format=torch.contiguous_format)
    models = {"raw": (net, seconds), "bn": (recalibrated, seconds + time.perf_counter() - t1)}
    t1 = time.perf_counter()
    models["counts"] = (scorer.build(keep), seconds + time.perf_counter() - t1)
    rows = {}
    for variant, (model, spent) in models.items():
        name = "fastnas" + SUFFIXES[variant]
        rows[name] = bench.export(out / name / "seed0", model, name, {
            **common, "search_seconds": spent, "search_score": bench.heldout.limited(SCORE_IMAGES).top1(model)},
            recalibrate=variant != "raw")
    return rows


def run_fastnas(bench: Bench, name: str, method: FastNAS, seed: int, run_dir: Path) -> dict:
    """`name`'s row; its two siblings are written beside it (one search gives all three)."""
    require_modelopt()
    out = run_dir.parent.parent
    try:
        produced = fastnas_rows(bench, out / "fastnas" / "seed0" / CHECKPOINT, out)
    except OverBudget as e:
        short = "not run: its model is over the budget as we count MACs"
        produced = {"fastnas" + suffix: {"reason": str(e), "short_reason": short} for suffix in SUFFIXES.values()}
    for sibling, row in produced.items():
        target = out / sibling / "seed0"
        if sibling != name and read_row(target) is None:
            write_row(target, {"method": sibling, "seed": 0, "run_dir": str(target), **row})
    return produced[name]
