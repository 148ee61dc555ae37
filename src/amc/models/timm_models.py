"""Any timm architecture, reached from the registry by the prefix ``timm:`` (optional extra ``[timm]``).

Only the architecture comes from timm: ``pretrained=False`` always, so nothing is fetched from a hub; the
weights are the user's own checkpoint (``--weights``).
"""

from __future__ import annotations

import difflib

import torch.nn as nn

from amc.errors import AmcError, UnknownModelError

PREFIX = "timm:"
DEFAULT_SHAPE = (3, 224, 224)
DEFAULT_MEAN, DEFAULT_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FILE_OPTIONS = {"checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_strict"}


def require_timm():
    """The timm module, or a one-line AmcError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise AmcError("timm:<name> models need timm: pip install 'amc-compress[timm]'") from None
    return timm


def check_name(name: str) -> None:
    """UnknownModelError, with the closest names, unless timm has architecture `name` (without the prefix); the
    install hint where timm is missing."""
    timm = require_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean: {', '.join(PREFIX + c for c in close)}?" if close else \
            "pick an architecture from timm.list_models()"
        raise UnknownModelError(f"unknown timm model '{PREFIX}{name}'; {hint}")


def build(name: str, num_classes: int, in_chans: int | None = None, **kwargs) -> nn.Module:
    """Randomly initialised timm model `name` (without the prefix) for `num_classes` classes and `in_chans`
    input channels (timm's default, 3, if None)."""
    timm = require_timm()
    if kwargs.get("pretrained"):
        raise AmcError(f"{PREFIX}{name}: amc never downloads weights; drop pretrained and pass your checkpoint "
                       "with --weights")
    kwargs.pop("pretrained", None)
    reads = sorted(set(kwargs) & FILE_OPTIONS)
    if reads:  # timm would load a file or a hub config these name: weights come from --weights alone
        raise AmcError(f"{PREFIX}{name}: option {reads[0]} makes timm read files or configurations amc does not "
                       "check; drop it and pass your checkpoint with --weights")
    check_name(name)
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except TypeError as e:  # an option the architecture does not take
        raise AmcError(f"timm model {PREFIX}{name} rejected options {sorted(kwargs)}: {e}") from None


def data_config(model: nn.Module, channels: int) -> tuple[tuple[int, int, int], tuple[float, ...], tuple[float, ...]]:
    """Input (C, H, W), mean and std from the model's timm configuration, for `channels` input channels; for
    other than 3 channels, each of timm's per-channel values is replaced by their average."""
    config = getattr(model, "pretrained_cfg", None) or {}
    size = tuple(config.get("input_size") or DEFAULT_SHAPE)
    mean = tuple(float(v) for v in config.get("mean") or DEFAULT_MEAN)
    std = tuple(float(v) for v in config.get("std") or DEFAULT_STD)
    if len(mean) != channels:
        mean = (sum(mean) / len(mean),) * channels
        std = (sum(std) / len(std),) * channels
    return (channels, int(size[1]), int(size[2])), mean, std


__all__ = ["PREFIX", "build", "check_name", "data_config", "require_timm"]
