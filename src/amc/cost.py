"""The one cost model used everywhere: per-layer MACs and parameters of convolutions and linear layers.

Following the AMC paper, only conv and linear multiply-accumulates count; BatchNorm, activations,
pooling and residual additions are ignored. Counts are for one input sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn


@dataclass(frozen=True)
class LayerCost:
    """Shape and cost of one conv/linear layer as it runs in the model's forward pass."""

    name: str                 # module name in model.named_modules()
    kind: str                 # "conv" or "linear"
    in_channels: int          # input channels / in_features
    out_channels: int         # output channels / out_features
    kernel_size: int          # kernel height; 1 for linear
    stride: int               # vertical stride; 1 for linear
    groups: int               # conv groups; 1 for linear
    in_hw: tuple[int, int]    # input feature map (H, W); (1, 1) for linear
    out_hw: tuple[int, int]   # output feature map (H, W); (1, 1) for linear
    macs: int                 # multiply-accumulates for one input sample
    params: int               # weight + bias elements of this layer


def layer_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerCost]:
    """Costs of every Conv2d and Linear, keyed by module name, in forward execution order.

    `input_shape` is (C, H, W) or (1, C, H, W). Runs one forward pass on zeros in eval mode under
    no_grad and restores every module's training flag afterwards. A module called more than once
    (shared weights) has its MACs summed over calls.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W) or (1, C, H, W), got {tuple(input_shape)}")
    names = {module: name for name, module in model.named_modules()}
    costs: dict[str, LayerCost] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        cost = _measure(names[module], module, inputs[0], output)
        previous = costs.get(cost.name)
        costs[cost.name] = cost if previous is None else replace(previous, macs=previous.macs + cost.macs)

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # flags per module, since model.train(flag) would overwrite submodules deliberately left in another mode
    training_flags = {module: module.training for module in model.modules()}
    reference = next(model.parameters(), None)
    example = torch.zeros(1, *shape, device=reference.device if reference is not None else "cpu",
                          dtype=reference.dtype if reference is not None else torch.float32)
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
        for module, flag in training_flags.items():
            module.training = flag
    return costs


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Total conv + linear MACs for one sample of `input_shape` (ResNet-56 on 3x32x32: about 125.5M)."""
    return sum(cost.macs for cost in layer_costs(model, input_shape).values())


def count_params(model: nn.Module) -> int:
    """Number of parameter elements in `model` (all parameters, not only conv/linear)."""
    return sum(p.numel() for p in model.parameters())


def _measure(name: str, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerCost:
    params = sum(p.numel() for p in module.parameters(recurse=False))
    if isinstance(module, nn.Conv2d):
        kernel_h, kernel_w = module.kernel_size
        out_h, out_w = y.shape[-2], y.shape[-1]
        macs = out_h * out_w * module.out_channels * (module.in_channels // module.groups) * kernel_h * kernel_w
        return LayerCost(name, "conv", module.in_channels, module.out_channels, kernel_h, module.stride[0],
                         module.groups, (x.shape[-2], x.shape[-1]), (out_h, out_w), int(macs), params)
    # Linear on (N, ..., in_features): every leading position except the batch repeats the product
    positions = math.prod(x.shape[1:-1])
    macs = positions * module.in_features * module.out_features
    return LayerCost(name, "linear", module.in_features, module.out_features, 1, 1, 1, (1, 1), (1, 1),
                     int(macs), params)
