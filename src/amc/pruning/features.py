"""Feature statistics sampled once from the original model, reused by every episode's reconstruction.

For a consumer layer with input X (unfolded k x k patches, one row per sampled output position) and
original output Y, least squares only ever needs the Gram matrix X^T X and the cross term X^T Y, so
those are accumulated in float64 while streaming the calibration images and nothing else is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:  # annotations only: `amc search --help` reads SELECTIONS without loading torch_pruning
    from amc.data.batching import NormalizedImages
    from amc.graph import LayerGraph


@dataclass
class LayerStats:
    """Sufficient statistics of one consumer layer. D = in_channels * kh * kw, O = out_channels."""

    gram: torch.Tensor    # float64 [D, D]: sum of x x^T over sampled rows
    cross: torch.Tensor   # float64 [D, O]: sum of x y^T, y the original output without bias
    y_energy: float       # sum of |y|^2, the error of predicting zero
    rows: int
    kernel_area: int      # kh * kw: how many columns of X belong to one input channel

    def to(self, device: torch.device | str) -> LayerStats:
        """The same statistics with the matrices on `device` (a Ray actor on its own GPU)."""
        return LayerStats(self.gram.to(device), self.cross.to(device), self.y_energy, self.rows, self.kernel_area)


def _rows_of(module: nn.Module, x: torch.Tensor, y: torch.Tensor, points: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `points` output positions per image; return matching input patches [R, D] and outputs [R, O]."""
    if module.bias is not None:
        y = y - (module.bias.view(1, -1, 1, 1) if y.dim() == 4 else module.bias)
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    patches = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding,
                       stride=module.stride)                                  # [B, D, L]
    outputs = y.flatten(2)                                                      # [B, O, L]
    batch, _, positions = patches.shape
    # drawn on the CPU generator wherever the features are: the same positions on every device
    chosen = torch.randint(0, positions, (batch, points), generator=generator).to(patches.device)  # [B, P]
    xs = patches.gather(2, chosen.unsqueeze(1).expand(-1, patches.shape[1], -1))
    ys = outputs.gather(2, chosen.unsqueeze(1).expand(-1, outputs.shape[1], -1))
    return xs.transpose(1, 2).reshape(-1, patches.shape[1]), ys.transpose(1, 2).reshape(-1, outputs.shape[1])


@torch.no_grad()
def collect_stats(model: nn.Module, graph: LayerGraph, images: torch.Tensor | NormalizedImages, *, points_per_image: int = 10,
                  batch_size: int = 100, seed: int = 0) -> dict[str, LayerStats]:
    """Gram statistics of every decision's consumer layer on `images` (normalized float [N, C, H, W], or anything
    whose slices are, such as `amc.data.batching.NormalizedImages`).

    The AMC reference samples 10 random positions per image on about 3,000 calibration images.
    """
    modules = dict(model.named_modules())
    consumers = {name for d in graph.decisions for name in d.consumers}
    generator = torch.Generator().manual_seed(seed)
    stats: dict[str, LayerStats] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            xs, ys = _rows_of(module, inputs[0], output, points_per_image, generator)
            xs, ys = xs.double(), ys.double()
            s = stats.get(name)
            if s is None:
                area = module.kernel_size[0] * module.kernel_size[1] if isinstance(module, nn.Conv2d) else 1
                s = stats[name] = LayerStats(xs.new_zeros(xs.shape[1], xs.shape[1]),  # float64, on xs's device
                                             xs.new_zeros(xs.shape[1], ys.shape[1]),
                                             0.0, 0, area)
            s.gram += xs.T @ xs
            s.cross += xs.T @ ys
            s.y_energy += float((ys * ys).sum())
            s.rows += xs.shape[0]
        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in consumers]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return stats
