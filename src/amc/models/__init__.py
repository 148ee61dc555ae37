"""The model zoo: build any supported network by name, with its input size and normalization attached.

``create("resnet56")`` builds a zoo model; ``create("tv:resnet50")`` any torchvision classifier,
``create("timm:resnet10t")`` any timm architecture (extra ``[timm]``), ``create("mypkg.nets:build")`` a user's
own network from its factory function. Every model carries ``model.amc_info`` (a `ModelInfo`), so later stages
never need to be told the input shape; `rebuild` makes the architecture a run recorded. Nothing here knows
about pruning.
"""

from __future__ import annotations

import difflib
import inspect
import json
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from amc.errors import AmcError, CheckpointError, UnknownModelError
from amc.models import factory, timm_models, torchvision_models
from amc.models.cifar_resnet import plain20, resnet20, resnet32, resnet44, resnet56
from amc.models.mobilenet import mobilenet_v1, mobilenet_v1_224, mobilenet_v2
from amc.models.small import digits_cnn
from amc.models.vgg import vgg16
from amc.safe_open import NotAFileError, open_regular

__all__ = ["ModelInfo", "check_name", "create", "rebuild", "info_from_record", "list_models", "model_info",
           "load_weights", "bundled_weights", "non_finite"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_SHAPE = (3, 32, 32)
TORCHVISION_SHAPE = (3, 224, 224)
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ModelInfo:
    """What a model expects: registry name (or factory reference), input (C, H, W), normalization of [0, 1]
    pixels, classes."""

    name: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    kwargs: dict = field(default_factory=dict)  # extra constructor kwargs, JSON-serialisable
    import_root: str | None = None  # a factory's: the directory its module was imported from, searched on rebuild


@dataclass(frozen=True)
class _ZooEntry:
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_num_classes: int = 10


# Insertion order is the listing order and breaks ties between equally close suggestions.
_ZOO: dict[str, _ZooEntry] = {
    # akamaster's pretrained CIFAR ResNets were trained with ImageNet normalization
    "resnet20": _ZooEntry(resnet20, CIFAR_SHAPE, IMAGENET_MEAN, IMAGENET_STD),
    "resnet32": _ZooEntry(resnet32, CIFAR_SHAPE, IMAGENET_MEAN, IMAGENET_STD),
    "resnet44": _ZooEntry(resnet44, CIFAR_SHAPE, IMAGENET_MEAN, IMAGENET_STD),
    "resnet56": _ZooEntry(resnet56, CIFAR_SHAPE, IMAGENET_MEAN, IMAGENET_STD),
    "plain20": _ZooEntry(plain20, CIFAR_SHAPE, IMAGENET_MEAN, IMAGENET_STD),
    "vgg16": _ZooEntry(vgg16, CIFAR_SHAPE, CIFAR_MEAN, CIFAR_STD),
    "mobilenet_v1": _ZooEntry(mobilenet_v1, CIFAR_SHAPE, CIFAR_MEAN, CIFAR_STD),
    "mobilenet_v2": _ZooEntry(mobilenet_v2, CIFAR_SHAPE, CIFAR_MEAN, CIFAR_STD),
    "mobilenet_v1_224": _ZooEntry(mobilenet_v1_224, TORCHVISION_SHAPE, IMAGENET_MEAN, IMAGENET_STD, 1000),
    "digits_cnn": _ZooEntry(digits_cnn, (1, 8, 8), (0.5,), (0.5,)),
}


def list_models() -> list[str]:
    """Zoo names, then a few common torchvision ones; any torchvision classifier works as ``tv:<name>``."""
    return list(_ZOO) + [torchvision_models.PREFIX + name for name in torchvision_models.COMMON_MODELS]


def check_name(name: str) -> None:
    """UnknownModelError, with the names it may have meant, for a name no registry knows (the zoo, torchvision's
    for ``tv:``, timm's for ``timm:``, which needs timm installed); nothing is built. A factory reference passes:
    importing it is its check."""
    if name.startswith(torchvision_models.PREFIX):
        torchvision_models.check_name(name[len(torchvision_models.PREFIX):])
    elif name.startswith(timm_models.PREFIX):
        timm_models.check_name(name[len(timm_models.PREFIX):])
    elif not factory.is_reference(name) and name not in _ZOO:
        raise UnknownModelError(_unknown_model_message(name))


def create(name: str, num_classes: int | None = None, weights: str | Path | None = None, *,
           input_shape: tuple[int, int, int] | None = None, **kwargs) -> nn.Module:
    """Build model `name` (random init, train mode), attach `model.amc_info`, and load `weights` if given.

    `name` is a zoo name, ``tv:<torchvision name>``, ``timm:<timm name>`` or a factory ``package.module:function``
    (called with `kwargs`, by default none). `num_classes` defaults to the model's own (10 for the zoo, 1000 for
    torchvision and timm); a factory's network must predict that many. `input_shape` (C, H, W) is the data's:
    it is used where the model states none (a torchvision or timm CNN with 3 input channels, a factory that
    attaches no ``amc_info``). `kwargs` go to
    the constructor (e.g. ``width_mult=0.5`` for the MobileNets) and are recorded in `ModelInfo.kwargs`.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise AmcError(f"num_classes must be a positive integer, got {num_classes!r}")
    _check_json(name, kwargs)
    if name.startswith(torchvision_models.PREFIX):
        num_classes = 1000 if num_classes is None else num_classes
        torchvision_name = name[len(torchvision_models.PREFIX):]
        try:
            model = torchvision_models.build(torchvision_name, num_classes, **kwargs)
        except TypeError as e:  # torchvision forwards kwargs to the class, which rejects unknown ones
            raise AmcError(f"torchvision model {name} rejected options {sorted(kwargs)}: {e}") from None
        # torchvision's CNNs pool adaptively, so they run at the data's resolution (CIFAR's 32 px as well as 224);
        # an input they cannot take is refused when the graph is traced
        shape = tuple(input_shape) if input_shape is not None and input_shape[0] == 3 else TORCHVISION_SHAPE
        info = ModelInfo(name, shape, IMAGENET_MEAN, IMAGENET_STD, num_classes, dict(kwargs))
    elif name.startswith(timm_models.PREFIX):
        model, info = _timm(name, 1000 if num_classes is None else num_classes, input_shape, kwargs)
    elif factory.is_reference(name):
        model, info = _factory(name, num_classes, input_shape, kwargs)
    else:
        entry = _ZOO.get(name)
        if entry is None:
            raise UnknownModelError(_unknown_model_message(name))
        num_classes = entry.default_num_classes if num_classes is None else num_classes
        _check_kwargs(name, entry.builder, kwargs)
        model = entry.builder(num_classes=num_classes, **kwargs)
        info = ModelInfo(name, entry.input_shape, entry.mean, entry.std, num_classes, dict(kwargs))
    model.amc_info = info
    if weights is not None:
        load_weights(model, weights)
    return model


def rebuild(record: Mapping, source: object = "the run") -> nn.Module:
    """The architecture a run recorded (model.json's ``info``, config.json's ``model``: a `ModelInfo` as a
    dict, read from `source`), randomly initialised, with that `ModelInfo` attached. A factory the record names is
    code: it is imported only under `factory.trusting` (``--trust-model-code``), then also from the directory it
    was first imported from."""
    info = info_from_record(record, source)
    if factory.is_reference(info.name):
        factory.check_named_in_file(info.name, source, option=None)
        # the recorded directory is searched only under the full opt-in: naming a factory trusts the module of
        # that name on this Python path, not a directory the file points to
        roots = (info.import_root,) if info.import_root and factory.trusted() else ()
        model, _ = factory.build(info.name, roots, **info.kwargs)
    else:
        model = create(info.name, num_classes=info.num_classes, **info.kwargs)
    model.amc_info = info
    return model


def info_from_record(record: Mapping, source: object = "the run") -> ModelInfo:
    """A `ModelInfo` from its dict (as written into a run); AmcError naming what is missing or not plain data.
    Values are checked as data: a name, numbers, and constructor options of numbers, strings, booleans or lists
    of them."""
    try:
        info = ModelInfo(str(record["name"]), tuple(int(v) for v in record["input_shape"]),
                         tuple(float(v) for v in record["mean"]), tuple(float(v) for v in record["std"]),
                         int(record["num_classes"]), dict(record.get("kwargs") or {}), record.get("import_root"))
    except (KeyError, TypeError, ValueError) as e:
        raise AmcError(f"the model record of {source} is incomplete or corrupt ({type(e).__name__}: {e}); re-export "
                       "the run") from None
    problem = _not_plain_options(info.kwargs)
    if problem or not (info.import_root is None or isinstance(info.import_root, str)):
        raise AmcError(f"the model record of {source} is corrupt ({problem or 'import_root is not a path'}); "
                       "re-export the run")
    return info


def _not_plain_options(kwargs: Mapping) -> str | None:
    """What makes `kwargs` other than constructor options as data (identifier keys; numbers, strings, booleans,
    null or flat lists of them), or None."""
    scalar = (bool, int, float, str, type(None))
    for key, value in kwargs.items():
        if not (isinstance(key, str) and key.isidentifier()):
            return f"option name {key!r} is not an identifier"
        if not (isinstance(value, scalar) or isinstance(value, list) and all(isinstance(v, scalar) for v in value)):
            return f"option {key} is {type(value).__name__}, not a number, string or list"
    return None


def _timm(name: str, num_classes: int, input_shape, kwargs: dict) -> tuple[nn.Module, ModelInfo]:
    channels = int(kwargs.get("in_chans", input_shape[0] if input_shape else 3))
    if channels != 3:
        kwargs["in_chans"] = channels  # recorded, so that a rebuild from the run takes the same channels
    model = timm_models.build(name[len(timm_models.PREFIX):], num_classes, **kwargs)
    shape, mean, std = timm_models.data_config(model, channels)
    # timm's CNNs pool globally, so they take the data's image size (a ViT's fixed size fails the shape check)
    shape = tuple(input_shape) if input_shape else shape
    return model, ModelInfo(name, shape, mean, std, num_classes, dict(kwargs))


def _factory(name: str, num_classes: int | None, input_shape, kwargs: dict) -> tuple[nn.Module, ModelInfo]:
    model, root = factory.build(name, **kwargs)
    stated = factory.stated_info(name, model)
    if stated is None:
        if input_shape is None:
            raise AmcError(f"model factory {name} attaches no amc_info, so its input shape and normalization are "
                           "unknown here; in the factory set model.amc_info = {'input_shape': (C, H, W), 'mean': "
                           "(...), 'std': (...), 'num_classes': N}")
        channels = int(input_shape[0])
        stated = {"input_shape": tuple(input_shape), "mean": (0.0,) * channels, "std": (1.0,) * channels,
                  "num_classes": factory.output_classes(name, model, tuple(input_shape))}
        warnings.warn(f"model factory {name} attaches no amc_info: it gets inputs of the data's shape "
                      f"{tuple(input_shape)} as [0, 1] pixels, unnormalised; set model.amc_info in the factory to "
                      "state its normalization", stacklevel=3)
    else:
        predicted = factory.output_classes(name, model, stated["input_shape"])
        if predicted != stated["num_classes"]:
            raise AmcError(f"model factory {name} states {stated['num_classes']} classes in amc_info but the "
                           f"network predicts {predicted}; make them agree")
    if num_classes is not None and stated["num_classes"] != num_classes:
        raise AmcError(f"model {name} predicts {stated['num_classes']} classes but {num_classes} are asked for (the "
                       f"data's); build the network for {num_classes} classes")
    return model, ModelInfo(name, stated["input_shape"], stated["mean"], stated["std"], stated["num_classes"],
                            dict(kwargs), root)


def model_info(model: nn.Module) -> ModelInfo:
    """The `ModelInfo` attached by `create`; AmcError for a model built some other way."""
    info = getattr(model, "amc_info", None)
    if not isinstance(info, ModelInfo):
        raise AmcError(f"{type(model).__name__} carries no amc metadata; build it with amc.models.create(name), "
                       "name its factory as package.module:function, or attach model.amc_info = "
                       "amc.models.ModelInfo(...)")
    return info


def bundled_weights(name: str) -> Path | None:
    """Path of weights shipped inside the package for zoo model `name` (``weights/<name>.pt``), else None."""
    path = WEIGHTS_DIR / f"{name}.pt"
    return path if path.is_file() else None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into `model` strictly; every failure is a one-line CheckpointError.

    Accepts a raw state dict or a dict holding it under 'state_dict' or 'model', with or without the
    'module.' prefix of DataParallel. Files are read with ``weights_only=True``: pickled code is refused.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}; check the path")
    try:
        with open_regular(path, "checkpoint", "pass the file torch.save wrote") as f:
            checkpoint = torch.load(f, map_location="cpu", weights_only=True)
    except NotAFileError:
        raise
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise CheckpointError(
                f"checkpoint {path} contains code/objects other than tensors ({refused.group(1)}) and was "
                "refused (amc only loads weights_only files); re-save it as a plain state dict") from None
        raise _unreadable(path, e) from None
    except Exception as e:  # noqa: BLE001 - zip, EOF and OS errors all mean the same thing to the user
        raise _unreadable(path, e) from None
    state = _extract_state_dict(checkpoint, path)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    model_state = model.state_dict()
    # older checkpoints (e.g. akamaster's) predate BatchNorm's step counter; it does not affect outputs
    for key, value in model_state.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value.clone()
    problems = _mismatches(state, model_state)
    if problems:
        model_name = getattr(getattr(model, "amc_info", None), "name", type(model).__name__)
        raise CheckpointError(f"checkpoint {path} does not match model {model_name}: "
                              f"{', '.join(problems)}; check --model")
    broken = non_finite(state)
    if broken:
        raise CheckpointError(f"checkpoint {path} holds non-finite values (NaN or inf) in {_listed(broken)}; every "
                              "score of such a model is meaningless: load a checkpoint saved before training diverged")
    model.load_state_dict(state, strict=True)


def non_finite(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of `state` that hold a NaN or an infinity."""
    return [name for name, value in state.items()
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]


def _listed(names: list[str]) -> str:
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def _extract_state_dict(checkpoint: object, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model"):
            nested = checkpoint.get(key)
            if isinstance(nested, Mapping):
                return nested
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return checkpoint
        keys = ", ".join(map(str, list(checkpoint)[:5]))
        raise CheckpointError(f"checkpoint {path} holds a dict without a state dict (keys: {keys}); "
                              "expected a state dict or a dict with 'state_dict' or 'model'")
    raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict; "
                          "save model.state_dict() with torch.save")


def _mismatches(state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between a checkpoint and a model, first three of each kind."""
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    reshaped = [k for k in model_state if k in state and isinstance(state[k], torch.Tensor)
                and tuple(state[k].shape) != tuple(model_state[k].shape)]
    not_tensors = [k for k in model_state if k in state and not isinstance(state[k], torch.Tensor)]
    problems = []
    if missing:
        problems.append(f"missing keys {_first_three(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first_three(unexpected)}")
    for key in reshaped[:3]:
        problems.append(f"shape mismatch {key}: ckpt {tuple(state[key].shape)} vs model "
                        f"{tuple(model_state[key].shape)}")
    if len(reshaped) > 3:
        problems.append(f"{len(reshaped) - 3} more shape mismatches")
    if not_tensors:
        problems.append(f"non-tensor values for {_first_three(not_tensors)}")
    return problems


def _first_three(keys: list[str]) -> str:
    more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
    return f"[{', '.join(keys[:3])}]{more}"


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    text = str(error).strip()
    detail = text.splitlines()[0].split(". ")[0][:120] if text else "empty or truncated"
    if detail.startswith("Weights only load failed"):
        detail = "unrecognised pickle data"  # torch's text here is advice about weights_only, not the cause
    return CheckpointError(f"cannot read checkpoint {path} ({type(error).__name__}: {detail}): "
                           "is it a PyTorch state dict saved with torch.save?")


def _unknown_model_message(name: str) -> str:
    suggestions = _closest(name, list(_ZOO))
    if name in torchvision_models.available():
        suggestions.insert(0, torchvision_models.PREFIX + name)
    if suggestions:
        return f"unknown model '{name}'; did you mean: {', '.join(suggestions)}? (see `amc models`)"
    return (f"unknown model '{name}'; choose one of {', '.join(_ZOO)}, tv:<torchvision name>, timm:<timm name> "
            "or your own package.module:function (see `amc models`)")


def _closest(name: str, candidates: list[str], limit: int = 3, cutoff: float = 0.6) -> list[str]:
    """difflib's close matches, ties kept in `candidates` order (so resnet20 before resnet44)."""
    scored = []
    for candidate in candidates:
        matcher = difflib.SequenceMatcher(None, name, candidate)
        if matcher.ratio() >= cutoff:
            scored.append((matcher.ratio(), candidate))
    scored.sort(key=lambda pair: -pair[0])  # stable: equal scores keep registry order
    return [candidate for _, candidate in scored[:limit]]


def _check_kwargs(name: str, builder: Callable[..., nn.Module], kwargs: dict) -> None:
    accepted = [p for p in inspect.signature(builder).parameters if p != "num_classes"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        options = ", ".join(accepted) if accepted else "none"
        raise AmcError(f"model {name} does not take option(s) {', '.join(unknown)}; it accepts: {options}")


def _check_json(name: str, kwargs: dict) -> None:
    # kwargs are written into model.json so a pruned model can be rebuilt in a fresh process
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        raise AmcError(f"options for model {name} must be plain numbers/strings/lists, got {kwargs!r}") from None
