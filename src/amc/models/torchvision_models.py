"""Any torchvision classification model, reached from the registry by the prefix ``tv:``."""

from __future__ import annotations

import difflib

import torch.nn as nn

from amc.errors import UnknownModelError

PREFIX = "tv:"
COMMON_MODELS = ("resnet18", "resnet50", "mobilenet_v2", "vgg16_bn")


def available() -> list[str]:
    """Classification model names torchvision can build (detection/segmentation/video models excluded)."""
    import torchvision  # here, not at the top: importing torchvision.models costs ~1.5 s on every `amc` call

    return torchvision.models.list_models(module=torchvision.models)


def check_name(name: str) -> None:
    """UnknownModelError, with the closest names, unless torchvision has classification model `name` (without the
    prefix)."""
    names = available()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean: {', '.join(PREFIX + c for c in close)}? (see torchvision.models.list_models())" \
            if close else "pick a classification model from torchvision.models.list_models()"
        raise UnknownModelError(f"unknown torchvision model '{PREFIX}{name}'; {hint}")


def build(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Randomly initialised torchvision model `name` (without the prefix); pretrained weights are never fetched."""
    check_name(name)
    import torchvision

    # weights=None: downloading would fail offline and would silently change the model's meaning
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
