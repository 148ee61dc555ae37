"""Scoring from a cut (`amc.downstream`): every candidate gets exactly the score the full path gives, the cut is
used where the change is late, and what cannot be cut (another graph, a cut too big to cache) is scored in full."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import amc.downstream as downstream
from amc import models
from amc.agents.knapsack import sensitivity
from amc.budget import Budget
from amc.config import SearchConfig
from amc.data.batching import NormalizedImages
from amc.data.splits import Split
from amc.downstream import DownstreamProbe
from amc.evaluate import Evaluator, recalibrate_batchnorm
from amc.graph import LayerGraph
from amc.pipeline import prepare
from amc.pruning import collect_stats
from amc.scoring import recalibration_batches, scorer_from

CIFAR = (3, 32, 32)
HELDOUT = 100


@pytest.fixture(scope="module")
def resnet20():
    """A randomly initialised ResNet-20 (option-A shortcuts: subsampled and zero-padded) scored on random images
    labelled by its own predictions, its classifier's bias centred so that they spread over the classes: a pruned
    candidate's top-1 is its agreement with the original, and such scores spread without pretrained weights."""
    torch.manual_seed(0)
    model = models.create("resnet20").eval()
    info = models.model_info(model)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (200 + HELDOUT, *CIFAR), dtype=torch.uint8, generator=g)
    calibration = NormalizedImages(pixels[:200], info.mean, info.std)
    recalibrate_batchnorm(model, recalibration_batches(calibration, 2))  # statistics of these images, not N(0, 1)
    model.eval()
    with torch.no_grad():
        logits = model(NormalizedImages(pixels[200:], info.mean, info.std)[:])
        model.linear.bias -= logits.mean(dim=0)
        labels = (logits - logits.mean(dim=0)).argmax(dim=1)
    assert len(labels.unique()) >= 5
    graph = LayerGraph(model, CIFAR)
    config = SearchConfig(model="resnet20", calibration_images=200)
    stats = collect_stats(model, graph, calibration)
    return scorer_from(model, graph, Split(pixels[200:], labels), calibration, stats, config), graph


def _one_decision_changed(base: list[int], graph: LayerGraph, share: float) -> list[list[int]]:
    full = graph.full_keep()
    candidates = []
    for i in range(len(base)):
        keep = list(base)
        keep[i] = max(1, int(round(share * full[i])))
        if keep != base:
            candidates.append(keep)
    return candidates


@pytest.mark.parametrize("precision, every, bases", [("fp32", 2, 2), ("bf16", 4, 1)])  # bf16: slow without its units
def test_a_residual_network_scores_exactly_as_in_full_around_the_whole_network_and_a_pruned_one(resnet20, precision,
                                                                                               every, bases):
    scorer, graph = resnet20
    ev = scorer.evaluator
    scorer = scorer.variant(racing=False, evaluator=Evaluator(ev.split, ev.mean, ev.std, precision=precision))
    probe, full = DownstreamProbe(scorer, min_seconds=0), scorer.variant()
    around = ((list(graph.full_keep()), 0.25), ([max(1, c // 2) for c in graph.full_keep()], 0.75))
    for base, share in around[:bases]:
        probe.rebase(base)
        before = probe.partial
        candidates = _one_decision_changed(base, graph, share)[::every]
        scores = [(float(probe(keep)), float(full(keep))) for keep in candidates]
        assert [a for a, _ in scores] == [b for _, b in scores]
        assert len({b for _, b in scores}) > len(scores) // 2, "scores that spread, for the check to mean much"
        assert probe.partial - before == len(candidates)  # every one from a cut, none in full
    # a policy that differs from the base in many places is cut early, and still scores as in full
    many = [max(1, c // 3) for c in graph.full_keep()]
    assert float(probe(many)) == float(full(many))


def test_the_cut_skips_what_the_change_does_not_reach(resnet20):
    scorer, graph = resnet20
    probe = DownstreamProbe(scorer.variant(racing=False), min_seconds=0)
    probe.rebase(graph.full_keep())
    last = list(graph.full_keep())
    last[-1] = 8  # the last block's inner width: only that block and the classifier change
    probe(last)
    base = probe._base
    upstream = downstream._upstream(base.graph, list(base.cuts)[-1])  # what runs once, for every such candidate
    cached = {n.target for n in upstream.graph.nodes if n.op == "call_module"}
    assert {"conv1", "layer1.0.conv1", "layer3.1.conv2"} <= cached  # everything before the last block
    assert not {"layer3.2.conv1", "linear"} & cached


def test_what_cannot_be_cut_is_scored_in_full(resnet20, monkeypatch):
    scorer, graph = resnet20
    full = scorer.variant(racing=False)
    probe = DownstreamProbe(scorer.variant(racing=False), min_seconds=0)
    probe.rebase(graph.full_keep())
    dropped = list(graph.full_keep())
    dropped[graph.blocks[-1].decision] = 0  # a dropped block: another graph, no common part
    assert float(probe(dropped)) == float(full(dropped)) and probe.partial == 0
    monkeypatch.setattr(downstream, "CACHE_BYTES", 1000)  # no cut fits: every candidate in full
    narrow = list(graph.full_keep())
    narrow[-1] = 4
    assert float(probe(narrow)) == float(full(narrow)) and probe.partial == 0
    with pytest.raises(ValueError, match="without racing"):
        DownstreamProbe(scorer.variant(racing=True))


def test_the_knapsacks_table_on_a_plain_chain_is_the_full_paths(monkeypatch):
    monkeypatch.setattr(downstream, "MIN_SECONDS", 0.0)  # the digits CNN scores in milliseconds: cut it all the same
    cut = []
    score = DownstreamProbe._score
    monkeypatch.setattr(DownstreamProbe, "_score", lambda self, *args: cut.append(1) or score(self, *args))
    config = SearchConfig(calibration_images=300, ratio=0.1, lbound=0.05, seed=0)
    setup = prepare(config)
    budget = Budget(setup.graph, config.env_config)
    table = sensitivity(budget, setup.scorer, images=300, options=5)
    full = setup.scorer.variant(racing=False, evaluator=setup.scorer.evaluator.limited(300))
    for i, row in enumerate(table):
        for count, accuracy in row:
            keep = [int(c) for c in budget.channels]
            keep[i] = count
            assert accuracy == float(full(keep)), (i, count)
    assert np.ptp([a for row in table for _, a in row]) > 0.1
    assert len(cut) >= sum(len(row) - 1 for row in table)  # every option but the whole layer, from a cut
