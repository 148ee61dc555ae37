"""Fine-grained (weight) pruning for the model-size target: the agent picks each layer's density.

`WeightGraph` offers the same interface the environment uses from `LayerGraph` (decisions, an exact cost
model), but a decision is one conv/linear layer and its count is the number of weights kept. The cost is
affine in every count, so the environment's hard-budget clipping applies unchanged. `MagnitudePruner`
zeroes the smallest-magnitude weights of each layer on a copy; `pack_sparse` gives the compressed form (a packed
bitmask plus the surviving values) whose size on disk, once the run saves it (`RunDir.write_sparse`), is what the
model-size target is about.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from amc.cost import LayerCost, count_params, layer_costs
from amc.safe_open import read_regular_bytes


@dataclass(frozen=True)
class WeightDecision:
    """One step of the agent in fine-grained mode: how many weights of layer `consumer` to keep."""

    index: int
    consumer: str
    channels: int          # weights in the layer (named like LayerGraph's field so the env reads both)
    layer: LayerCost

    @property
    def consumers(self) -> tuple[str, ...]:
        return (self.consumer,)


class WeightGraph:
    """Every conv/linear layer of a model as one decision over its kept weights, with exact costs.

    `macs(keep)` counts the multiply-accumulates of nonzero weights only (what a sparse kernel would do;
    dense kernels do not get faster), `params(keep)` the nonzero parameters (biases and norms included).
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int]):
        self.input_shape = tuple(input_shape)
        self.costs = layer_costs(model, self.input_shape)
        modules = dict(model.named_modules())
        self.total_params = count_params(model)
        self.decisions = [WeightDecision(i, name, modules[name].weight.numel(), cost)
                          for i, (name, cost) in enumerate(self.costs.items())]
        self.skipped: dict[str, str] = {}
        self._weights = np.array([d.channels for d in self.decisions], dtype=np.float64)
        self._macs_per_weight = np.array([d.layer.macs / d.channels for d in self.decisions])

    def _counts(self, keep: Sequence[float]) -> np.ndarray:
        keep = np.asarray(keep, dtype=np.float64)
        if keep.shape != (len(self.decisions),):
            raise ValueError(f"expected {len(self.decisions)} keep counts, got shape {keep.shape}")
        return keep

    def macs(self, keep: Sequence[float]) -> int:
        return int(round(float(self._counts(keep) @ self._macs_per_weight)))

    def params(self, keep: Sequence[float]) -> int:
        return int(round(self.total_params - float((self._weights - self._counts(keep)).sum())))

    def full_keep(self) -> list[int]:
        return [d.channels for d in self.decisions]

    @property
    def total_macs(self) -> int:
        return self.macs(self.full_keep())

    def decision_macs(self) -> list[int]:
        return [d.layer.macs for d in self.decisions]

    def describe(self) -> list[dict]:
        return [{"index": d.index, "consumer": d.consumer, "weights": d.channels, "channels": d.channels,
                 "kernel": d.layer.kernel_size, "stride": d.layer.stride, "macs": d.layer.macs}
                for d in self.decisions]


class MagnitudePruner:
    """Zeroes all but the `keep[i]` largest-magnitude weights of layer i, on a copy of the model."""

    def __init__(self, model: nn.Module, graph: WeightGraph):
        self.model = model
        self.graph = graph
        modules = dict(model.named_modules())
        # one ranking per layer, computed once: a candidate is then a slice of it
        self._order = {d.consumer: torch.argsort(modules[d.consumer].weight.detach().abs().flatten(), descending=True)
                       for d in graph.decisions}
        self._global: torch.Tensor | None = None  # layer index of each weight, best-ranked first (global_counts)

    def masks(self, keep: Sequence[int]) -> dict[str, torch.Tensor]:
        modules = dict(self.model.named_modules())
        out = {}
        for d, count in zip(self.graph.decisions, keep):
            weight = modules[d.consumer].weight
            mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
            mask[self._order[d.consumer][:int(count)]] = True
            out[d.consumer] = mask.view_as(weight)
        return out

    def global_counts(self, total: int) -> list[int]:
        """Per-layer counts of the `total` weights ranked highest over the whole model by magnitude divided by
        their layer's L2 norm: NNCF's global magnitude rule (a big layer's entries are small once normalised, so
        big layers lose most). Within a layer the kept weights are then the largest, as `masks` keeps them."""
        if self._global is None:
            modules = dict(self.model.named_modules())
            scores, layers = [], []
            for d in self.graph.decisions:
                weight = modules[d.consumer].weight.detach().float().flatten().cpu()
                scores.append(weight.abs() / weight.norm().clamp_min(torch.finfo(torch.float32).tiny))
                layers.append(torch.full((weight.numel(),), d.index, dtype=torch.int32))
            self._global = torch.cat(layers)[torch.argsort(torch.cat(scores), descending=True, stable=True)]
        top = self._global[:max(0, int(total))].long()
        return torch.bincount(top, minlength=len(self.graph.decisions)).tolist()

    def prune(self, keep: Sequence[int]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        pruned = copy.deepcopy(self.model)
        modules = dict(pruned.named_modules())
        masks = self.masks(keep)
        with torch.no_grad():
            for name, mask in masks.items():
                modules[name].weight.mul_(mask)
        return pruned, masks


def pack_sparse(model: nn.Module, layers: Sequence[str]) -> dict:
    """`model`'s state with the weights of `layers` as a packed bitmask + nonzero values: {"dense": the other
    tensors, "sparse": per layer its mask, values and shape}.

    Everything is a plain tensor, so the saved file loads with `torch.load(weights_only=True)`; `unpack_sparse`
    (or `load_sparse`, from a file) rebuilds the dense state dict.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # saved, packed by numpy
    sparse: dict[str, torch.Tensor] = {}
    for name in layers:
        weight = state.pop(f"{name}.weight")
        mask = weight != 0
        bits = np.packbits(mask.flatten().numpy())
        sparse[f"{name}.weight.mask"] = torch.from_numpy(bits)
        sparse[f"{name}.weight.values"] = weight[mask]
        sparse[f"{name}.weight.shape"] = torch.tensor(weight.shape)
    return {"dense": state, "sparse": sparse}


def load_sparse(path: str | Path) -> dict[str, torch.Tensor]:
    """The dense state dict of a saved `pack_sparse` form (a fine-grained run's model_sparse.pt)."""
    data = read_regular_bytes(path, "sparse model", "pass the model_sparse.pt of a fine-grained run")
    return unpack_sparse(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


def unpack_sparse(packed: dict) -> dict[str, torch.Tensor]:
    """The dense state dict of `pack_sparse`'s form."""
    state = dict(packed["dense"])
    sparse = packed["sparse"]
    for key in [k[:-len(".mask")] for k in sparse if k.endswith(".mask")]:
        shape = tuple(int(s) for s in sparse[f"{key}.shape"])
        numel = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(sparse[f"{key}.mask"].numpy())[:numel].astype(bool))
        dense = torch.zeros(numel, dtype=sparse[f"{key}.values"].dtype)
        dense[mask] = sparse[f"{key}.values"]
        state[key] = dense.view(shape)
    return state


__all__ = ["WeightGraph", "WeightDecision", "MagnitudePruner", "load_sparse", "pack_sparse", "unpack_sparse"]
