"""Saving a pruned model as architecture metadata plus tensors, and rebuilding it without unpickling code. The
files are the run's (`amc.runs.RunDir.write_model`, `read_model`); this module turns a network into them and
back."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from amc import models
from amc.blocks import drop, dropped_names
from amc.errors import AmcError, CheckpointError, UnknownModelError
from amc.models.factory import trusting
from amc.runs import RunDir


def save_pruned(model: nn.Module, run_dir: str | Path, extra: dict | None = None) -> None:
    """Write `model.pt` (a plain state dict) and `model.json` (zoo name, kwargs, shapes, dropped blocks) into
    `run_dir`."""
    state = model.state_dict()
    for key, value in state.items():  # saved from any device, loadable on any machine
        state[key] = value.cpu()
    RunDir(run_dir).write_model(state, models.model_info(model), dropped_names(model), extra)


def load_pruned(run_dir: str | Path, model: nn.Module | None = None, *, trust_model_code: bool = False) -> nn.Module:
    """Rebuild the exported pruned model of a run in eval mode (works in a fresh process).

    The architecture is rebuilt from the run's record: a zoo name, ``tv:``/``timm:`` name or factory reference
    (imported again). For a network amc cannot name (one built in your own code), pass `model`, an instance of
    its original, unpruned definition: its layers are narrowed in place to the saved widths, the blocks the
    search dropped replaced by identities, the saved weights loaded, and it is returned with the run's
    `ModelInfo` attached. A factory reference in the record is code that came with the run: it is imported only
    with `trust_model_code=True` (``--trust-model-code``).
    """
    saved = RunDir(run_dir).read_model()  # refused where a run's export is missing or unfinished
    meta_path, record, dropped, state = saved.meta_file, saved.record, saved.dropped_blocks, saved.state_dict
    info = models.info_from_record(record, meta_path)
    if model is None:
        with trusting(trust_model_code):
            model = _rebuilt(meta_path, record, info.name)
    elif not isinstance(model, nn.Module):
        raise AmcError(f"model= takes the network's original definition as a torch.nn.Module, got a "
                       f"{type(model).__name__}")
    try:
        drop(model, dropped)
    except AttributeError:
        raise CheckpointError(f"{meta_path} drops blocks {dropped} this network does not have; pass "
                              f"model= an instance of the definition the run searched ({info.name})") from None
    reshape_to(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:200]
        raise CheckpointError(f"{saved.weights_file} does not fit this network ({detail}); pass model= an instance "
                              f"of the definition the run searched ({info.name})") from None
    model.amc_info = info
    return model.eval()


def _rebuilt(meta_path: Path, record: dict, name: str) -> nn.Module:
    try:
        return models.rebuild(record, meta_path)
    except UnknownModelError:
        raise AmcError(f"the model of {meta_path.parent} ({name!r}) is neither a zoo name nor a factory reference, so amc "
                       f"cannot rebuild it; pass its original definition, amc.load_pruned(run, model=YourNet()), or "
                       "search it as --model package.module:function") from None


def reshape_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Narrow the convs, linears and norms whose shapes differ from `state` to the stored shape, in place.

    The layer objects stay (their class, padding mode, a fused activation...): only their sizes and tensors
    change, so a subclass from a user's or timm's code keeps what it adds. Values are left to load_state_dict.
    """
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None or not hasattr(module, "weight") or module.weight is None:
            continue
        if tuple(weight.shape) == tuple(module.weight.shape):
            continue
        _resize(module, weight.shape)


def _resize(module: nn.Module, shape: torch.Size) -> None:
    out_features = shape[0]
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        module.in_channels = out_features if depthwise else shape[1] * module.groups
        module.out_channels = out_features
        if depthwise:
            module.groups = out_features
    elif isinstance(module, nn.Linear):
        module.in_features, module.out_features = shape[1], out_features
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = out_features
        for buffer in ("running_mean", "running_var"):
            if getattr(module, buffer, None) is not None:
                setattr(module, buffer, torch.empty(out_features))
    else:
        raise AmcError(f"cannot rebuild layer of type {type(module).__name__} with shape {tuple(shape)}")
    module.weight = nn.Parameter(torch.empty(shape))
    if getattr(module, "bias", None) is not None:
        module.bias = nn.Parameter(torch.empty(out_features))
