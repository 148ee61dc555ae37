"""Physical channel removal on a copy of the model, through torch-pruning's per-layer handlers."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn

from amc.blocks import drop

if TYPE_CHECKING:  # annotations only: `amc search --help` reads SELECTIONS without loading torch_pruning
    from amc.graph import LayerGraph


@torch.no_grad()
def prune_copy(model: nn.Module, graph: LayerGraph, keep: Sequence[torch.Tensor],
               consumer_weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A physically smaller copy of `model` keeping channels `keep[i]` (sorted indices) at decision i.

    `consumer_weights[name]` ([O, len(keep) * area]) replaces the kept input-channel weights of a consumer
    (least-squares reconstruction). Weights are written on the full-size copy first and removal comes
    after, so a layer that is both a consumer and a producer (plain chains) is sliced consistently. A block
    decision that keeps no channel removes its block (`amc.blocks`), after every other decision has narrowed
    the layers it shares with the block. The original model is never touched.
    """
    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    for decision, kept in zip(graph.decisions, keep):
        for consumer in decision.consumers:
            new = (consumer_weights or {}).get(consumer)
            if new is not None:
                weight = modules[consumer].weight
                shape = (weight.shape[0], len(kept), *weight.shape[2:])
                weight[:, kept] = new.reshape(shape).to(weight.dtype)
    dropped = [d.block.name for d, kept in zip(graph.decisions, keep) if d.block is not None and len(kept) == 0]
    for decision, kept in zip(graph.decisions, keep):
        if decision.block is not None and decision.block.name in dropped:
            continue
        mask = torch.ones(decision.channels, dtype=torch.bool, device=kept.device)
        mask[kept] = False
        removed = torch.nonzero(mask).flatten().tolist()
        if not removed:
            continue
        for member in decision.members:
            member.handler(modules[member.module], removed)
    drop(pruned, dropped)
    return pruned
