"""Which channels of a CNN can be pruned, how they couple, and what each choice costs.

The model is traced once with torch-pruning's DependencyGraph. A *decision* is one hidden tensor whose
channels can be removed independently of everything else: the input channels of a consumer layer
(conv or linear) together with the output channels of the one layer that produces them, and whatever
sits between (BatchNorm, activations, depthwise convolutions). Channels that meet other tensors in a
residual addition, a concatenation or a channel padding (the option-A shortcut of CIFAR ResNets, which
torch-pruning treats as an elementwise op) are not free and stay whole, as in the AMC paper.

The cost model is exact for the physically pruned network: every conv/linear weight is a product of
(kept inputs) x (kept outputs), so MACs and parameters are sums of such products over the layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp

from amc.blocks import Block, find_blocks
from amc.cost import LayerCost, count_params, layer_costs
from amc.errors import UnsupportedModelError

# Activation backward nodes that pass channels through one-to-one; anything else with channels
# coupling (Add, Mul, Cat, ConstantPadNd, ...) makes a group not free.
_PASS_THROUGH_OPS = ("Relu", "Hardtanh", "Clamp", "Sigmoid", "Silu", "Gelu", "Hardswish", "Hardsigmoid",
                     "LeakyRelu", "Elu", "Mish", "Tanh", "MaxPool", "AvgPool", "Mean", "Dropout", "Clone",
                     "TBackward")  # TBackward: the transposed weight of a linear layer, not data


@dataclass(frozen=True)
class Member:
    """One module touched when a decision removes channels: its name and torch-pruning's handler."""

    module: str
    handler: Callable[[nn.Module, Sequence[int]], nn.Module] = field(compare=False, repr=False)
    role: str  # "consumer" (input channels), "producer" (output channels), "depthwise", "norm"


@dataclass(frozen=True)
class Decision:
    """One step of the agent: how many input channels of `consumer` (and outputs of `producer`) to keep.

    A coupled-group decision (`group_coupled=True`) has several consumers and producers sharing the
    same channels (a residual stream); `consumer`/`producer`/`layer` then describe the first of them.
    """

    index: int
    consumer: str
    producer: str
    channels: int                 # channels before pruning
    layer: LayerCost              # the consumer layer, whose features form the state
    members: tuple[Member, ...]
    block: Block | None = None    # the residual block whose branch this decision is (0 channels drop it)

    @property
    def consumers(self) -> tuple[str, ...]:
        return tuple(m.module for m in self.members if m.role == "consumer")

    @property
    def coupled(self) -> bool:
        return len(self.consumers) > 1 or sum(m.role == "producer" for m in self.members) > 1


@dataclass
class _LinearTerm:
    """MACs/params of one conv/linear layer as a function of the decisions controlling its channels."""

    name: str
    macs_per_pair: int            # MACs per (input channel/groups, output channel) pair
    weight_per_pair: int          # weight elements per pair
    in_channels: int
    out_channels: int
    groups: int
    has_bias: bool
    in_decision: int | None
    out_decision: int | None
    depthwise: bool
    block_decision: int | None = None  # the decision whose 0 drops the block this layer is in


class LayerGraph:
    """Prunable decisions of a model plus an exact MACs/params model over per-decision keep counts."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int], *, group_coupled: bool = False):
        """Trace `model` at `input_shape` (C, H, W). `group_coupled`: also make each residual-coupled
        channel group (all layers reading and writing one residual stream) a single decision, where
        torch-pruning follows it correctly (never across a zero-padded shortcut)."""
        self.input_shape = tuple(input_shape)
        was_training = model.training
        model.eval()
        self.costs = layer_costs(model, self.input_shape)
        self.total_params = count_params(model)
        modules = dict(model.named_modules())
        # batch 2: with batch 1 some torch builds trace a conv with bias through extra unsqueeze nodes
        example = torch.zeros(2, *self.input_shape)
        dependency_graph = tp.DependencyGraph().build_dependency(model, example, verbose=False)
        names = {module: name for name, module in model.named_modules()}
        decisions: list[Decision] = []
        self.skipped: dict[str, str] = {}
        unsupported = [f"{name} ({type(m).__name__})" for name, m in modules.items() if _is_unsupported(m)]
        if unsupported:
            more = f" and {len(unsupported) - 3} more" if len(unsupported) > 3 else ""
            raise UnsupportedModelError(
                f"model contains layers of types amc cannot prune consistently: {', '.join(unsupported[:3])}{more}; "
                "replace them with Conv2d/Linear layers or open an issue")
        for name, cost in self.costs.items():
            module = modules[name]
            if cost.groups != 1 or cost.in_channels <= 1:
                continue  # depthwise/grouped convs are pruned with their producer, never as consumers
            fn = tp.prune_conv_in_channels if cost.kind == "conv" else tp.prune_linear_in_channels
            group = dependency_graph.get_pruning_group(module, fn, [0])
            members, reason = _group_members(group, names, name, coupled=False)
            if members is None and group_coupled and reason.startswith(_COUPLING):
                if any(name in d.consumers for d in decisions):
                    continue  # already part of an earlier coupled group
                members, reason = _group_members(group, names, name, coupled=True)
            if members is not None:
                reason = self._channel_mismatch(members, cost.in_channels)
                members = None if reason else members
            if members is None:
                self.skipped[name] = reason
                continue
            producer = next(m.module for m in members if m.role == "producer")
            decisions.append(Decision(len(decisions), name, producer, cost.in_channels, cost, tuple(members)))
        model.train(was_training)
        if not decisions:
            why = "; ".join(f"{name}: {reason}" for name, reason in list(self.skipped.items())[:3])
            raise UnsupportedModelError(
                "model has no prunable layers (no conv/linear whose input channels can be removed without "
                f"breaking a residual, concatenation or padded shortcut{'; ' + why if why else ''}); "
                "nothing to search: prune a model with at least one conv feeding another conv or a linear layer")
        blocks, self.stage_blocks = find_blocks(model, [tuple(m.module for m in d.members) for d in decisions],
                                                self._block_outputs(modules))
        self.decisions = [replace(d, block=blocks.get(d.index)) for d in decisions]
        self._block_of = {b.name: b.decision for b in blocks.values()}  # block module -> the decision dropping it
        self._terms = self._build_terms(modules)
        self._norms = self._build_norms(modules)
        self._block_fixed = self._build_block_fixed(modules)
        full = [d.channels for d in self.decisions]
        self._fixed_params = self.total_params - self._modeled_params(full)

    @property
    def blocks(self) -> list[Block]:
        """The residual blocks a decision may drop (keep 0), in order."""
        return [d.block for d in self.decisions if d.block is not None]

    def _block_outputs(self, modules: dict[str, nn.Module]) -> dict[str, tuple]:
        """(width, resolution) each module's output has, from the last conv/linear inside it."""
        outputs: dict[str, tuple] = {}
        for name, cost in self.costs.items():  # forward order: the last one inside a block wins
            parts = name.split(".")
            for i in range(1, len(parts)):
                outputs[".".join(parts[:i])] = (cost.out_channels, cost.out_hw)
        return outputs

    def _channel_mismatch(self, members: list[Member], channels: int) -> str:
        """Why the members do not all share `channels` channels one-for-one ("" if they do)."""
        for m in members:
            if m.role == "consumer" and self.costs[m.module].in_channels != channels:
                return "inputs are a flattened feature map, not channels"
            if m.role == "producer" and self.costs[m.module].out_channels != channels:
                return "inputs are a flattened feature map, not channels"
        return ""

    # ---- cost model -------------------------------------------------------------------------------
    def _build_terms(self, modules: dict[str, nn.Module]) -> list[_LinearTerm]:
        in_dec: dict[str, int] = {}
        out_dec: dict[str, int] = {}
        dw: dict[str, int] = {}
        for d in self.decisions:
            for m in d.members:
                if m.role == "consumer":
                    in_dec[m.module] = d.index
                elif m.role == "producer":
                    out_dec[m.module] = d.index
                elif m.role == "depthwise":
                    dw[m.module] = d.index
        terms = []
        for name, c in self.costs.items():
            area = c.out_hw[0] * c.out_hw[1]
            k2 = c.kernel_size * _kernel_width(modules[name])
            depthwise = name in dw
            terms.append(_LinearTerm(
                name=name, macs_per_pair=area * k2, weight_per_pair=k2,
                in_channels=c.in_channels, out_channels=c.out_channels, groups=c.groups,
                has_bias=getattr(modules[name], "bias", None) is not None,
                in_decision=dw[name] if depthwise else in_dec.get(name),
                out_decision=dw[name] if depthwise else out_dec.get(name),
                depthwise=depthwise, block_decision=_enclosing(name, self._block_of)))
        return terms

    def _build_norms(self, modules: dict[str, nn.Module]) -> list[tuple[int, int, int | None]]:
        """(decision, params per channel, dropping decision) of every norm layer whose channels a decision
        removes."""
        norms = []
        for d in self.decisions:
            for m in d.members:
                if m.role == "norm":
                    per_channel = sum(p.numel() for p in modules[m.module].parameters(recurse=False))
                    norms.append((d.index, per_channel // max(1, d.channels), _enclosing(m.module, self._block_of)))
        return norms

    def _build_block_fixed(self, modules: dict[str, nn.Module]) -> dict[int, int]:
        """Per dropping decision, the parameters inside its block that no decision's cost term models (the
        norm after the branch's last layer, say): they go with the block."""
        modeled = {t.name for t in self._terms} | {m.module for d in self.decisions for m in d.members
                                                    if m.role == "norm"}
        fixed = {}
        for d in self.decisions:
            if d.block is not None:
                fixed[d.index] = sum(p.numel() for name, m in modules.items()
                                     if name.startswith(d.block.name + ".") and name not in modeled
                                     for p in m.parameters(recurse=False))
        return fixed

    def _counts(self, keep: Sequence[float]) -> np.ndarray:
        keep = np.asarray(keep, dtype=np.float64)
        if keep.shape != (len(self.decisions),):
            raise ValueError(f"expected {len(self.decisions)} keep counts, got shape {keep.shape}")
        return keep

    def _io(self, t: _LinearTerm, keep: np.ndarray) -> tuple[float, float]:
        cin = keep[t.in_decision] if t.in_decision is not None else t.in_channels
        cout = keep[t.out_decision] if t.out_decision is not None else t.out_channels
        return cin, cout

    @property
    def layers(self) -> list[_LinearTerm]:
        """Every conv/linear layer, with the decisions (if any) that set its input and output channels."""
        return self._terms

    def layer_channels(self, keep: Sequence[float]) -> list[tuple[_LinearTerm, float, float]]:
        """(layer, input channels, output channels) of every conv/linear layer left when pruned to `keep` (the
        layers of dropped blocks are gone)."""
        keep = self._counts(keep)
        return [(t, *self._io(t, keep)) for t in self._terms if not _dropped(t.block_decision, keep)]

    def kept_blocks(self, keep: Sequence[float]) -> list[Block]:
        """The droppable blocks that `keep` keeps."""
        return [b for b in self.blocks if keep[b.decision] > 0]

    def macs(self, keep: Sequence[float]) -> int:
        """MACs of the network pruned to `keep[i]` channels at decision i (one input sample)."""
        keep = self._counts(keep)
        total = 0.0
        for t in self._terms:
            if _dropped(t.block_decision, keep):
                continue
            cin, cout = self._io(t, keep)
            pairs = cout if t.depthwise else cin / t.groups * cout
            total += t.macs_per_pair * pairs
        return int(round(total))

    def _modeled_params(self, keep: Sequence[float]) -> float:
        keep = np.asarray(keep, dtype=np.float64)
        total = 0.0
        for t in self._terms:
            if _dropped(t.block_decision, keep):
                continue
            cin, cout = self._io(t, keep)
            pairs = cout if t.depthwise else cin / t.groups * cout
            total += t.weight_per_pair * pairs + (cout if t.has_bias else 0)
        for decision, per_channel, dropping in self._norms:
            if not _dropped(dropping, keep):
                total += per_channel * keep[decision]
        for decision, fixed in self._block_fixed.items():
            if _dropped(decision, keep):
                total -= fixed
        return total

    def params(self, keep: Sequence[float]) -> int:
        """Parameters of the network pruned to `keep` (all parameters, norms included)."""
        return int(round(self._fixed_params + self._modeled_params(self._counts(keep))))

    def full_keep(self) -> list[int]:
        return [d.channels for d in self.decisions]

    @property
    def total_macs(self) -> int:
        return self.macs(self.full_keep())

    def decision_macs(self) -> list[int]:
        """Original MACs that each decision's channels take part in (consumer + producer + depthwise)."""
        full = np.asarray(self.full_keep(), dtype=np.float64)
        out = []
        for d in self.decisions:
            reduced = full.copy()
            reduced[d.index] = 0
            out.append(self.macs(full) - self.macs(reduced))
        return out

    def describe(self) -> list[dict]:
        """One row per decision, for logs and reports."""
        return [{"index": d.index, "consumer": d.consumer, "producer": d.producer, "channels": d.channels,
                 "kernel": d.layer.kernel_size, "stride": d.layer.stride, "macs": m,
                 "coupled_consumers": list(d.consumers) if d.coupled else []}
                for d, m in zip(self.decisions, self.decision_macs())]


def _enclosing(module: str, block_of: dict[str, int]) -> int | None:
    """The decision that drops the block `module` lies in, if any."""
    return next((index for block, index in block_of.items() if module.startswith(block + ".")), None)


def _dropped(decision: int | None, keep: np.ndarray) -> bool:
    return decision is not None and keep[decision] == 0


def _kernel_width(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.kernel_size[1]
    return 1


def _is_unsupported(module: nn.Module) -> bool:
    """Layers whose channels torch-pruning cannot follow and that we therefore refuse to guess about."""
    if isinstance(module, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d, nn.LSTM, nn.GRU, nn.RNN)):
        return True
    return False


def _grouped(module: nn.Module | None) -> bool:
    """A grouped (not depthwise) convolution: its channels must leave every group evenly, which a single
    decision over arbitrary channels cannot promise, so they stay out of the free decisions."""
    return isinstance(module, nn.Conv2d) and module.groups not in (1, module.in_channels)


_COUPLING = "channels "  # prefix of the reasons that group_coupled may overcome


def _group_members(group, names: dict[nn.Module, str], consumer: str,
                   coupled: bool) -> tuple[list[Member] | None, str]:
    """The modules a decision touches, or None (and why) when they cannot be one decision.

    Strict (`coupled=False`): exactly the consumer, one producer and what lies between. Coupled: any
    number of consumers and producers joined by additions. Concatenations, slices and channel padding
    (the option-A shortcut, which torch-pruning mistakes for an elementwise op) are refused in both.
    A flatten is accepted in front of linear consumers; the caller checks it is channel-for-channel.
    """
    members: list[Member] = []
    producers = 0
    for dep, _ in group:
        node = dep.target
        kind = node.type
        module_name = names.get(node.module)
        handler = dep.handler
        if kind == tp.ops.OPTYPE.ELEMENTWISE:
            op = node.name.split("(")[-1].rstrip(")")
            if "Pad" in op:
                return None, f"channels are zero-padded into a shortcut ({op}); torch-pruning cannot follow it"
            if len(node.inputs) > 1 or not any(p in op for p in _PASS_THROUGH_OPS):
                if not (coupled and any(p in op for p in ("Add", "Sub", "Mul"))):
                    return None, f"channels meet other tensors ({op})"
            continue
        if kind == tp.ops.OPTYPE.RESHAPE:
            continue  # a flatten in front of a linear layer; checked by the caller
        if kind in (tp.ops.OPTYPE.CONCAT, tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.SLICE, tp.ops.OPTYPE.EXPAND,
                    tp.ops.OPTYPE.UNBIND):
            return None, f"pass through a {kind.name.lower()} op"
        if module_name is None:
            return None, f"pass through an untracked op {node.name}"
        if kind == tp.ops.OPTYPE.DEPTHWISE_CONV:
            members.append(Member(module_name, handler, "depthwise"))
        elif kind in (tp.ops.OPTYPE.BN, tp.ops.OPTYPE.GN, tp.ops.OPTYPE.LN, tp.ops.OPTYPE.IN,
                      tp.ops.OPTYPE.PRELU):
            members.append(Member(module_name, handler, "norm"))
        elif kind in (tp.ops.OPTYPE.CONV, tp.ops.OPTYPE.LINEAR):
            if _grouped(node.module):
                return None, f"channels pass a grouped convolution ({module_name}, groups={node.module.groups})"
            if handler.__name__ == "prune_in_channels":
                if module_name != consumer and not coupled:
                    return None, f"channels also feed {module_name}"
                members.append(Member(module_name, handler, "consumer"))
            else:
                producers += 1
                members.append(Member(module_name, handler, "producer"))
        else:
            return None, f"pass through {kind.name}"
    if producers == 0:
        return None, "no producing layer"
    if producers > 1 and not coupled:
        return None, "channels come from several layers"
    # the triggering consumer first, so that it describes the decision
    members.sort(key=lambda m: m.module != consumer)
    return members, ""
