"""The cost model agrees with PyTorch's own FLOP counter and with the published ResNet figures."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from amc import models
from amc.cost import count_macs, count_params, layer_costs

ZOO = [name for name in models.list_models() if not name.startswith("tv:")]
CASES = [(name, None) for name in ZOO] + [("tv:resnet18", (3, 64, 64)), ("tv:mobilenet_v2", (3, 64, 64))]


def _reference_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *input_shape))
    return counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per multiply-accumulate


@pytest.mark.parametrize("name, input_shape", CASES)
def test_macs_match_flop_counter(name, input_shape):
    model = models.create(name, num_classes=10)
    shape = input_shape or models.model_info(model).input_shape
    assert count_macs(model, shape) == _reference_macs(model, shape)


@pytest.mark.parametrize("name, literature_macs", [("resnet56", 125.5e6), ("resnet20", 40.6e6)])
def test_resnet_macs_match_literature(name, literature_macs):
    macs = count_macs(models.create(name), (3, 32, 32))
    assert abs(macs - literature_macs) / literature_macs < 0.01


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "digits_cnn"])
def test_count_params_is_total_numel(name):
    model = models.create(name)
    assert count_params(model) == sum(p.numel() for p in model.parameters())


def test_resnet20_layer_costs_order_and_shapes():
    costs = layer_costs(models.create("resnet20"), (3, 32, 32))
    names = list(costs)
    assert len(names) == 20  # 19 convs (no conv shortcuts with option A) + the linear head
    assert names[0] == "conv1" and names[-1] == "linear"
    assert names[1:3] == ["layer1.0.conv1", "layer1.0.conv2"]
    first, head = costs["conv1"], costs["linear"]
    assert (first.kind, first.in_channels, first.out_channels, first.in_hw, first.out_hw) == \
        ("conv", 3, 16, (32, 32), (32, 32))
    assert first.macs == 32 * 32 * 16 * 3 * 9 and first.params == 16 * 3 * 9
    downsample = costs["layer3.0.conv1"]
    assert (downsample.stride, downsample.in_hw, downsample.out_hw, downsample.in_channels) == (2, (16, 16), (8, 8), 32)
    assert (head.kind, head.in_channels, head.out_channels, head.in_hw, head.macs, head.params) == \
        ("linear", 64, 10, (1, 1), 640, 650)


def test_batched_input_shape_and_training_flags_are_restored():
    model = models.create("resnet20").train()
    model.layer1[0].bn1.eval()  # a submodule deliberately in another mode must keep it
    assert layer_costs(model, (1, 3, 32, 32)) == layer_costs(model, (3, 32, 32))
    assert model.training and model.layer2[0].bn1.training
    assert not model.layer1[0].bn1.training


def test_depthwise_conv_cost():
    costs = layer_costs(models.create("mobilenet_v1"), (3, 32, 32))
    depthwise = costs["features.1.0.0"]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == 32
    assert depthwise.macs == 32 * 32 * 32 * 1 * 9


def test_hand_computed_strided_conv():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    cost = layer_costs(conv, (3, 9, 9))[""]
    assert cost.out_hw == (5, 5) and cost.stride == 2 and cost.kernel_size == 3
    assert cost.macs == 5 * 5 * 8 * 3 * 9
    assert cost.params == 8 * 3 * 9 + 8


class _TokenHead(nn.Module):
    """Linear applied per spatial position, as in a transformer: MACs scale with the positions."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(2).transpose(1, 2))  # (N, H*W, C)


def test_linear_over_leading_dimensions():
    model = _TokenHead()
    assert count_macs(model, (4, 3, 5)) == 15 * 4 * 6 == _reference_macs(model, (4, 3, 5))


def test_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        layer_costs(models.create("digits_cnn"), (8, 8))
