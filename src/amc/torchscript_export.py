"""Writing a (pruned) model as a TorchScript file that plain PyTorch runs without amc, checked against the model.

``torch.jit.load(path)`` gives back the network: no amc import, no Python class definition needed, which is
what a deployment (a C++ LibTorch program, a serving container) has.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.runs import check_not_a_run_file


def export_torchscript(model: nn.Module, path: str | Path, input_shape: Sequence[int]) -> Path:
    """Write `model`, traced in eval mode on one zero sample of `input_shape` (C, H, W), to `path`.

    Tracing records the operations one forward pass runs, so a network whose control flow depends on its
    input's values is not supported (the convolutional classifiers amc prunes have none). The file appears at
    `path` only once complete; `model`'s train/eval mode is left as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise AmcError(f"{path} is a directory; pass a file name for the TorchScript model, e.g. {path / 'model.pt'}")
    check_not_a_run_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # checked below on real inputs
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")  # see check_torchscript
            traced = torch.jit.trace(model, torch.zeros(1, *input_shape), check_trace=False)
        traced.save(str(partial))
        os.replace(partial, path)
    except AmcError:
        raise
    except Exception as e:  # noqa: BLE001 - tracing fails in many ways; each is one user-facing problem
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise AmcError(f"cannot export {type(model).__name__} to TorchScript ({type(e).__name__}: {first_line})") \
            from None
    finally:
        partial.unlink(missing_ok=True)
        model.train(was_training)
    return path


def check_torchscript(model: nn.Module, path: str | Path, inputs: torch.Tensor, *, atol: float = 1e-4,
                      rtol: float = 1e-3) -> float:
    """Max absolute difference between the outputs of the TorchScript file `path` (loaded as a deployment
    would, with ``torch.jit.load``) and `model`'s on `inputs` [N, *input_shape]; AmcError if any element
    differs by more than ``atol + rtol * |model|``."""
    if not Path(path).is_file():
        raise AmcError(f"TorchScript file not found: {path}")
    with warnings.catch_warnings():
        # torch >= 2.10 flags TorchScript as deprecated in favour of torch.export; it is still what LibTorch
        # (C++) deployments load, and the point here is to load the file exactly as they do
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            expected = model(inputs).float()
            got = loaded(inputs).float()
    finally:
        model.train(was_training)
    if got.shape != expected.shape:
        raise AmcError(f"TorchScript output shape {tuple(got.shape)} differs from PyTorch's {tuple(expected.shape)} "
                       f"for {path}")
    diff = (got - expected).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    if not bool((diff <= atol + rtol * expected.abs()).all()):
        raise AmcError(f"TorchScript output of {path} differs from PyTorch's: max abs diff {max_abs:.3g} beyond "
                       f"atol {atol:g} + rtol {rtol:g}; the export is wrong for this model")
    return max_abs


def write_checked_torchscript(model: nn.Module, path: str | Path, inputs: torch.Tensor) -> float:
    """`export_torchscript` then `check_torchscript` on `inputs`; a file that computes something else is
    removed. Returns the max absolute difference."""
    export_torchscript(model, path, tuple(inputs.shape[1:]))
    try:
        return check_torchscript(model, path, inputs)
    except AmcError:
        Path(path).unlink(missing_ok=True)
        raise


__all__ = ["check_torchscript", "export_torchscript", "write_checked_torchscript"]
