import importlib
import json

import numpy as np
import pytest
import torch.nn as nn

import amc
from amc.data import load_dataset
from amc.env import allowed_counts
from amc.graph import LayerGraph
from amc.latency_model import build_latency_model
from amc.search import SearchConfig

search_module = importlib.import_module("amc.search")  # `amc.search` the attribute is the function


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AMC_CACHE_DIR", str(tmp_path / "cache"))


def _chain():
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.Conv2d(64, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10)).eval()


def test_tables_grow_with_channels_and_are_cached(tmp_path):
    net = _chain()
    graph = LayerGraph(net, (3, 16, 16))
    allowed = [allowed_counts(d.channels, 0.2, 1) for d in graph.decisions]
    first = build_latency_model(net, graph, allowed, points=4, repeats=5)
    assert first.info["layer_shapes_measured"] > 0
    full = graph.full_keep()
    small = [int(a[0]) for a in allowed]
    assert first.layer_sum(small) < first.layer_sum(full)
    # monotone in every count, whatever the measurement noise
    for i, a in enumerate(allowed):
        sums = [first.layer_sum([int(c) if j == i else full[j] for j in range(len(full))]) for c in a]
        assert np.all(np.diff(sums) >= -1e-12)
    second = build_latency_model(net, graph, allowed, points=4, repeats=5)
    assert second.info["layer_shapes_measured"] == 0  # everything came from the per-machine cache
    assert second.layer_sum(small) == pytest.approx(first.layer_sum(small))


def test_calibration_fits_whole_network_measurements():
    net = _chain()
    graph = LayerGraph(net, (3, 16, 16))
    allowed = [allowed_counts(d.channels, 0.2, 1) for d in graph.decisions]
    model = build_latency_model(net, graph, allowed, points=3, repeats=5)
    full, small = graph.full_keep(), [int(a[0]) for a in allowed]
    a, b = model.layer_sum(full), model.layer_sum(small)
    model.calibrate([(full, 2 * a + 1.0), (small, 2 * b + 1.0)])
    assert model.scale == pytest.approx(2.0) and model.offset_ms == pytest.approx(1.0)
    assert model.predict(full) == pytest.approx(2 * a + 1.0)


def test_latency_constrained_search_meets_its_predicted_budget_and_measures_the_result(tmp_path):
    digits = load_dataset("digits")
    config = SearchConfig(target="latency", ratio=0.9, agent="random", episodes=4, calibration_images=200)
    result = amc.search(config=config, out=tmp_path / "run", data=digits)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    latency = summary["latency"]
    assert latency["predicted_ratio"] <= 0.9 + 1e-9
    assert latency["original_ms"] > 0 and latency["pruned_ms"] > 0
    assert {"backend", "threads", "cpu", "calibration"} <= set(latency)
    assert result.summary["macs_ratio"] < 1.0


def test_a_resumed_latency_search_reuses_its_calibration_instead_of_measuring_again(tmp_path, monkeypatch):
    digits = load_dataset("digits")
    config = SearchConfig(target="latency", ratio=0.9, agent="random", episodes=3, calibration_images=200)
    amc.search(config=config, out=tmp_path / "run", data=digits)
    saved = json.loads((tmp_path / "run" / "latency_calibration.json").read_text())
    assert saved["scale"] > 0 and len(saved["info"]["calibration"]) >= 3
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["search"]["episodes"] = 5
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))

    measured = []
    real = search_module._measure_interleaved
    monkeypatch.setattr(search_module, "_measure_interleaved", lambda nets, *a, **k: measured.append(len(nets))
                        or real(nets, *a, **k))
    first = json.loads((tmp_path / "run" / "episodes.jsonl").read_text().splitlines()[0])
    amc.search(out=tmp_path / "run", resume=True, data=digits)
    assert measured == [2]  # only the final check of the exported network against the original
    lines = (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0]) == first
    assert json.loads((tmp_path / "run" / "latency_calibration.json").read_text()) == saved
