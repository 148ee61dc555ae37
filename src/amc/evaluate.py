"""Scoring a (pruned) model on an in-memory split: the per-episode reward and the final reports."""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn as nn

from amc.data import Split
from amc.data.batching import check_normalization, normalization


PRECISIONS = ("fp32", "bf16")
RACING_Z = 2.5  # one-sided: a candidate as good as the best is cut at any one look with probability ~0.6%


class Evaluator:
    """Top-k accuracy on a fixed split, with the normalized batches built once and reused.

    Batches of 100 in channels-last layout were the fastest CPU setting measured here (ResNet-56,
    2 cores: 8.6 s -> 5.7 s for 5,000 images against contiguous batches of 500). `precision="bf16"`
    runs under bfloat16 autocast, about 2x faster again on CPUs with bf16 units, at a small accuracy cost.
    The batches are kept on `device` as uint8 and normalised as they are scored (a model elsewhere gets each batch
    moved to it first).
    """

    def __init__(self, split: Split, mean: Sequence[float], std: Sequence[float], *, batch_size: int = 100,
                 limit: int | None = None, precision: str = "fp32", device: torch.device | str = "cpu"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        # as given: what a Ray worker rebuilds this evaluator from, and what `limited` narrows
        self.split, self.limit, self.mean, self.std = split, limit, mean, std
        self.batch_size = batch_size
        if limit is not None:
            split = split.subset(torch.arange(min(limit, len(split))))
        self.size = len(split)
        self.precision = precision
        self.device = torch.device(device)
        check_normalization(split, mean, std)
        # uint8 pixels, a quarter of the float batches' memory (10,000 images at 224 px: 1.5 GB, not 6 GB),
        # normalised batch by batch where the model runs: the same arithmetic as `batches`, so the same scores
        self._batches = [(split.x[i:i + batch_size].to(self.device).contiguous(memory_format=torch.channels_last),
                          split.y[i:i + batch_size].to(self.device)) for i in range(0, self.size, batch_size)]
        self._normalization: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def limited(self, images: int) -> "Evaluator":
        """The same scoring on the first `images` of the split (a class-balanced prefix of the held-out split)."""
        limit = images if self.limit is None else min(images, self.limit)
        return Evaluator(self.split, self.mean, self.std, batch_size=self.batch_size, limit=limit,
                         precision=self.precision, device=self.device)

    def _normalizer(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._normalization:
            self._normalization[device] = normalization(self.mean, self.std, device)
        return self._normalization[device]

    def _logits(self, model: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(logits, labels) batch by batch, in eval mode, channels-last and the scoring precision; the model's
        training flag is restored when the caller stops, early or not. Converts `model` to channels-last in
        place (values are unchanged)."""
        was_training = model.training
        model.eval()
        model.to(memory_format=torch.channels_last)
        device = next(model.parameters()).device  # batches kept elsewhere follow the model
        try:
            with torch.no_grad():  # not inference_mode: the model may be trained afterwards
                for x, y in self.inputs(device):
                    with self.autocast(device):
                        logits = model(x)
                    yield logits, y
        finally:
            model.train(was_training)

    def inputs(self, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(normalised images, labels) batch by batch on `device`, channels-last: what a model is scored on."""
        scale, shift = self._normalizer(device)
        for x, y in self._batches:
            yield x.to(device, non_blocking=True).float().mul_(scale).sub_(shift), y.to(device)

    def autocast(self, device: torch.device) -> torch.autocast:
        """The scoring precision's autocast on `device` (bf16, or a no-op for fp32)."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def accuracy(self, model: nn.Module, topk: tuple[int, ...] = (1,)) -> dict[int, float]:
        """{k: share of images whose label is among the top-k predictions}."""
        return self.accuracy_of(self._logits(model), topk)

    def accuracy_of(self, outputs: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    topk: tuple[int, ...] = (1,)) -> dict[int, float]:
        """`accuracy` of (logits, labels) batches computed elsewhere (a part of the network run from a cut)."""
        hits: dict[int, torch.Tensor | int] = {k: 0 for k in topk}
        for logits, y in outputs:
            ranked = logits.topk(min(max(topk), logits.shape[1]), dim=1).indices
            correct = ranked == y.unsqueeze(1)
            for k in topk:  # counted where the logits are: one read back at the end, not one per batch
                hits[k] = hits[k] + correct[:, :k].any(dim=1).sum()
        return {k: int(hits[k]) / self.size for k in topk}

    def top1(self, model: nn.Module) -> float:
        return self.accuracy(model, (1,))[1]

    def race(self, model: nn.Module, beat: float, z: float = RACING_Z,
             min_images: int | None = None) -> tuple[float, int]:
        """Top-1 and the number of images scored, stopping early once the candidate cannot plausibly beat
        `beat`: after `min_images` (default: a quarter of the split, at most 1,000), as soon as the running
        accuracy is `z` standard errors (finite-population corrected) under it. A candidate that runs to the
        end gets its exact full-split top-1, so a search's best is always fully scored; one stopped early gets
        an unbiased estimate from a class-balanced prefix (the held-out split is interleaved by class)."""
        if min_images is None:
            min_images = min(1000, max(100, self.size // 4))
        hits: torch.Tensor | int = 0
        seen = 0
        batches = self._logits(model)
        for logits, y in batches:
            hits = hits + (logits.argmax(dim=1) == y).sum()  # on the device; read back only where a look is due
            seen += len(y)
            if min_images <= seen < self.size:
                p = int(hits) / seen
                spread = math.sqrt(max(p * (1 - p), 1e-4) / seen * (self.size - seen) / (self.size - 1))
                if p + z * spread < beat:
                    batches.close()  # restores the model's mode now, not when the generator is collected
                    return p, seen
        return int(hits) / self.size, self.size


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: Iterable[torch.Tensor | tuple]) -> None:
    """Re-estimate BatchNorm running statistics of a pruned model on a few training batches.

    Pruning changes the inputs each BN sees (least-squares reconstruction shifts them), so the
    statistics collected on the original network are stale.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the given batches
    was_training = model.training
    model.train().to(memory_format=torch.channels_last)  # as scoring runs it: 1.45x faster here than NCHW
    with torch.no_grad():
        for x in images:  # a tuple: the inputs of a part of a network (`amc.downstream`), passed as they are
            model(*x) if isinstance(x, tuple) else model(x.contiguous(memory_format=torch.channels_last)
                                                        if x.dim() == 4 else x)
    model.train(was_training)
    for m, (momentum, training) in zip(norms, saved):
        m.momentum = momentum
        m.train(training)
