import torch
import torch.nn as nn

from amc import models
from amc.graph import LayerGraph
from amc.pruning import ChannelPruner, collect_stats
from amc.pruning.lsq import greedy_ranking, least_squares, magnitude_ranking, reconstruction_error


def _layer_outputs(model, name, x):
    out = {}
    handle = dict(model.named_modules())[name].register_forward_hook(lambda m, i, o: out.setdefault("y", o))
    model(x)
    handle.remove()
    return out["y"]


def _trained_like_resnet():
    """ResNet-20 with BN statistics set on data, so features are not degenerate."""
    model = models.create("resnet20")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, 3, 32, 32))
    return model.eval()


def test_least_squares_beats_plain_channel_removal_on_a_3x3_layer():
    torch.manual_seed(0)
    model = _trained_like_resnet()
    graph = LayerGraph(model, (3, 32, 32))
    images = torch.randn(200, 3, 32, 32)
    stats = collect_stats(model, graph, images, points_per_image=20)
    decision = graph.decisions[4]
    layer = dict(model.named_modules())[decision.consumer]
    keep = torch.sort(magnitude_ranking(layer.weight)[: decision.channels // 2]).values
    plain = layer.weight[:, keep].reshape(layer.weight.shape[0], -1)
    fitted = least_squares(stats[decision.consumer], keep)
    err_plain = reconstruction_error(stats[decision.consumer], keep, plain)
    err_fit = reconstruction_error(stats[decision.consumer], keep, fitted)
    assert err_fit < 0.8 * err_plain
    # and on fresh images, through the real pruned network's layer output
    pruner_ls = ChannelPruner(model, graph, stats, reconstruct=True)
    pruner_plain = ChannelPruner(model, graph, None, reconstruct=False)
    keep_counts = [d.channels if d.index != 4 else d.channels // 2 for d in graph.decisions]
    test = torch.randn(50, 3, 32, 32)
    target = _layer_outputs(model, decision.consumer, test)
    with torch.no_grad():
        e_ls = (_layer_outputs(pruner_ls.prune(keep_counts)[0], decision.consumer, test) - target).pow(2).mean()
        e_plain = (_layer_outputs(pruner_plain.prune(keep_counts)[0], decision.consumer, test) - target).pow(2).mean()
    assert e_ls < e_plain


def test_gram_statistics_match_direct_unfold():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), conv).eval()
    graph = LayerGraph(net, (3, 5, 5))
    x = torch.randn(7, 3, 5, 5)
    stats = collect_stats(net, graph, x, points_per_image=25 * 50)  # sample (with replacement) many positions
    s = stats["2"]
    assert s.gram.shape == (36, 36) and s.cross.shape == (36, 6)
    full = least_squares(s, torch.arange(4), ridge=1e-9)
    assert torch.allclose(full, conv.weight.detach().reshape(6, -1), atol=1e-3)


def test_greedy_ranking_is_no_worse_than_magnitude_on_reconstruction():
    torch.manual_seed(0)
    model = _trained_like_resnet()
    graph = LayerGraph(model, (3, 32, 32))
    stats = collect_stats(model, graph, torch.randn(100, 3, 32, 32))
    d = graph.decisions[2]
    s = stats[d.consumer]
    ranking = greedy_ranking(s)
    assert sorted(ranking.tolist()) == list(range(d.channels))
    keep_g = torch.sort(ranking[:4]).values
    keep_m = torch.sort(magnitude_ranking(dict(model.named_modules())[d.consumer].weight)[:4]).values
    assert (reconstruction_error(s, keep_g, least_squares(s, keep_g))
            <= reconstruction_error(s, keep_m, least_squares(s, keep_m)) + 1e-9)


def test_pruner_output_is_smaller_and_runs():
    model = _trained_like_resnet()
    graph = LayerGraph(model, (3, 32, 32))
    stats = collect_stats(model, graph, torch.randn(50, 3, 32, 32))
    pruner = ChannelPruner(model, graph, stats)
    keep = [max(1, d.channels // 4) for d in graph.decisions]
    pruned, kept = pruner.prune(keep)
    assert [len(k) for k in kept] == keep
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_l1_and_l2_selection_rank_by_their_own_norm():
    # channel 0: one large weight (L1 4, L2 4); channel 1: many small ones (L1 8, L2 2)
    weight = torch.zeros(16, 2, 1, 1)
    weight[0, 0] = 4.0
    weight[:, 1] = 0.5
    assert magnitude_ranking(weight).tolist() == [1, 0]
    assert magnitude_ranking(weight, p=2).tolist() == [0, 1]
    model = _trained_like_resnet()
    graph = LayerGraph(model, (3, 32, 32))
    modules = dict(model.named_modules())
    keep = [max(1, d.channels // 2) for d in graph.decisions]
    for selection, p in (("magnitude", 1), ("l2", 2)):
        _, kept = ChannelPruner(model, graph, None, selection=selection, reconstruct=False).prune(keep)
        for d, k, channels in zip(graph.decisions, keep, kept):
            ranking = magnitude_ranking(*(modules[c].weight for c in d.consumers), p=p)
            assert channels.tolist() == sorted(ranking[:k].tolist())
