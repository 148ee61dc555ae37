"""torch-pruning's global pruning as a peer of our search, at the same MACs budget.

One importance ranking across all layers (MetaPruner with `global_pruning=True`), its pruning ratio bisected
until the counted MACs meet the budget, each trial on a fresh copy. Restricted to our free decisions (every
conv/linear that is not the producer of one is an ignored layer): torch-pruning 1.6 treats the option-A
zero-padded shortcut as elementwise and breaks the model when residual-coupled channels are pruned. No
per-layer lower bound (`--lbound` is ours; the row records the smallest ratio torch-pruning chose). Taylor
importance takes gradients of the cross-entropy on `--taylor-batches` training batches (eval mode, BN
statistics untouched). One run of an importance gives three rows: torch-pruning's own model, the very channels
it kept with our least-squares reconstruction (+lsq), and only its per-layer counts through our pruner (-counts).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peer_bench import Bench
from peer_methods import TorchPruning
from peer_rows import read_row, write_row
from torch import nn

from amc.cost import count_macs
from amc.data import batches
from amc.pruning.lsq import least_squares
from amc.pruning.surgery import prune_copy

SUFFIXES = {"raw": "", "lsq": "+lsq", "counts": "-counts"}  # variant -> method name after tp-<importance>


class BudgetUnreachable(Exception):
    """A method cannot produce a model within the budget; its rows carry this reason instead of figures."""


def taylor_gradients(bench: Bench) -> dict[str, torch.Tensor]:
    """Summed cross-entropy gradients of every parameter over a few training batches (eval mode)."""
    net = copy.deepcopy(bench.model).eval()
    n = bench.args.taylor_batches * 64
    index = bench.dataset.calibration_indices(min(n, len(bench.dataset.train)), seed=0)
    for x, y in batches(bench.dataset.train.subset(index), 64, mean=bench.info.mean, std=bench.info.std):
        F.cross_entropy(net(x), y).backward()
    return {name: p.grad.detach().clone() for name, p in net.named_parameters() if p.grad is not None}


def tp_prune(bench: Bench, importance_name: str, ratio: float,
             grads: dict[str, torch.Tensor] | None) -> tuple[nn.Module, list[torch.Tensor]]:
    """torch-pruning's global pruning of a fresh copy at `ratio`; (pruned model, kept indices per decision)."""
    import torch_pruning as tp

    net = copy.deepcopy(bench.model).eval()
    if grads:
        for name, p in net.named_parameters():
            p.grad = grads[name].clone() if name in grads else None
    modules = dict(net.named_modules())
    names = {m: n for n, m in modules.items()}
    producers = {d.producer for d in bench.graph.decisions}
    # only our free decisions: torch-pruning 1.6 follows the residual stream through the zero-padded
    # shortcut as if it were elementwise and leaves a broken model, so every other layer is ignored
    ignored = [m for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in producers]
    importance = (tp.importance.TaylorImportance() if importance_name == "taylor"
                  else tp.importance.MagnitudeImportance(p=2))
    pruner = tp.pruner.MetaPruner(net, torch.zeros(2, *bench.info.input_shape), importance, global_pruning=True,
                                  pruning_ratio=ratio, ignored_layers=ignored)
    removed: dict[str, list[int]] = {}
    for group in pruner.step(interactive=True):
        root = names[group[0].dep.target.module]
        removed[root] = [int(i) for i in group[0].idxs]
        group.prune()
    net.zero_grad(set_to_none=True)
    kept = []
    for d in bench.graph.decisions:
        gone = set(removed.get(d.producer, []))
        kept.append(torch.tensor([c for c in range(d.channels) if c not in gone], dtype=torch.long))
    return net, kept


def smallest_ratio(bench: Bench, importance_name: str, grads, iterations: int = 30):
    """(ratio, (model, kept)) of the smallest pruning ratio whose counted MACs meet the budget: a scan up in steps
    of 0.05, then bisection. Not from 1.0 down: near 1 every layer would lose all its channels, torch-pruning then
    skips them all and prunes nothing, so MACs are not monotone in the ratio at the top."""
    def meets(trial) -> bool:
        return count_macs(trial[0], bench.info.input_shape) <= bench.budget_macs

    lo, hi, best = 0.0, None, None
    for ratio in np.arange(0.05, 0.99, 0.05):
        trial = tp_prune(bench, importance_name, float(ratio), grads)
        if meets(trial):
            hi, best = float(ratio), trial
            break
        lo = float(ratio)
    if best is None:
        raise BudgetUnreachable(f"not run: torch-pruning's global {importance_name} pruning, restricted to our free "
                                f"decisions, reaches no ratio up to 0.95 that meets {bench.args.ratio:g} of the MACs")
    for _ in range(iterations):
        mid = (lo + hi) / 2
        trial = tp_prune(bench, importance_name, mid, grads)
        if meets(trial):
            hi, best = mid, trial
        else:
            lo = mid
        if hi - lo < 1e-4:
            break
    return hi, best


def torch_pruning_rows(bench: Bench, importance_name: str, out: Path) -> dict[str, dict]:
    """All three rows of one importance, by method name: raw, +lsq on its kept channels, its counts via ours."""
    t0 = time.perf_counter()
    grads = taylor_gradients(bench) if importance_name == "taylor" else None
    ratio, (net, kept) = smallest_ratio(bench, importance_name, grads)
    seconds = time.perf_counter() - t0
    keep, graph = [len(k) for k in kept], bench.graph
    # the exported network must be what our surgery gives for the same channels (no reconstruction)
    check = prune_copy(bench.model, graph, kept)
    x = torch.randn(4, *bench.info.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = float((net.eval()(x) - check.eval()(x)).abs().max())
    macs = count_macs(net, bench.info.input_shape)
    if gap > 1e-4 or macs != graph.macs(keep):
        raise AssertionError(f"torch-pruning's model differs from the same channels pruned by us (max |diff| "
                             f"{gap}, MACs {macs} vs {graph.macs(keep)})")
    common = {"tp_ratio": ratio, "keep": keep, "ratios": [k / d.channels for k, d in zip(keep, graph.decisions)],
              "min_ratio": min(k / d.channels for k, d in zip(keep, graph.decisions))}
    scorer = bench.scorer(0)
    family = f"tp-{importance_name}"
    models = {"raw": (net, seconds)}
    t1 = time.perf_counter()
    weights = {consumer: least_squares(scorer.stats[consumer], k, scorer.pruner.ridge)
               for d, k in zip(graph.decisions, kept) if len(k) < d.channels for consumer in d.consumers}
    models["lsq"] = (prune_copy(bench.model, graph, kept, weights), seconds + time.perf_counter() - t1)
    t1 = time.perf_counter()
    models["counts"] = (scorer.build(keep), seconds + time.perf_counter() - t1)
    rows = {}
    for variant, (model, spent) in models.items():
        name = family + SUFFIXES[variant]
        rows[name] = bench.export(out / name / "seed0", model, name, {
            **common, "search_seconds": spent, "search_score": scorer.evaluator.top1(model)})
    return rows


def run_torch_pruning(bench: Bench, name: str, method: TorchPruning, seed: int, run_dir: Path) -> dict:
    """`name`'s row; its two siblings of the same importance are written beside it (one run gives all three)."""
    out = run_dir.parent.parent
    try:
        produced = torch_pruning_rows(bench, method.importance, out)
    except BudgetUnreachable as e:
        short = str(e).split(",")[0] + ": the budget is out of its reach"
        produced = {method.family + suffix: {"reason": str(e), "short_reason": short} for suffix in SUFFIXES.values()}
    for sibling, row in produced.items():
        target = out / sibling / "seed0"
        if sibling != name and read_row(target) is None:
            write_row(target, {"method": sibling, "seed": 0, "run_dir": str(target), **row})
    return produced[name]
