"""Saving a pruned model as architecture metadata plus tensors, and rebuilding it without unpickling code."""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn

from amc import models
from amc.errors import AmcError, CheckpointError
from amc.atomic import write_bytes_atomic, write_json_atomic
from amc.runs import META_FILE, MODEL_FILE, RunDir


def save_pruned(model: nn.Module, run_dir: str | Path, extra: dict | None = None) -> None:
    """Write `model.pt` (a plain state dict) and `model.json` (zoo name, kwargs, shapes) into `run_dir`."""
    run_dir = Path(run_dir)
    info = models.model_info(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    write_bytes_atomic(run_dir / MODEL_FILE, buffer.getvalue())
    write_json_atomic(run_dir / META_FILE, {"info": asdict(info), **(extra or {})})


def load_pruned(run_dir: str | Path) -> nn.Module:
    """Rebuild the exported pruned model of a run in eval mode (works in a fresh process)."""
    run_dir = Path(run_dir)
    meta_path, weights_path = run_dir / META_FILE, run_dir / MODEL_FILE
    if not meta_path.exists() or not weights_path.exists():
        raise AmcError(f"{run_dir} holds no exported model ({META_FILE} and {MODEL_FILE}); "
                       "point at the output directory of a finished `amc search`")
    info = RunDir(run_dir).read_model_meta()
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the same user-facing problem
        raise CheckpointError(f"cannot read {weights_path} ({type(e).__name__}); re-export the run") from None
    model = models.create(info["name"], num_classes=info["num_classes"], **info.get("kwargs", {}))
    reshape_to(model, state)
    model.load_state_dict(state)
    return model.eval()


def reshape_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Replace convs, linears and norms whose shapes differ from `state` by layers of the stored shape."""
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None or not hasattr(module, "weight") or module.weight is None:
            continue
        if tuple(weight.shape) == tuple(module.weight.shape):
            continue
        _set_submodule(model, name, _resized(module, weight.shape))


def _resized(module: nn.Module, shape: torch.Size) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        out_channels = shape[0]
        in_channels = out_channels if depthwise else shape[1] * module.groups
        return nn.Conv2d(in_channels, out_channels, module.kernel_size, module.stride, module.padding,
                         module.dilation, groups=out_channels if depthwise else module.groups,
                         bias=module.bias is not None, padding_mode=module.padding_mode)
    if isinstance(module, nn.Linear):
        return nn.Linear(shape[1], shape[0], bias=module.bias is not None)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return type(module)(shape[0], eps=module.eps, momentum=module.momentum, affine=module.affine,
                            track_running_stats=module.track_running_stats)
    raise AmcError(f"cannot rebuild layer of type {type(module).__name__} with shape {tuple(shape)}")


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
