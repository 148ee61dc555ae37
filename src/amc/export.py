"""Saving a pruned model as architecture metadata plus tensors, and rebuilding it without unpickling code."""

from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn

from amc import models
from amc.blocks import drop, dropped_names
from amc.errors import AmcError, CheckpointError, UnknownModelError
from amc.models.factory import trusting
from amc.atomic import write_bytes_atomic, write_json_atomic
from amc.runs import CONFIG_FILE, META_FILE, MODEL_FILE, RunDir


def save_pruned(model: nn.Module, run_dir: str | Path, extra: dict | None = None) -> None:
    """Write `model.pt` (a plain state dict) and `model.json` (zoo name, kwargs, shapes, dropped blocks) into
    `run_dir`."""
    run_dir = Path(run_dir)
    info = models.model_info(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    write_bytes_atomic(run_dir / MODEL_FILE, buffer.getvalue())
    dropped = dropped_names(model)
    write_json_atomic(run_dir / META_FILE, {"info": asdict(info), **({"dropped_blocks": dropped} if dropped else {}),
                                            **(extra or {})})


def load_pruned(run_dir: str | Path, model: nn.Module | None = None, *, trust_model_code: bool = False) -> nn.Module:
    """Rebuild the exported pruned model of a run in eval mode (works in a fresh process).

    The architecture is rebuilt from the run's record: a zoo name, ``tv:``/``timm:`` name or factory reference
    (imported again). For a network amc cannot name (one built in your own code), pass `model`, an instance of
    its original, unpruned definition: its layers are narrowed in place to the saved widths, the blocks the
    search dropped replaced by identities, the saved weights loaded, and it is returned with the run's
    `ModelInfo` attached. A factory reference in the record is code that came with the run: it is imported only
    with `trust_model_code=True` (``--trust-model-code``).
    """
    run_dir = Path(run_dir)
    meta_path, weights_path = run_dir / META_FILE, run_dir / MODEL_FILE
    if not meta_path.exists() or not weights_path.exists():
        if (run_dir / CONFIG_FILE).exists():  # a run still going, stopped, or killed before its export
            raise AmcError(f"{run_dir} holds no exported model yet: it is {RunDir(run_dir).status().text}")
        raise AmcError(f"{run_dir} holds no exported model ({META_FILE} and {MODEL_FILE}); "
                       "point at the output directory of a finished `amc search`")
    if (run_dir / CONFIG_FILE).exists():  # a run's export (not a model saved on its own): whole, or refused
        RunDir(run_dir).check_export_whole()
    record = RunDir(run_dir).read_model_meta()
    dropped = RunDir(run_dir).read_dropped_blocks()
    info = models.info_from_record(record, meta_path)
    state = RunDir(run_dir).read_tensors(MODEL_FILE, "re-export the run")
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
        raise CheckpointError(f"{weights_path} does not fit this network ({detail}); pass model= an instance of the "
                              f"definition the run searched ({info.name})") from None
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
