"""Scoring a candidate policy: prune a copy of the model, recalibrate its BatchNorm, measure held-out top-1.

`Scorer` is the one place a policy becomes a number. `build_scorer` assembles it the way a search does
(calibration images -> layer statistics -> pruner -> evaluator -> scorer); the search, the Ray workers and
every benchmark build theirs with it, so they score alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from amc.config import SearchConfig
from amc.data import Dataset, Split
from amc.data.batching import NormalizedImages, check_normalization
from amc.devices import model_device
from amc.evaluate import Evaluator, recalibrate_batchnorm
from amc.graph import LayerGraph
from amc.models import model_info
from amc.pruning import ChannelPruner, collect_stats
from amc.pruning.fine_grained import MagnitudePruner, WeightGraph


@dataclass(frozen=True)
class Score:
    """What scoring one candidate measured: its held-out top-1 (a raced candidate's prefix estimate), the held-out
    images it was scored on (0: a policy scored before, not scored again), and where the time went (seconds of
    prune, recalibrate, evaluate). `float(score)` is the accuracy."""

    accuracy: float
    images: int = 0
    timing: dict[str, float] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.accuracy)


class Scorer:
    """`scorer(keep) -> Score` of the network pruned to `keep`; repeated policies are not scored twice.

    With `racing`, a candidate is dropped as soon as it cannot plausibly beat the bar (by default `best`, the
    best fully scored accuracy this scorer has seen or been told of with `note_best`) and its prefix estimate
    is returned. What a call measured is its return value, never an attribute to read afterwards.
    """

    def __init__(self, pruner: ChannelPruner | MagnitudePruner, evaluator: Evaluator,
                 recalibration: Sequence[torch.Tensor] = (), racing: bool = False,
                 calibration: NormalizedImages | torch.Tensor | None = None):
        self.pruner = pruner
        self.evaluator = evaluator
        self.recalibration = list(recalibration)
        self.racing = racing
        self.best = float("-inf")  # best fully scored accuracy: what a raced candidate must plausibly beat
        self._scores: dict[tuple[int, ...], float] = {}
        self.calibration = calibration  # the images the statistics came from (build_scorer)

    @property
    def model(self) -> nn.Module:
        """The original (unpruned) model."""
        return self.pruner.model

    @property
    def stats(self) -> dict | None:
        """The calibration statistics least squares solves with (None for fine-grained or magnitude-only)."""
        return getattr(self.pruner, "stats", None)

    def build(self, keep: Sequence[int]) -> nn.Module:
        """The pruned network of `keep`, BatchNorm recalibrated: what is scored and what is exported."""
        return self._build(keep)[0]

    def _build(self, keep: Sequence[int]) -> tuple[nn.Module, dict[str, float]]:
        t0 = time.perf_counter()
        pruned, _ = self.pruner.prune(list(keep))
        t1 = time.perf_counter()
        if self.recalibration:
            recalibrate_batchnorm(pruned, self.recalibration)
        return pruned, {"prune": t1 - t0, "recalibrate": time.perf_counter() - t1}

    def __call__(self, keep: Sequence[int], beat: float | None = None) -> Score:
        """Score `keep`; with racing, against `beat` (default: this scorer's `best`)."""
        key = tuple(int(k) for k in keep)
        if key in self._scores:
            return Score(self._scores[key], 0, {"prune": 0.0, "recalibrate": 0.0, "evaluate": 0.0})
        pruned, timing = self._build(key)
        t0 = time.perf_counter()
        if self.racing:
            accuracy, images = self.evaluator.race(pruned, self.best if beat is None else beat)
            if images == self.evaluator.size:
                self.note_best(accuracy)
        else:
            accuracy, images = self.evaluator.top1(pruned), self.evaluator.size
        self._scores[key] = accuracy
        return Score(accuracy, images, {**timing, "evaluate": time.perf_counter() - t0})

    def remember(self, keep: Sequence[int], accuracy: float) -> None:
        """Take `accuracy` as `keep`'s score, as if scored here (a resumed log's episodes): a policy seen before
        the interruption is then not scored again after it, as in the run that was never stopped."""
        self._scores.setdefault(tuple(int(k) for k in keep), accuracy)

    def note_best(self, accuracy: float) -> None:
        """Raise the racing bar to `accuracy`, a fully scored accuracy found elsewhere (a resumed log, a worker)."""
        self.best = max(self.best, float(accuracy))

    def variant(self, *, recalibration: Sequence[torch.Tensor] | None = None, racing: bool | None = None,
                evaluator: Evaluator | None = None) -> "Scorer":
        """The same pruner with other recalibration, racing or evaluator (e.g. `evaluator.limited(1000)`), and a
        cache of its own."""
        return Scorer(self.pruner, evaluator or self.evaluator,
                      self.recalibration if recalibration is None else recalibration,
                      self.racing if racing is None else racing, self.calibration)


def recalibration_batches(images: NormalizedImages | torch.Tensor, batches: int) -> list[torch.Tensor]:
    """The first `batches` hundreds of the calibration images: what BN recalibration re-estimates on."""
    return [images[i:i + 100] for i in range(0, 100 * batches, 100) if i < len(images)]


def calibration_images(dataset: Dataset, model: nn.Module, count: int, seed: int,
                       device: torch.device | None = None) -> NormalizedImages:
    """`count` training images (never held-out) chosen by `seed`, kept as uint8 on `device` (default: the model's)
    and read normalised for `model`."""
    info = model_info(model)
    index = dataset.calibration_indices(min(count, len(dataset.train)), seed)
    split = dataset.train.subset(index)
    check_normalization(split, info.mean, info.std)
    return NormalizedImages(split.x.to(model_device(model) if device is None else device), info.mean, info.std)


def build_scorer(model: nn.Module, graph: LayerGraph | WeightGraph, dataset: Dataset,
                 config: SearchConfig = SearchConfig(), *, images: NormalizedImages | torch.Tensor | None = None,
                 device: torch.device | None = None) -> Scorer:
    """The scorer a search with `config` uses: calibration statistics sampled from `config.calibration_images`
    training images (or `images`), the pruner (`config.selection`, `config.reconstruct`; magnitude masks for
    fine-grained), held-out scoring at `config.precision`, BN recalibration and racing as configured. Images,
    statistics and held-out batches live on `device` (default: the model's), where the model must be too."""
    device = model_device(model) if device is None else device
    if images is None:
        images = calibration_images(dataset, model, config.calibration_images, config.seed, device)
    images = images.to(device)
    stats = None
    if not isinstance(graph, WeightGraph) and (config.reconstruct or config.selection == "greedy"):
        stats = collect_stats(model, graph, images, points_per_image=config.points_per_image, seed=config.seed)
    return scorer_from(model, graph, dataset.heldout, images, stats, config, device=device)


def scorer_from(model: nn.Module, graph: LayerGraph | WeightGraph, heldout: Split, images: NormalizedImages | torch.Tensor,
                stats: dict | None, config: SearchConfig, *, device: torch.device | None = None) -> Scorer:
    """`build_scorer`'s scorer from what it sampled (the calibration `images` and their `stats`): how a Ray
    worker builds the very scorer the driver has, without sampling again. Held-out batches live on `device`
    (default: the model's)."""
    info = model_info(model)
    device = model_device(model) if device is None else device
    if isinstance(graph, WeightGraph):
        pruner = MagnitudePruner(model, graph)
    else:
        pruner = ChannelPruner(model, graph, stats, selection=config.selection, reconstruct=config.reconstruct)
    evaluator = Evaluator(heldout, info.mean, info.std, batch_size=config.eval_batch_size,
                          limit=config.heldout_limit, precision=config.precision, device=device)
    return Scorer(pruner, evaluator, recalibration_batches(images, config.bn_recalibration), racing=config.races,
                  calibration=images)


__all__ = ["Score", "Scorer", "build_scorer", "calibration_images", "recalibration_batches", "scorer_from"]
