"""A network amc's zoo does not know, reached only through its factory: `--model tests.mynet:build`.

It imports nothing from amc: what it expects is stated in a plain dict.
"""

from torch import nn


class MyNet(nn.Module):
    """A small residual CNN for 8x8 grey digits (the embedded `digits` data)."""

    def __init__(self, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width),
                                  nn.ReLU(), nn.Conv2d(2 * width, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.body(x))


def build() -> nn.Module:
    net = MyNet()
    net.amc_info = {"input_shape": (1, 8, 8), "mean": (0.5,), "std": (0.5,), "num_classes": 10}
    return net


def build_plain() -> nn.Module:
    """The same network without amc_info: amc takes the shape from the data and feeds [0, 1] pixels."""
    return MyNet()


def broken() -> nn.Module:
    raise ValueError("the factory is broken on purpose")


def not_a_network():
    return "a string"


def claims_rgb() -> nn.Module:
    """States 3 input channels for a network that takes 1: amc's first forward pass reports it."""
    net = MyNet()
    net.amc_info = {"input_shape": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3, "num_classes": 10}
    return net
