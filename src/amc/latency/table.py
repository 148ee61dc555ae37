"""Predicted inference latency of a pruned network from its per-decision keep counts.

Measuring every candidate of a search is slow and noisy, so each conv/linear layer is measured once, alone,
on a grid of the input/output channel counts its decisions can take (a lookup table, cached per machine,
backend, threads and batch), and a candidate's latency is the sum of its layers' interpolated times. The
sum misses what lies between layers (norms, activations, additions, framework overhead); two whole-network
measurements (unpruned and uniformly pruned) calibrate it as `offset + scale * sum`. Where blocks may be
dropped, a kept block also adds what lies between its layers (norms, the addition, an activation), one term per
block fitted to a whole network with blocks dropped (`fit_blocks`): a layer's time alone holds a call's overhead
that it does not cost inside a network, so no standalone timing can say what a block's removal saves. The
search checks the exported model by direct measurement.
"""

from __future__ import annotations

import copy

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch.nn as nn

from amc import cache as amc_cache
from amc.atomic import write_json_atomic
from amc.graph import LayerGraph
from amc.latency.measure import cpu_name, measure_latency
from amc.safe_open import NotAFileError, read_regular_bytes


def cache_dir() -> Path:
    """Where measured layer timings are kept: AMC_CACHE_DIR/latency, else ~/.cache/amc/latency."""
    return amc_cache.cache_dir("latency")


@dataclass
class _Table:
    """Measured milliseconds of one layer on a grid of (input channels, output channels)."""

    cin: np.ndarray     # grid of input channel counts, increasing
    cout: np.ndarray    # grid of output channel counts, increasing
    ms: np.ndarray      # [len(cin), len(cout)], made monotone non-decreasing along both axes

    def __call__(self, cin: float, cout: float) -> float:
        rows = [np.interp(cout, self.cout, row) for row in self.ms]
        return float(np.interp(cin, self.cin, rows))


class LatencyModel:
    """`predict(keep)` in milliseconds for the network of `graph` pruned to `keep` counts."""

    def __init__(self, graph: LayerGraph, tables: dict[str, _Table], offset_ms: float = 0.0, scale: float = 1.0,
                 info: dict | None = None):
        self.graph = graph
        self.tables = tables
        self.block_ms: dict[int, float] = {}  # per block decision: its time beyond its layers' (fit_blocks)
        self.offset_ms = offset_ms
        self.scale = scale
        self.info = info or {}
        self.points: list[tuple[Sequence[float], float]] = []  # whole-network (keep, ms) the calibration fitted
        self.dropped_point: tuple[Sequence[float], float] | None = None  # the one with blocks dropped (fit_blocks)

    def layer_sum(self, keep: Sequence[float]) -> float:
        """Summed table times of the layers left, plus the own term of every droppable block kept."""
        return self._tables_sum(keep) + sum(ms for decision, ms in self.block_ms.items() if keep[decision] > 0)

    def _tables_sum(self, keep: Sequence[float]) -> float:
        return sum(self.tables[layer.name](cin, cout) for layer, cin, cout in self.graph.layer_channels(keep))

    def predict(self, keep: Sequence[float]) -> float:
        return self.offset_ms + self.scale * self.layer_sum(keep)

    def calibration(self) -> dict:
        """What `calibrate` (and `fit_blocks`) fitted, as JSON (saved with a search so that a resumed run reuses
        it)."""
        return {"offset_ms": self.offset_ms, "scale": self.scale, "info": self.info}

    def restore_calibration(self, saved: dict) -> None:
        self.offset_ms, self.scale = float(saved["offset_ms"]), float(saved["scale"])
        self.info = {**self.info, **saved.get("info", {})}
        if "block_ms" in self.info:
            self.block_ms = {b.decision: float(self.info["block_ms"]) for b in self.graph.blocks}

    def with_line(self, scale: float, offset_ms: float) -> "LatencyModel":
        """This table under another calibration line (a refit): a new model, this one left as it was, so that a
        budget built over it keeps its costs (`amc.budget.Budget.refitted` takes the new one)."""
        refitted = copy.copy(self)
        refitted.scale, refitted.offset_ms = scale, offset_ms
        return refitted

    def fit_blocks(self, keep: Sequence[float], measured_ms: float) -> None:
        """Set every droppable block's own term (one value, in table units) so that the network `keep`, which
        drops blocks, is predicted at `measured_ms` while the full network's prediction stays where the
        calibration put it. Bounded below so that a kept block never costs less than a dropped one. The point
        is kept (`dropped_point`) for a later calibration to fit again."""
        self.dropped_point = (keep, measured_ms)
        full = self.graph.full_keep()
        dropped = len(self.graph.blocks) - len(self.graph.kept_blocks(keep))
        if not dropped:
            return
        predicted_full = self.predict(full)
        layers_saved = self._tables_sum(full) - self._tables_sum(keep)
        value = ((predicted_full - measured_ms) / self.scale - layers_saved) / dropped
        floor = -min(sum(self.tables[t.name](1, 1) for t in self.graph.layers if t.block_decision == b.decision)
                     for b in self.graph.blocks)
        self.block_ms = {b.decision: max(value, floor) for b in self.graph.blocks}
        self.offset_ms = predicted_full - self.scale * self.layer_sum(full)
        self.info["block_ms"] = max(value, floor)

    def calibrate(self, points: list[tuple[Sequence[float], float]],
                  fit: list[tuple[Sequence[float], float]] | None = None) -> None:
        """Fit offset and scale to whole-network measurements [(keep, measured_ms), ...] (least squares; to
        `fit` where only some of them should count) and keep them all (`points`); the scale stays positive so
        the prediction keeps growing with every count."""
        self.points = list(points)
        points = self.points if fit is None else fit
        sums = np.array([self.layer_sum(k) for k, _ in points])
        measured = np.array([m for _, m in points])
        if len(points) == 1 or np.ptp(sums) < 1e-9:
            self.scale, self.offset_ms = 1.0, float(np.mean(measured - sums))
            return
        scale, offset = np.polyfit(sums, measured, 1)
        self.scale = max(float(scale), 0.1)
        self.offset_ms = float(np.mean(measured - self.scale * sums))


def _grid(allowed: np.ndarray, points: int) -> np.ndarray:
    picks = np.unique(np.round(np.linspace(0, len(allowed) - 1, min(points, len(allowed)))).astype(int))
    return allowed[picks]


def _standalone(module: nn.Module, cin: int, cout: int, depthwise: bool) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        groups = cout if depthwise else 1
        return nn.Conv2d(cout if depthwise else cin, cout, module.kernel_size, module.stride, module.padding,
                         module.dilation, groups=groups, bias=module.bias is not None)
    return nn.Linear(cin, cout, bias=module.bias is not None)


def build_latency_model(model: nn.Module, graph: LayerGraph, allowed: Sequence[np.ndarray], *,
                        backend: str = "torch", threads: int = 1, batch: int = 1, points: int = 6,
                        repeats: int = 30, progress: Callable[[str], None] | None = None,
                        use_cache: bool = True) -> LatencyModel:
    """Measure (or read from the cache) every layer's latency on a grid of `points` counts per decision.

    `allowed[i]` are the keep counts decision i can take (the environment's, after rounding; a 0, a dropped
    block, costs nothing). Grouped convolutions other than depthwise are measured at their own size only.
    """
    modules = dict(model.named_modules())
    key = hashlib.sha256(f"{cpu_name()}|{backend}|{threads}|{batch}".encode()).hexdigest()[:16]
    path = cache_dir() / f"{backend}-t{threads}-b{batch}-{key}.json"
    cache, discarded = _read_cache(path) if use_cache else ({}, False)
    measured = 0
    tables: dict[str, _Table] = {}
    for term in graph.layers:
        module = modules[term.name]
        cost = graph.costs[term.name]
        cin_grid = _grid(_kept(allowed[term.in_decision]), points) if term.in_decision is not None \
            else np.array([term.in_channels])
        cout_grid = _grid(_kept(allowed[term.out_decision]), points) if term.out_decision is not None \
            else np.array([term.out_channels])
        if term.depthwise:
            cin_grid = cout_grid  # one count drives both sides
        grouped = term.groups != 1 and not term.depthwise
        if grouped:
            cin_grid, cout_grid = np.array([term.in_channels]), np.array([term.out_channels])
        ms = np.zeros((len(cin_grid), len(cout_grid)))
        for i, cin in enumerate(cin_grid):
            for j, cout in enumerate(cout_grid):
                if term.depthwise and i != j:
                    continue
                shape = (int(cin), *cost.in_hw) if cost.kind == "conv" else (int(cin),)
                signature = f"{type(module).__name__}|{module}|dw={term.depthwise}|{cin}x{cout}|{shape}"
                if grouped:
                    layer = module
                else:
                    layer = _standalone(module, int(cin), int(cout), term.depthwise)
                if signature not in cache:
                    cache[signature] = measure_latency(layer, shape, backend=backend, batch=batch, threads=threads,
                                                       warmup=3, repeats=repeats).median_ms
                    measured += 1
                    if progress and measured % 20 == 0:
                        progress(f"measured {measured} layer shapes")
                ms[i, j] = cache[signature]
        if term.depthwise:  # only the diagonal was measured: a 1-D table over the shared count
            diag = np.maximum.accumulate(np.diag(ms))
            tables[term.name] = _DepthwiseTable(cout_grid, diag)
            continue
        ms = np.maximum.accumulate(np.maximum.accumulate(ms, axis=0), axis=1)  # measurement noise
        tables[term.name] = _Table(cin_grid.astype(float), cout_grid.astype(float), ms)
    if (measured or discarded) and use_cache:
        _save_cache(path, cache)
    info = {"backend": backend, "threads": threads, "batch": batch, "cpu": cpu_name(), "cache": str(path),
            "layer_shapes_measured": measured, "layer_shapes_cached": len(cache) - measured}
    return LatencyModel(graph, tables, info=info)


def _read_cache(path: Path) -> tuple[dict[str, float], bool]:
    """The layer timings cached at `path` ({} where there are none) and whether any was discarded. A cache only
    saves time, so an entry that fails its schema (a signature string -> a finite time in ms, >= 0), or a file
    that is not such a JSON object, is dropped (one warning says so) and measured again."""
    try:
        raw = json.loads(read_regular_bytes(path, "latency cache", "remove it"))
        found = f"a JSON {type(raw).__name__}"
    except (FileNotFoundError, NotADirectoryError):
        return {}, False
    except (OSError, ValueError, NotAFileError) as e:  # ValueError: not JSON, or not UTF-8
        raw, found = None, f"unreadable ({type(e).__name__})"
    if not isinstance(raw, dict):
        warnings.warn(f"latency cache {path} is {found}, not an object of layer timings; discarded: every layer is "
                      "measured again", stacklevel=3)
        return {}, True
    cache = {key: float(ms) for key, ms in raw.items() if _is_time(ms)}
    if len(cache) < len(raw):
        warnings.warn(f"latency cache {path}: {len(raw) - len(cache)} of {len(raw)} entries are not a time in "
                      "milliseconds (a finite number >= 0); discarded: those layers are measured again", stacklevel=3)
    return cache, len(cache) < len(raw)


def _is_time(ms) -> bool:
    return isinstance(ms, (int, float)) and not isinstance(ms, bool) and math.isfinite(ms) and ms >= 0


def _save_cache(path: Path, cache: dict[str, float]) -> None:
    """Keep the timings for the next search (where the cache cannot be written, a warning, not a failure)."""
    amc_cache.keep("latency", path.name, lambda p: write_json_atomic(p, cache),
                   "the latency table is not kept for the next search")


def _kept(counts: np.ndarray) -> np.ndarray:
    return counts[counts > 0]


class _DepthwiseTable:
    def __init__(self, counts: np.ndarray, ms: np.ndarray):
        self.counts, self.ms = counts.astype(float), ms

    def __call__(self, cin: float, cout: float) -> float:
        return float(np.interp(cout, self.counts, self.ms))


__all__ = ["LatencyModel", "build_latency_model", "cache_dir"]
