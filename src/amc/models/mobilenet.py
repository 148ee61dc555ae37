"""MobileNet-V1 and MobileNet-V2 adapted to 32x32 inputs (stride-1 stem, fewer early downsamplings), and
MobileNet-V1 as published for 224x224 ImageNet inputs (stride-2 stem: the paper's mobile setting).

Both take a `width_mult` that scales every layer's channels, rounded to multiples of 8 as in the
original papers, so scaled models keep hardware-friendly widths.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from amc.errors import AmcError

# (out_channels, stride) of the 13 depthwise-separable blocks of the CIFAR MobileNet-V1; 32x32 ends at 2x2
MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)

# (expansion t, out_channels c, repeats n, first stride s); the ImageNet table with the first stride-2
# stage set to stride 1 (and a stride-1 stem), so 32x32 ends at 4x4
MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round `channels` to the nearest multiple of `divisor`, never below `divisor` nor 10% below `channels`."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def _check_width_mult(width_mult: float) -> None:
    if not width_mult > 0:
        raise AmcError(f"width_mult must be positive, got {width_mult}; try 0.5, 0.75 or 1.0")


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU-like activation; `groups=in_channels` makes it depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, activation: type[nn.Module] = nn.ReLU):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            activation(),
        )


class DepthwiseSeparable(nn.Sequential):
    """MobileNet-V1 block: depthwise 3x3 (carries the stride) then pointwise 1x1, each with BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(
            ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels),
            ConvBNReLU(in_channels, out_channels, 1),
        )


class MobileNetV1(nn.Module):
    """Stem 3x3 conv 32 -> 13 depthwise-separable blocks -> global avg pool -> `classifier`.

    Input (N, 3, 32, 32) with the stride-1 stem; (N, 3, 224, 224) with `stem_stride=2`, the published network
    (the blocks' strides are the paper's table either way). Output logits (N, num_classes).
    """

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0, stem_stride: int = 1):
        super().__init__()
        _check_width_mult(width_mult)
        in_channels = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBNReLU(3, in_channels, 3, stem_stride)]
        for channels, stride in MOBILENET_V1_BLOCKS:
            out_channels = make_divisible(channels * width_mult)
            layers.append(DepthwiseSeparable(in_channels, out_channels, stride))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class InvertedResidual(nn.Module):
    """MobileNet-V2 block: 1x1 expand (skipped when t=1) -> depthwise 3x3 -> linear 1x1 project.

    The input is added back when the block keeps both resolution and channel count.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNReLU(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            # no activation after the projection: ReLU on the narrow bottleneck destroys information
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Stem 3x3 conv 32 (stride 1) -> inverted residual stages -> 1x1 conv 1280 -> avg pool -> `classifier`.

    Input (N, 3, 32, 32); output logits (N, num_classes). `dropout` before the classifier is off by default.
    """

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0, dropout: float = 0.0):
        super().__init__()
        _check_width_mult(width_mult)
        in_channels = make_divisible(32 * width_mult)
        # the head is never narrowed below 1280, as in the paper, so thin models keep a rich embedding
        last_channels = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNReLU(3, in_channels, 3, 1, activation=nn.ReLU6)]
        for expansion, channels, repeats, first_stride in MOBILENET_V2_STAGES:
            out_channels = make_divisible(channels * width_mult)
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                layers.append(InvertedResidual(in_channels, out_channels, stride, expansion))
                in_channels = out_channels
        layers.append(ConvBNReLU(in_channels, last_channels, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(last_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def mobilenet_v1(num_classes: int = 10, width_mult: float = 1.0) -> MobileNetV1:
    return MobileNetV1(num_classes, width_mult)


def mobilenet_v1_224(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV1:
    """MobileNet-V1 for 224x224 inputs, as published (569M MACs at width 1.0): AMC's mobile setting."""
    return MobileNetV1(num_classes, width_mult, stem_stride=2)


def mobilenet_v2(num_classes: int = 10, width_mult: float = 1.0, dropout: float = 0.0) -> MobileNetV2:
    return MobileNetV2(num_classes, width_mult, dropout)
