"""Scoring policies that differ from one base policy in a few layers, running only the layers the change reaches.

The knapsack scores every option of every decision with the others at a base allocation. Upstream of a
candidate's first changed layer its network is the base's, and so are that part's outputs, recalibration
included: BatchNorm re-estimated in train mode sees the same batches through the same layers. So the base's
outputs where the change begins are computed once and cached, and each candidate runs only from there.

The network is traced with torch.fx. A node is changed if its module's weights differ from the base's (shape
or values), its constant arguments differ, or any of its inputs is changed; the unchanged nodes that changed
ones read are the cut, cached per batch of the held-out prefix (eval mode, the scoring precision) and of the
recalibration images (train mode). The changed part's BatchNorm is recalibrated as `recalibrate_batchnorm` does
it, then scored on the cached batches: the same kernels on the same inputs as the full path, so the same score
(tests/test_downstream.py checks it). A model fx cannot trace, a candidate whose graph differs from the base's
(a dropped block), a cut too big to cache, or any candidate of a network scored in under `MIN_SECONDS` is
scored in full.
"""

from __future__ import annotations

import copy
import time
from operator import attrgetter
from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import map_arg
from torch.nn.modules.batchnorm import _BatchNorm

from amc.devices import model_device
from amc.evaluate import recalibrate_batchnorm

CACHE_BYTES = 1 << 30  # the most a cut's cached outputs may take (held-out prefix and recalibration batches)
CUTS_KEPT = 2          # cuts cached at a time: a decision's options share one
MIN_SECONDS = 0.1      # a base built and scored faster than this is scored in full: tracing a candidate and
                       # running its part costs 10-30 ms (the digits CNN: 6.4 s a knapsack cut, 5.2 s in full)
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")  # re-estimated, not compared


def _trace(model: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow and the like: such a model is scored in full
        return None


def _signature(node: fx.Node) -> tuple:
    return (node.op, str(node.target), repr(map_arg(node.args, lambda n: n.name)),
            repr(map_arg(node.kwargs, lambda n: n.name)))


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and torch.equal(a, b))
    if type(a) is not type(b) or a.extra_repr() != b.extra_repr():
        return False
    sa, sb = a.state_dict(), b.state_dict()
    if isinstance(a, _BatchNorm):
        sa = {k: v for k, v in sa.items() if k not in _STATISTICS}
        sb = {k: v for k, v in sb.items() if k not in _STATISTICS}
    return sa.keys() == sb.keys() and all(_same_state(sa[k], sb[k]) for k in sa)


def _nbytes(values: Any) -> int:
    if isinstance(values, torch.Tensor):
        return values.numel() * values.element_size()
    if isinstance(values, (tuple, list)):
        return sum(_nbytes(v) for v in values)
    return 0


class _Base:
    """A base policy's network (BatchNorm recalibrated as the scorer does), traced unless `cut` is False, with a
    train-mode twin for the recalibration batches' outputs (running them must not move the base's statistics)."""

    def __init__(self, keep: tuple[int, ...], network: nn.Module, cut: bool):
        self.keep, self.network = keep, network
        self.graph = _trace(network) if cut else None
        self.twin = copy.deepcopy(self.graph) if self.graph is not None else None
        self.cuts: OrderedDict[tuple[str, ...], tuple[list, list] | None] = OrderedDict()

    def outputs_at(self, cut: tuple[str, ...], evaluator, recalibration: list) -> tuple[list, list] | None:
        """This network's outputs at `cut`: per batch of `evaluator` (eval mode, its precision) with its labels,
        and per `recalibration` batch (train mode); None where they would take more than CACHE_BYTES. The last
        CUTS_KEPT cuts are kept."""
        assert self.graph is not None and self.twin is not None
        if cut in self.cuts:
            self.cuts.move_to_end(cut)
            return self.cuts[cut]
        upstream = _upstream(self.graph, cut).eval().to(memory_format=torch.channels_last)
        evaluated: list = []
        size = 0
        for x, y in evaluator.inputs(model_device(self.network)):
            with torch.no_grad(), evaluator.autocast(x.device):
                values = upstream(x)
            evaluated.append((values, y))
            size += _nbytes(values)
            if size * (1 + len(recalibration) / max(1, len(evaluated))) > CACHE_BYTES:
                self.cuts[cut] = None
                return None
        twin = _upstream(self.twin, cut).train().to(memory_format=torch.channels_last)
        with torch.no_grad():
            calibrated = [tuple(twin(_channels_last(x))) for x in recalibration]
        self.cuts[cut] = (evaluated, calibrated)
        while len(self.cuts) > CUTS_KEPT:
            self.cuts.popitem(last=False)
        return self.cuts[cut]


class DownstreamProbe:
    """`probe(keep)`: the accuracy `scorer(keep)` gives (`scorer` an `amc.scoring.Scorer` that does not race:
    every candidate scored on its whole evaluator), faster where `keep` differs from the base policy (`rebase`)
    in a few late layers."""

    def __init__(self, scorer, min_seconds: float | None = None):
        if scorer.racing:
            raise ValueError("a DownstreamProbe scores every image: pass a scorer without racing")
        self.scorer = scorer
        self.evaluator = scorer.evaluator
        self._base: _Base | None = None
        self._scores: dict[tuple[int, ...], float] = {}
        self.min_seconds = MIN_SECONDS if min_seconds is None else min_seconds
        self._worth: bool | None = None  # whether cutting pays on this network (a base scored in >= min_seconds)
        self.partial = 0  # candidates scored from a cut (the rest in full): what tests and benchmarks read

    def rebase(self, keep: Sequence[int]) -> None:
        """Candidates from now on are cut against the network of `keep`."""
        key = tuple(int(k) for k in keep)
        if self._base is not None and self._base.keep == key:
            return
        t0 = time.perf_counter()
        network = self.scorer.build(key)
        if key not in self._scores or self._worth is None:
            self._scores[key] = self.evaluator.top1(network)  # as `scorer(key)` scores it
        if self._worth is None:  # decided on the first base (the whole network, for the knapsack)
            self._worth = time.perf_counter() - t0 >= self.min_seconds
        self._base = _Base(key, network, cut=self._worth)

    def __call__(self, keep: Sequence[int]) -> float:
        key = tuple(int(k) for k in keep)
        if key in self._scores:
            return self._scores[key]
        accuracy = None
        if self._base is not None and self._base.graph is not None:
            try:
                accuracy = self._partial(key)
            except Exception:  # whatever fx cannot run from a cut is scored in full, as it always was
                accuracy = None
        if accuracy is None:
            accuracy = self.scorer(key).accuracy
        else:
            self.partial += 1
        self._scores[key] = accuracy
        return accuracy

    def _partial(self, key: tuple[int, ...]) -> float | None:
        base = self._base
        assert base is not None and base.graph is not None
        if key == base.keep:
            return None
        pruned, _ = self.scorer.pruner.prune(list(key))
        traced = _trace(pruned)
        if traced is None:
            return None
        nodes, base_nodes = list(traced.graph.nodes), list(base.graph.graph.nodes)
        if [n.name for n in nodes] != [n.name for n in base_nodes]:
            return None  # another graph (a block dropped or restored): no common part to cut at
        changed: set[str] = set()
        reads_input: set[str] = set()
        for node, was in zip(nodes, base_nodes):
            inputs = [n.name for n in node.all_input_nodes]
            if node.op == "placeholder" or any(n in reads_input for n in inputs):
                reads_input.add(node.name)
            if _signature(node) != _signature(was) or any(n in changed for n in inputs):
                changed.add(node.name)
            elif node.op == "call_module" and not _same_state(traced.get_submodule(node.target),
                                                              base.graph.get_submodule(was.target)):
                changed.add(node.name)
            elif node.op == "get_attr" and not _same_state(attrgetter(node.target)(traced),
                                                           attrgetter(was.target)(base.graph)):
                changed.add(node.name)
        if nodes[-1].name not in changed:
            return None  # nothing changed that reaches the output
        # the part to run: changed nodes and the constants they read; the cut: unchanged input-derived nodes read
        run = set(changed)
        for node in reversed(nodes):
            if node.name in run:
                run.update(n.name for n in node.all_input_nodes if n.name not in reads_input)
        cut = tuple(n.name for n in nodes if n.name not in run
                    and any(u.name in run for u in n.users))
        cached = base.outputs_at(cut, self.evaluator, self.scorer.recalibration)
        if cached is None:
            return None
        return self._score(traced, nodes, run, cut, cached)

    def _score(self, traced: fx.GraphModule, nodes: list[fx.Node], run: set[str], cut: tuple[str, ...],
               cached: tuple[list, list]) -> float:
        graph = fx.Graph()
        env: dict[str, fx.Node] = {name: graph.placeholder(name) for name in cut}
        for node in nodes:
            if node.op == "output":
                graph.output(map_arg(node.args[0], lambda n: env[n.name]))
            elif node.name in run:
                env[node.name] = graph.node_copy(node, lambda n: env[n.name])
        downstream = fx.GraphModule(traced, graph).to(memory_format=torch.channels_last)
        evaluated, calibrated = cached
        if self.scorer.recalibration:
            recalibrate_batchnorm(downstream, calibrated)  # the changed part's BatchNorm; the rest is the base's
        downstream.eval()

        def outputs():
            for values, y in evaluated:
                with self.evaluator.autocast(y.device):
                    yield downstream(*values), y

        with torch.no_grad():
            return self.evaluator.accuracy_of(outputs())[1]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _upstream(traced: fx.GraphModule, cut: tuple[str, ...]) -> fx.GraphModule:
    """The base's layers up to `cut`, returning its values as a tuple."""
    nodes = list(traced.graph.nodes)
    needed = set(cut)
    for node in reversed(nodes):
        if node.name in needed:
            needed.update(n.name for n in node.all_input_nodes)
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for node in nodes:
        if node.name in needed or node.op == "placeholder":
            env[node.name] = graph.node_copy(node, lambda n: env[n.name])
    graph.output(tuple(env[name] for name in cut))
    return fx.GraphModule(traced, graph)


__all__ = ["CACHE_BYTES", "DownstreamProbe"]
