"""A small CNN for the embedded default dataset (scikit-learn digits: 1x8x8 images, 10 classes)."""

from __future__ import annotations

import torch
import torch.nn as nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class DigitsCNN(nn.Module):
    """Four 3x3 conv+BN+ReLU layers (32, 64 | maxpool 8x8 -> 4x4 | 64, 128), global avg pool, linear.

    Input (N, 1, 8, 8); output logits (N, num_classes). Small enough to search in seconds on a CPU.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(1, 32),
            _conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
            _conv_bn_relu(64, 64),
            _conv_bn_relu(64, 128),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def digits_cnn(num_classes: int = 10) -> DigitsCNN:
    return DigitsCNN(num_classes)
