"""Writing a (pruned) model as an ONNX file and checking that onnxruntime computes what PyTorch does.

onnx and onnxruntime are an optional extra (``pip install 'amc-compress[onnx]'``), imported only here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from amc.errors import AmcError
from amc.run_names import check_not_a_run_file

INPUT_NAME = "input"
OUTPUT_NAME = "output"


def require_onnx():
    """(onnx, onnxruntime), or a one-line AmcError saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise AmcError(f"ONNX export and the onnxruntime backend need {e.name or 'onnx and onnxruntime'}: "
                       "pip install 'amc-compress[onnx]'") from None
    return onnx, onnxruntime


def export_onnx(model: nn.Module, path: str | Path, input_shape: Sequence[int], *, opset: int = 17,
                dynamic_batch: bool = True) -> Path:
    """Write `model` (traced in eval mode on one sample of `input_shape`, e.g. (C, H, W)) to `path`.

    The graph has one input named "input" of shape [batch, *input_shape] and one output "output"; the
    batch dimension is symbolic if `dynamic_batch`, else fixed at 1. The file is checked with
    `onnx.checker` and appears at `path` only once complete. `model`'s train/eval mode is left as it was.
    """
    onnx, _ = require_onnx()
    path = Path(path)
    if path.is_dir():
        raise AmcError(f"{path} is a directory; pass a file name for the ONNX model, e.g. {path / 'model.onnx'}")
    check_not_a_run_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.zeros(1, *input_shape)
    partial = path.with_name(path.name + ".partial")
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # We choose the TorchScript exporter on purpose (see below); its deprecation notices are noise.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding")  # strided slices stay ops: harmless
            # dynamo=False: torch's newer torch.export-based exporter needs the onnxscript package, which is
            # not among our dependencies (nor those of the [onnx] extra), while the TorchScript exporter
            # ships with torch and handles every plain conv/BN/linear network of the zoo. Torch <= 2.14 (our
            # pinned range) still has it; switch to dynamo=True (and add onnxscript) when it is removed.
            torch.onnx.export(model, (sample,), str(partial), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
                              if dynamic_batch else None)
        onnx.checker.check_model(str(partial))
        os.replace(partial, path)
    except AmcError:
        raise
    except Exception as e:  # noqa: BLE001 - the exporter fails in many ways; each is one user-facing problem
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise AmcError(f"cannot export {type(model).__name__} to ONNX ({type(e).__name__}: {first_line})") from None
    finally:
        partial.unlink(missing_ok=True)
        model.train(was_training)
    return path


def ort_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with `threads` intra-op threads, one inter-op thread, full graph
    optimisation; sequential execution so the thread count means the same as torch's."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_onnx(model: nn.Module, path: str | Path, inputs: torch.Tensor, *, atol: float = 1e-4,
               rtol: float = 1e-3) -> float:
    """Max absolute difference between onnxruntime's outputs for the ONNX file `path` and `model`'s on
    `inputs` [N, *input_shape]; AmcError if any element differs by more than ``atol + rtol * |torch|``.

    A file exported with a fixed batch is run in chunks of that batch.
    """
    if not Path(path).is_file():
        raise AmcError(f"ONNX file not found: {path}")
    session = ort_session(path)
    fixed = session.get_inputs()[0].shape[0]
    chunk = fixed if isinstance(fixed, int) and fixed > 0 else len(inputs)
    if len(inputs) % chunk:
        raise AmcError(f"{path} takes batches of {chunk}; pass a multiple of {chunk} inputs")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            expected = model(inputs).float().numpy()
    finally:
        model.train(was_training)
    array = inputs.detach().float().contiguous().numpy()
    got = np.concatenate([session.run(None, {session.get_inputs()[0].name: array[i:i + chunk]})[0]
                          for i in range(0, len(array), chunk)])
    if got.shape != expected.shape:
        raise AmcError(f"onnxruntime output shape {got.shape} differs from PyTorch's {expected.shape} for {path}")
    diff = np.abs(got - expected)
    max_abs = float(diff.max()) if diff.size else 0.0
    if not np.all(diff <= atol + rtol * np.abs(expected)):
        raise AmcError(f"onnxruntime output of {path} differs from PyTorch's: max abs diff {max_abs:.3g} beyond "
                       f"atol {atol:g} + rtol {rtol:g}; the export is wrong for this model")
    return max_abs


__all__ = ["check_onnx", "export_onnx", "ort_session", "require_onnx"]
