"""Where tensors live: the device names amc takes (`--device`, `device=`), checked and resolved in one place.

`check_device_name` checks a name's syntax without loading torch (settings are validated before anything
heavy is imported); `resolve_device` turns it into a `torch.device` this machine has, or a one-line error.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from amc.errors import AmcError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DEVICE_HELP = ("Where models, images and statistics live: cpu, cuda, cuda:N, mps, or auto (a GPU when there is "
               "one, else the CPU).")
_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device_name(name) -> None:
    """Refuse a device name amc does not take, in one line; availability is `resolve_device`'s to check."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AmcError(f"unknown device {name!r}; pass --device {', '.join(DEVICES)}")


def _mps_available() -> bool:
    import torch
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """`name` as a torch device that this machine has ("auto": cuda if there is one, else mps, else the CPU), or
    a one-line error saying what to pass instead."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    check_device_name(name)
    device = torch.device(name)
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}
    if not available.get(device.type, False):
        raise AmcError(f"device {name!r} is not available on this machine; pass --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise AmcError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                       "device(s); pass --device cuda:0")
    return device


def model_device(model) -> torch.device:
    """The device `model`'s parameters live on (the CPU for a model without parameters)."""
    import torch
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


__all__ = ["DEVICES", "DEVICE_HELP", "check_device_name", "model_device", "resolve_device"]
