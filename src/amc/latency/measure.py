"""Measured inference latency of any module on this machine, with PyTorch or onnxruntime.

``measure_latency(model, (3, 32, 32))`` runs one fixed random batch through the model many times at a
fixed thread count, after a warm-up, timing each run alone, and reports the median and 90th percentile
in milliseconds. It is cheap enough for a lookup table of single layers (small `repeats`, no minimum
time). `runner` and `time_calls` are its two halves, for callers that interleave several models.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.latency.backends import BACKENDS
from amc.threads import check_threads



@dataclass(frozen=True)
class LatencyResult:
    """Per-batch wall-clock time of one forward pass, in milliseconds, and what it was measured on."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    iqr_ms: float         # 75th minus 25th percentile: the spread, robust to the odd slow run
    min_ms: float
    repeats: int          # timed runs (warm-up excluded)
    backend: str
    batch: int
    threads: int
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    cpu: str
    torch_version: str
    onnxruntime_version: str | None  # None for the torch backend

    @classmethod
    def from_times(cls, times_ms: Sequence[float], *, backend: str, batch: int, threads: int,
                   input_shape: Sequence[int]) -> LatencyResult:
        t = np.asarray(times_ms, dtype=np.float64)
        if t.size == 0:
            raise ValueError("no timed runs")
        p25, p50, p75, p90 = np.percentile(t, [25, 50, 75, 90])
        ort_version = BACKENDS[backend].version() if backend == "onnxruntime" else None
        return cls(median_ms=float(p50), p90_ms=float(p90), mean_ms=float(t.mean()), std_ms=float(t.std()),
                   iqr_ms=float(p75 - p25), min_ms=float(t.min()), repeats=int(t.size), backend=backend,
                   batch=batch, threads=threads, input_shape=tuple(int(s) for s in input_shape), cpu=cpu_name(),
                   torch_version=torch.__version__, onnxruntime_version=ort_version)

    def to_dict(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape)}


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU model, e.g. "AMD EPYC 7763 64-Core Processor" (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def measure_latency(model: nn.Module, input_shape: Sequence[int], *, backend: str = "torch", batch: int = 1,
                    threads: int = 1, warmup: int = 5, repeats: int = 50, min_seconds: float = 0.0) -> LatencyResult:
    """Time forward passes of `model` on a random float32 batch [batch, *input_shape].

    `warmup` untimed runs, then at least `repeats` timed runs, continued until `min_seconds` of timed
    runs have passed. torch runs in eval mode under `torch.inference_mode` with `threads` intra-op
    threads; onnxruntime runs the model exported to a temporary ONNX file, with `threads` intra-op and
    one inter-op thread. torch's thread count and the model's train/eval mode are restored afterwards.
    """
    _check_timing(warmup, repeats, min_seconds)
    with runner(model, input_shape, backend=backend, batch=batch, threads=threads) as run:
        times_ms = time_calls(run, warmup=warmup, repeats=repeats, min_seconds=min_seconds)
    return LatencyResult.from_times(times_ms, backend=backend, batch=batch, threads=threads, input_shape=input_shape)


def check_settings(backend: str, batch: int, threads: int) -> None:
    """AmcError for a setting no measurement can use, before anything is built."""
    if backend not in BACKENDS:
        raise AmcError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if batch < 1 or threads < 1:
        raise AmcError(f"batch and threads must be at least 1, got batch {batch}, threads {threads}")
    check_threads(threads)


@contextmanager
def runner(model: nn.Module, input_shape: Sequence[int], *, backend: str = "torch", batch: int = 1,
           threads: int = 1) -> Iterator[Callable[[], object]]:
    """A zero-argument callable running one forward pass of `model` on a fixed random batch, ready for
    timing: the backend set up, the threads fixed. Several runners may be open at once (same threads)."""
    check_settings(backend, batch, threads)
    x = _input_batch(batch, input_shape)
    previous_threads = torch.get_num_threads()
    was_training = model.training
    try:
        with BACKENDS[backend].open(model.eval(), x, threads) as run:  # the catalogue: amc.latency.backends
            yield run
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)


def _input_batch(batch: int, input_shape: Sequence[int]) -> torch.Tensor:
    """The fixed random batch timed. One larger than the machine's memory is refused before torch tries (where
    the allocation would not fail, filling it would wake the OOM killer), or when torch cannot allocate it."""
    shape = tuple(int(s) for s in input_shape)
    size = batch * math.prod(shape) * 4
    fix = "use a smaller --batch" if batch > 1 else "the model states an input shape too large for this machine"
    refused = AmcError(f"timing needs an input batch of {batch} x {shape} floats, {size / 2**30:,.1f} GiB: more "
                       f"memory than this machine has; {fix}")
    if size > _physical_memory():
        raise refused
    try:
        return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    except RuntimeError as e:
        if "alloc" in str(e):
            raise refused from None
        raise


def _physical_memory() -> float:
    """Bytes of RAM in this machine (infinite where the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return math.inf


def _check_timing(warmup: int, repeats: int, min_seconds: float) -> None:
    if warmup < 0 or repeats < 1 or min_seconds < 0:
        raise AmcError(f"need warmup >= 0, repeats >= 1 and min_seconds >= 0, got warmup {warmup}, "
                       f"repeats {repeats}, min_seconds {min_seconds}")


def time_calls(run: Callable[[], object], *, warmup: int = 5, repeats: int = 50,
               min_seconds: float = 0.0) -> np.ndarray:
    """Milliseconds of each of at least `repeats` calls of `run` (after `warmup` untimed calls), timed one
    by one with `time.perf_counter`, continued until `min_seconds` of timed calls; garbage collection
    is paused meanwhile, as `timeit` does."""
    _check_timing(warmup, repeats, min_seconds)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(warmup):
            run()
        times = []
        spent = 0.0
        while len(times) < repeats or spent < min_seconds:
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            spent += elapsed
    finally:
        if gc_was_enabled:
            gc.enable()
    return np.asarray(times) * 1e3


__all__ = ["BACKENDS", "LatencyResult", "check_settings", "cpu_name", "measure_latency", "runner", "time_calls"]
