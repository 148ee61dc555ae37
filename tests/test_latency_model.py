import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch.nn as nn

import amc
from amc.data import load_dataset
from amc.env import allowed_counts
from amc.graph import LayerGraph
from amc.config import SearchConfig
from amc.latency.guard import SLACK
from amc.latency.table import build_latency_model

budget_module = importlib.import_module("amc.latency.guard")


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


def test_latency_constrained_search_meets_its_predicted_budget_and_measures_the_result(tmp_path, simulated_timer):
    digits = load_dataset("digits")
    config = SearchConfig(target="latency", ratio=0.9, agent="random", episodes=4, calibration_images=200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = amc.search(config=config, out=tmp_path / "run", data=digits)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    latency = summary["latency"]
    # on the simulated machine (time = f(MACs, layers), whatever this machine's load) the budget holds as
    # measured, and the summary says so; no "over the budget" warning
    assert latency["met"] and latency["measured_ratio"] <= 0.9 * (1 + SLACK)
    assert not any("over the budget" in str(w.message) for w in caught)
    assert latency["checks"][-1]["measured_ratio"] == latency["measured_ratio"]
    assert latency["original_ms"] > 0 and latency["pruned_ms"] > 0
    assert {"backend", "threads", "cpu", "calibration"} <= set(latency)
    assert result.summary["macs_ratio"] < 1.0


def test_a_resumed_latency_search_reuses_its_calibration_instead_of_measuring_again(tmp_path, monkeypatch,
                                                                                  simulated_timer):
    digits = load_dataset("digits")
    config = SearchConfig(target="latency", ratio=0.9, agent="random", episodes=3, calibration_images=200)
    amc.search(config=config, out=tmp_path / "run", data=digits)
    saved = json.loads((tmp_path / "run" / "latency_calibration.json").read_text())
    assert saved["scale"] > 0 and len(saved["info"]["calibration"]) >= 3
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["search"]["episodes"] = 5
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))

    measured = []
    real = budget_module.measure_interleaved
    monkeypatch.setattr(budget_module, "measure_interleaved", lambda nets, *a, **k: measured.append(len(nets))
                        or real(nets, *a, **k))
    first = json.loads((tmp_path / "run" / "episodes.jsonl").read_text().splitlines()[0])
    amc.search(out=tmp_path / "run", resume=True, data=digits)
    assert measured and set(measured) == {2}  # only checks of a policy against the original: no calibration
    lines = (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0]) == first
    resumed = json.loads((tmp_path / "run" / "latency_calibration.json").read_text())
    assert resumed["info"]["calibration"] == saved["info"]["calibration"]  # started from, not measured again
    assert resumed["info"]["checks"][:len(saved["info"]["checks"])] == saved["info"]["checks"]


def test_a_drifted_latency_calibration_is_caught_by_measuring_the_best_policy_and_refitted(tmp_path, monkeypatch):
    """A deterministic "machine" whose fixed overhead grows after the calibration (as a shared machine's load
    does): the calibrated prediction now says pruned networks are relatively faster than they are. The guard
    must catch that by measuring the best policy, refit through it and export a policy that meets the budget
    on the machine as it is now."""
    tables = []
    real_build = budget_module.build_latency_model
    monkeypatch.setattr(budget_module, "build_latency_model",
                        lambda *a, **k: tables.append(real_build(*a, **k)) or tables[-1])
    calls = []

    def machine_ms(nets, input_shape, config, rounds=8):
        table = tables[0]
        full = table.layer_sum([d.channels for d in table.graph.decisions])
        calls.append(len(nets))
        overhead = 0.05 if len(calls) <= 2 else 0.05 + 0.3 * full  # the two calibration measurements, then load
        return [overhead + table.layer_sum(_keep_of(net, table.graph)) for net in nets]

    monkeypatch.setattr(budget_module, "measure_interleaved", machine_ms)
    monkeypatch.setattr(budget_module, "CHECK_EVERY", 2)
    config = SearchConfig(target="latency", ratio=0.7, agent="random", episodes=10, calibration_images=200)
    result = amc.search(config=config, out=tmp_path / "run", data=load_dataset("digits"))
    latency = result.summary["latency"]
    first = latency["checks"][0]
    assert first["refit"] and first["measured_ratio"] > 0.7 + 1e-3  # the calibrated budget no longer held
    assert latency["measured_ratio"] <= 0.7 + 1e-6 and latency["met"]  # the exported policy meets it
    assert latency["predicted_ratio"] == pytest.approx(latency["measured_ratio"])
    assert json.loads((tmp_path / "run" / "latency_calibration.json").read_text())["info"]["checks"] == \
        latency["checks"]


def _keep_of(net, graph):
    modules = dict(net.named_modules())
    return [modules[d.consumer].in_channels if hasattr(modules[d.consumer], "in_channels")
            else modules[d.consumer].in_features for d in graph.decisions]


def test_the_final_check_takes_the_median_of_repeated_measurements_so_one_noisy_pair_cannot_fail_it(
        tmp_path, monkeypatch):
    """An exact "machine" except that the final check's first side-by-side pair runs the pruned network 8% slow
    (a noisy moment, as seen on an idle machine at 1-2 ms): the check must take the median of its repeats,
    find the budget met and leave the calibration alone."""
    tables = []
    real_build = budget_module.build_latency_model
    monkeypatch.setattr(budget_module, "build_latency_model",
                        lambda *a, **k: tables.append(real_build(*a, **k)) or tables[-1])
    calls = []
    noise = iter([1.08, 1.0, 0.99])

    def machine_ms(nets, input_shape, config, rounds=8):
        table = tables[0]
        calls.append(len(nets))
        times = [0.05 + table.layer_sum(_keep_of(net, table.graph)) for net in nets]
        if len(calls) > 2:  # after the two calibration measurements: the final check's pairs
            times[1] *= next(noise)
        return times

    monkeypatch.setattr(budget_module, "measure_interleaved", machine_ms)
    monkeypatch.setattr(budget_module, "CHECK_EVERY", 1000)  # no checks during the search, only the final one
    config = SearchConfig(target="latency", ratio=0.7, agent="random", episodes=6, calibration_images=200)
    result = amc.search(config=config, out=tmp_path / "run", data=load_dataset("digits"))
    latency = result.summary["latency"]
    final = latency["checks"][-1]
    assert len(latency["checks"]) == 1 and len(final["measured_ratios"]) == budget_module.FINAL_REPEATS == 3
    assert final["measured_ratios"][0] == pytest.approx(1.08 * final["measured_ratios"][1])  # the noisy pair
    assert latency["measured_ratio"] == pytest.approx(final["measured_ratios"][1])  # the median one counts
    assert latency["met"] and not final["refit"]


def _table(**kw):
    net = _chain()
    graph = LayerGraph(net, (3, 16, 16))
    allowed = [allowed_counts(d.channels, 0.2, 1) for d in graph.decisions]
    return graph, build_latency_model(net, graph, allowed, points=3, repeats=2, **kw)


@pytest.mark.parametrize("damage,said", [
    (lambda cache: [1, 2], "is a JSON list, not an object of layer timings"),
    (lambda cache: "{\"unfinished", "is unreadable (JSONDecodeError)"),
    (lambda cache: {key: "fast" for key in cache}, "entries are not a time in milliseconds"),
    (lambda cache: {key: float("nan") for key in cache}, "entries are not a time in milliseconds"),
    (lambda cache: {**cache, next(iter(cache)): -1.0}, "1 of"),
])
def test_a_malformed_latency_cache_is_discarded_rebuilt_and_said_so(simulated_timer, damage, said):
    graph, first = _table()
    path = Path(first.info["cache"])
    cache = json.loads(path.read_text())
    damaged = damage(cache)
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, rebuilt = _table()
    told = [str(w.message) for w in caught if "latency cache" in str(w.message)]
    assert len(told) == 1 and said in told[0] and "discarded" in told[0], told
    assert rebuilt.info["layer_shapes_measured"] > 0
    assert rebuilt.layer_sum(graph.full_keep()) == pytest.approx(first.layer_sum(graph.full_keep()))
    assert json.loads(path.read_text()) == cache  # rebuilt whole (the simulated machine times alike)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and the next search reads it silently
        assert _table()[1].info["layer_shapes_measured"] == 0


def test_a_cache_directory_that_cannot_be_written_costs_a_warning_naming_amc_cache_dir(simulated_timer, tmp_path,
                                                                                        monkeypatch):
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("AMC_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with pytest.warns(UserWarning, match="the latency table is not kept .*set AMC_CACHE_DIR"):
        graph, model = _table()
    assert model.info["layer_shapes_measured"] > 0 and model.layer_sum(graph.full_keep()) > 0
