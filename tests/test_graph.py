import pytest
import torch

from amc import count_macs, count_params, models
from amc.errors import UnsupportedModelError
from amc.graph import LayerGraph
from amc.pruning.surgery import prune_copy

CASES = [("resnet20", 9), ("plain20", 19), ("vgg16", 13), ("mobilenet_v1", 14), ("mobilenet_v2", None),
         ("digits_cnn", 4)]


def random_keep(graph, generator):
    return [int(torch.randint(1, d.channels + 1, (1,), generator=generator)) for d in graph.decisions]


@pytest.mark.parametrize("name,expected", CASES)
def test_decisions_and_exact_cost_model(name, expected):
    model = models.create(name).eval()
    shape = models.model_info(model).input_shape
    graph = LayerGraph(model, shape)
    if expected is not None:
        assert len(graph.decisions) == expected
    assert graph.total_macs == count_macs(model, shape)
    assert graph.params(graph.full_keep()) == count_params(model)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        keep = random_keep(graph, g)
        kept = [torch.sort(torch.randperm(d.channels, generator=g)[:k]).values for d, k in zip(graph.decisions, keep)]
        pruned = prune_copy(model, graph, kept)
        out = pruned(torch.randn(2, *shape))
        assert out.shape == (2, models.model_info(model).num_classes)
        assert count_macs(pruned, shape) == graph.macs(keep)
        assert count_params(pruned) == graph.params(keep)


def test_resnet_free_decisions_are_inside_blocks():
    graph = LayerGraph(models.create("resnet20").eval(), (3, 32, 32))
    assert all(d.consumer.endswith("conv2") for d in graph.decisions)
    assert all(d.producer == d.consumer.replace("conv2", "conv1") for d in graph.decisions)
    # residual-coupled layers are reported, not silently dropped
    assert "layer1.0.conv1" in graph.skipped and "linear" in graph.skipped


def test_mobilenet_v2_depthwise_pruned_with_producer():
    graph = LayerGraph(models.create("mobilenet_v2").eval(), (3, 32, 32))
    roles = {m.role for d in graph.decisions for m in d.members}
    assert "depthwise" in roles
    # an expanding inverted residual's hidden channels are one decision: produced by its expansion 1x1, read
    # by its depthwise conv (pruned along) and consumed by its projection 1x1
    expanded = [d for d in graph.decisions if d.consumer.endswith(".conv.2")]
    assert len(expanded) == 16  # every block but the first, whose expansion is 1
    assert all(d.producer == d.consumer.replace(".conv.2", ".conv.0.0") for d in expanded)
    assert all("depthwise" in {m.role for m in d.members} for d in expanded)


def test_pruning_leaves_original_untouched():
    model = models.create("resnet20").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = LayerGraph(model, (3, 32, 32))
    prune_copy(model, graph, [torch.arange(d.channels // 2) for d in graph.decisions])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unsupported_layer_is_named():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.ConvTranspose2d(8, 8, 3),
                              torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    with pytest.raises(UnsupportedModelError, match="ConvTranspose2d"):
        LayerGraph(net, (3, 16, 16))


class ConcatGrouped(torch.nn.Module):
    """A user model with two branches joined by a concatenation and a grouped convolution."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.c1 = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(24, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(24, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.mix = nn.Conv2d(20, 24, 1)
        self.grouped = nn.Conv2d(24, 32, 3, padding=1, groups=4)
        self.p = nn.Sequential(nn.Conv2d(32, 16, 1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        x = self.c1(self.stem(x))
        x = torch.cat([self.a(x), self.b(x)], 1)
        return self.head(self.p(self.grouped(self.mix(x))))


@pytest.mark.parametrize("group_coupled,decisions", [(False, ["c1.0", "head.2"]),
                                                     (True, ["c1.0", "a.0", "head.2"])])
def test_concatenation_and_grouped_convolution_stay_consistent(group_coupled, decisions):
    model = ConcatGrouped().eval()
    graph = LayerGraph(model, (3, 16, 16), group_coupled=group_coupled)
    assert [d.consumer for d in graph.decisions] == decisions
    assert "concat" in graph.skipped["mix"] and "grouped convolution (grouped, groups=4)" in graph.skipped["p.0"]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        keep = random_keep(graph, g)
        kept = [torch.sort(torch.randperm(d.channels, generator=g)[:k]).values for d, k in zip(graph.decisions, keep)]
        pruned = prune_copy(model, graph, kept)
        assert pruned(torch.randn(2, 3, 16, 16)).shape == (2, 10)
        assert count_macs(pruned, (3, 16, 16)) == graph.macs(keep)
        assert count_params(pruned) == graph.params(keep)


def test_no_prunable_layers_is_an_error():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    with pytest.raises(UnsupportedModelError, match="no prunable layers"):
        LayerGraph(net, (3, 2, 2))


@pytest.mark.parametrize("name", ["tv:resnet18", "tv:mobilenet_v2"])
def test_coupled_groups_prune_consistently(name):
    model = models.create(name, num_classes=10).eval()
    shape = (3, 64, 64)
    free = LayerGraph(model, shape)
    grouped = LayerGraph(model, shape, group_coupled=True)
    coupled = [d for d in grouped.decisions if d.coupled]
    assert coupled and len(grouped.decisions) == len(free.decisions) + len(coupled)
    g = torch.Generator().manual_seed(3)
    keep = random_keep(grouped, g)
    kept = [torch.sort(torch.randperm(d.channels, generator=g)[:k]).values for d, k in zip(grouped.decisions, keep)]
    pruned = prune_copy(model, grouped, kept)
    assert pruned(torch.randn(2, *shape)).shape == (2, 10)
    assert count_macs(pruned, shape) == grouped.macs(keep)
    assert count_params(pruned) == grouped.params(keep)


def test_option_a_shortcut_groups_are_refused_even_when_grouping():
    graph = LayerGraph(models.create("resnet20").eval(), (3, 32, 32), group_coupled=True)
    assert not any(d.coupled for d in graph.decisions)
    # the subsampled, zero-padded shortcut shows up as a slice and a pad: refused either way
    assert any(w in graph.skipped["layer1.0.conv1"] for w in ("slice", "zero-padded"))
