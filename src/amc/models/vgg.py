"""VGG-16 with BatchNorm for 32x32 inputs: five 2x2 max-pools take 32x32 to 1x1, then one linear layer."""

from __future__ import annotations

import torch
import torch.nn as nn

MAXPOOL = "M"
VGG16_CONFIG: tuple[int | str, ...] = (64, 64, MAXPOOL, 128, 128, MAXPOOL, 256, 256, 256, MAXPOOL,
                                       512, 512, 512, MAXPOOL, 512, 512, 512, MAXPOOL)


class CifarVGG(nn.Module):
    """`features` (conv3x3 + BN + ReLU stacks and max-pools) -> flatten -> `classifier` Linear(512, num_classes).

    Input (N, 3, 32, 32); output logits (N, num_classes).
    """

    def __init__(self, config: tuple[int | str, ...] = VGG16_CONFIG, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in config:
            if item == MAXPOOL:
                layers.append(nn.MaxPool2d(2, 2))
                continue
            # no conv bias: the following BatchNorm's shift makes it redundant
            layers += [nn.Conv2d(in_channels, int(item), 3, padding=1, bias=False),
                       nn.BatchNorm2d(int(item)), nn.ReLU()]
            in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16(num_classes: int = 10) -> CifarVGG:
    return CifarVGG(VGG16_CONFIG, num_classes)
