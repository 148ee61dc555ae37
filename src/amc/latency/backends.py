"""The runtimes a latency is measured on: one catalogue, `BACKENDS`, read by `amc.latency.runner`, the settings'
validation, the CLI's help and the checks before a search. A runtime is one `Backend` and one line:

    BACKENDS["mine"] = Backend("mine", open=my_timed_forward, require=check_my_runtime_is_installed)

`open(model, x, threads)` is a context manager yielding a zero-argument callable that runs one forward pass of
`model` (in eval mode) on the fixed batch `x` with `threads` intra-op threads; `amc.latency.runner` times it and
puts torch's thread count back afterwards.
"""

from __future__ import annotations

import functools
import tempfile
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Backend:
    """One runtime: how to open a timed forward pass, what must be installed for it, and its version."""

    name: str
    open: Callable[[nn.Module, torch.Tensor, int], AbstractContextManager[Callable[[], object]]]
    require: Callable[[], None] = lambda: None  # a one-line AmcError naming the extra that is missing
    version: Callable[[], str | None] = lambda: None  # recorded beside each measurement (None: torch's own)


@contextmanager
def _torch(model: nn.Module, x: torch.Tensor, threads: int) -> Iterator[Callable[[], object]]:
    torch.set_num_threads(threads)
    with torch.inference_mode():
        yield functools.partial(model, x)


@contextmanager
def _onnxruntime(model: nn.Module, x: torch.Tensor, threads: int) -> Iterator[Callable[[], object]]:
    from amc.onnx_export import export_onnx, ort_session
    with tempfile.TemporaryDirectory(prefix="amc-latency-") as folder:
        # the same graph `amc export` writes (symbolic batch), so the time is that of the file users get
        path = export_onnx(model, Path(folder) / "model.onnx", tuple(x.shape[1:]), dynamic_batch=True)
        session = ort_session(path, threads)  # reads the whole file: the folder can go
    feed = {session.get_inputs()[0].name: x.numpy()}
    yield functools.partial(session.run, None, feed)


def _require_onnx() -> None:
    from amc.onnx_export import require_onnx
    require_onnx()


def _onnxruntime_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", _torch),
    "onnxruntime": Backend("onnxruntime", _onnxruntime, _require_onnx, _onnxruntime_version),
}

__all__ = ["BACKENDS", "Backend"]
