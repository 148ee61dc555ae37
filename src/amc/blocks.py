"""Residual blocks that a decision may remove whole (`--drop-blocks`).

Channel pruning leaves every operator in place, and at batch 1 on small inputs their fixed cost is a ceiling on
the speed-up (benchmarks/RESULTS.md, issue 4). A residual block with an identity shortcut computes
`x + branch(x)` (CIFAR and torchvision ResNets add a ReLU, which leaves x alone because x already comes out of
one); with its branch gone it is the identity, so a block whose branch is controlled by exactly one decision can
be dropped by letting that decision keep 0 channels. The exported network then has a `DroppedBlock` (an
`nn.Identity`) where the block was, and its model.json names them so that `amc.load_pruned` rebuilds it.

Blocks are recognised by their shape, not their class: an `use_residual`/`use_res_connect` flag (MobileNet-V2's
inverted residuals, amc's and torchvision's), or `conv1`/`conv2` with a `shortcut` (amc's CIFAR ResNets) or
`downsample` (torchvision's). A stage is a run of consecutive blocks under one parent with the same output width
and resolution; at most a share of each stage's blocks may go, and never all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

DROP_SHARE = 0.5  # default largest share of a stage's blocks that may be dropped


class DroppedBlock(nn.Identity):
    """Where a residual block was removed: its output is its input."""


def residual_kind(module: nn.Module) -> str | None:
    """"identity" for a residual block whose shortcut is the identity, "reshaping" for one whose shortcut changes
    the tensor (stride or width), None for anything else."""
    flag = getattr(module, "use_residual", getattr(module, "use_res_connect", None))
    if isinstance(flag, bool) and isinstance(getattr(module, "conv", None), nn.Module):
        return "identity" if flag else "reshaping"
    if not (isinstance(getattr(module, "conv1", None), nn.Conv2d) and isinstance(getattr(module, "conv2", None),
                                                                                   nn.Conv2d)):
        return None
    if hasattr(module, "shortcut"):  # amc's CIFAR BasicBlock (None: a plain network, no shortcut at all)
        shortcut = module.shortcut
        return None if shortcut is None else "identity" if isinstance(shortcut, nn.Identity) else "reshaping"
    if hasattr(module, "downsample") and not hasattr(module, "conv3"):  # torchvision's BasicBlock
        return "identity" if module.downsample is None else "reshaping"
    return None


@dataclass(frozen=True)
class Block:
    """A droppable block: its module name, the decision that controls its branch, and its stage."""

    name: str
    decision: int
    stage: str


def find_blocks(model: nn.Module, decision_members: list[tuple[str, ...]],
                block_outputs: dict[str, tuple]) -> tuple[dict[int, Block], dict[str, int]]:
    """The droppable blocks of `model` ({decision index: Block}) and every stage's number of blocks.

    `decision_members[i]` are the module names decision i touches; a block is droppable when it is an identity
    residual block and exactly one decision lies wholly inside it (a bottleneck, with two, is not; a residual
    stream's decision reaches into every block and goes on without the dropped block's layers).
    `block_outputs[name]` is a block's output signature (width, resolution), from which stages are told apart.
    """
    modules = dict(model.named_modules())
    kinds = {name: kind for name, m in modules.items() if name and (kind := residual_kind(m)) is not None}
    stage_of: dict[str, str] = {}
    counts: dict[str, int] = {}
    previous: tuple | None = None
    for name in kinds:  # named_modules order: consecutive blocks of one parent
        parent = name.rpartition(".")[0]
        signature = (parent, block_outputs.get(name))
        if previous is None or signature != previous[0]:
            previous = (signature, f"{parent or '<root>'}@{len(counts)}")
        stage_of[name] = previous[1]
        counts[previous[1]] = counts.get(previous[1], 0) + 1
    inside: dict[str, list[int]] = {name: [] for name in kinds}  # decisions wholly inside each block
    for index, members in enumerate(decision_members):
        for name in kinds:
            if all(m.startswith(name + ".") for m in members):
                inside[name].append(index)
    blocks = {}
    for name, kind in kinds.items():
        if kind == "identity" and len(inside[name]) == 1:
            blocks[inside[name][0]] = Block(name, inside[name][0], stage_of[name])
    return blocks, counts


def stage_cap(blocks_in_stage: int, share: float) -> int:
    """How many blocks of a stage of `blocks_in_stage` may be dropped: `share` of them, rounded down, never all."""
    return max(0, min(math.floor(share * blocks_in_stage + 1e-9), blocks_in_stage - 1))


def drop(model: nn.Module, names: list[str]) -> None:
    """Replace the blocks `names` of `model` by `DroppedBlock`s, in place."""
    for name in names:
        model.set_submodule(name, DroppedBlock())


def dropped_names(model: nn.Module) -> list[str]:
    """The blocks of `model` that were dropped (what model.json records)."""
    return [name for name, m in model.named_modules() if isinstance(m, DroppedBlock)]


__all__ = ["DROP_SHARE", "Block", "DroppedBlock", "drop", "dropped_names", "find_blocks", "residual_kind",
           "stage_cap"]
