"""CIFAR ResNets (He et al., 2016) in the layout of akamaster/pytorch_resnet_cifar10, and Plain-20.

Parameter names match akamaster's published checkpoints (conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2},
linear) so they load strictly. Plain-20 is ResNet-20 without any shortcut, the AMC paper's Plain-20.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

STAGE_CHANNELS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by `stride` and zero-pad the channel dimension.

    Parameter-free, so it adds neither parameters nor MACs, matching the published ResNet-20/56 counts.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_before = extra // 2
        self.pad_after = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        subsampled = x[:, :, :: self.stride, :: self.stride]
        # F.pad lists the last dimension first: (W, W, H, H, C, C)
        return F.pad(subsampled, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


class BasicBlock(nn.Module):
    """relu(bn1(conv1(x))) -> bn2(conv2(.)) [+ shortcut(x)] -> relu. Without `residual` there is no add."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module | None = None  # plain attribute, not a submodule, for plain nets
        if residual:
            needs_reshape = stride != 1 or in_channels != out_channels
            self.shortcut = PadShortcut(in_channels, out_channels, stride) if needs_reshape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """3x3 conv 16 -> three stages of `blocks_per_stage` BasicBlocks (16/32/64 ch) -> global avg pool -> linear.

    Input (N, 3, 32, 32); output logits (N, num_classes). Depth is 6 * blocks_per_stage + 2.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, residual: bool = True,
                 stage_channels: tuple[int, int, int] = STAGE_CHANNELS):
        """`stage_channels`: the widths of the three stages (narrower ones build a network as if every channel,
        residual stream included, had been pruned alike; benchmarks/latency_ceiling.py times those)."""
        super().__init__()
        self.conv1 = nn.Conv2d(3, stage_channels[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_channels[0])
        in_channels = stage_channels[0]
        stages = []
        for stage_index, channels in enumerate(stage_channels):
            first_stride = 1 if stage_index == 0 else 2
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = first_stride if block_index == 0 else 1
                blocks.append(BasicBlock(in_channels, channels, stride, residual))
                in_channels = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(stage_channels[-1], num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)


def resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(3, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(5, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(7, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(9, num_classes)


def plain20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(3, num_classes, residual=False)
