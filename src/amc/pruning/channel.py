"""Turns per-decision keep counts into a pruned, reconstructed model: the per-episode hot path."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn

from amc.pruning.features import LayerStats
from amc.pruning.lsq import greedy_ranking, least_squares, magnitude_ranking
from amc.pruning.surgery import prune_copy

if TYPE_CHECKING:  # annotations only: `amc search --help` reads SELECTIONS without loading torch_pruning
    from amc.graph import LayerGraph

SELECTIONS = ("magnitude", "l2", "greedy")  # magnitude: L1 norm; l2: L2 norm, as ModelOpt FastNAS ranks


class ChannelPruner:
    """Prunes a fixed original model for any keep-count vector, caching what episodes share.

    Channel rankings depend only on the layer (magnitude) or on its fixed statistics (greedy), so each
    keep count reads a prefix of one ranking; least-squares solutions are memoised per (layer, count).
    """

    def __init__(self, model: nn.Module, graph: LayerGraph, stats: dict[str, LayerStats] | None = None, *,
                 selection: str = "magnitude", reconstruct: bool = True, ridge: float = 1e-4):
        if selection not in SELECTIONS:
            raise ValueError(f"unknown channel selection {selection!r}; choose one of {SELECTIONS}")
        if (reconstruct or selection == "greedy") and stats is None:
            raise ValueError("reconstruction and greedy selection need calibration statistics")
        self.model = model
        self.graph = graph
        self.stats = stats
        self.reconstruct = reconstruct
        self.ridge = ridge
        modules = dict(model.named_modules())
        self._rankings = []
        for d in graph.decisions:
            if selection == "greedy" and not d.coupled:
                self._rankings.append(greedy_ranking(stats[d.consumer], ridge))
            else:  # coupled groups: magnitude summed over every consumer of the shared channels
                self._rankings.append(magnitude_ranking(*(modules[c].weight for c in d.consumers),
                                                        p=2 if selection == "l2" else 1))
        self._solve = lru_cache(maxsize=4096)(self._solve_uncached)

    def kept_channels(self, decision: int, count: int) -> torch.Tensor:
        """Sorted indices of the `count` channels kept at `decision`."""
        return torch.sort(self._rankings[decision][:count]).values

    def _solve_uncached(self, consumer: str, decision: int, count: int) -> torch.Tensor:
        return least_squares(self.stats[consumer], self.kept_channels(decision, count), self.ridge)

    def prune(self, keep_counts: Sequence[int]) -> tuple[nn.Module, list[torch.Tensor]]:
        """(pruned copy, kept channel indices per decision) for integer `keep_counts`."""
        kept = [self.kept_channels(i, int(c)) for i, c in enumerate(keep_counts)]
        weights = None
        if self.reconstruct:
            weights = {consumer: self._solve(consumer, d.index, int(c))
                       for d, c in zip(self.graph.decisions, keep_counts) if 0 < int(c) < d.channels
                       for consumer in d.consumers}  # 0: a dropped block, nothing to reconstruct
        return prune_copy(self.model, self.graph, kept, weights), kept
