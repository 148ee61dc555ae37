"""A user's own network, named by a factory reference ``package.module:function``.

The function is called with no arguments (or the model's recorded options) and returns an ``nn.Module``.
What the network expects (input shape, normalization, classes) comes from the ``amc_info`` the factory
attaches, a `ModelInfo` or a plain dict so the user's module need not import amc, else from the data.
Nothing here knows about pruning.

A factory is code, so a reference read from a file (a run's config.json or model.json, a policy.json, a
``--config`` file) is imported only where the person running amc opted in (`trusting`, behind
``--trust-model-code`` and ``trust_model_code=True``); a reference typed on the command line or passed in Python
is that person's own choice and needs no opt-in. Zoo, ``tv:`` and ``timm:`` names are data.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
import torch.nn as nn

from amc.errors import AmcError

# a dotted module path, a colon, a dotted attribute path: "tests.mynet:build", "mypkg.nets:Factory.small"
_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
INFO_KEYS = ("input_shape", "mean", "std", "num_classes")
TRUST_OPTION = "--trust-model-code"
# what the current call may import of the factories that files name: every one (an explicit opt-in), or those
# the person running amc named themselves (set by `trusting`, never by a file)
_TRUSTED: ContextVar[tuple[bool, frozenset]] = ContextVar("amc_trust_model_code", default=(False, frozenset()))


@contextmanager
def trusting(everything: bool = False, names: tuple = ()) -> Iterator[None]:
    """Within the block, a factory reference read from a file may be imported and called: any one if
    `everything`, else those in `names` (references the user typed or passed). What an outer block trusts holds."""
    outer_all, outer_names = _TRUSTED.get()
    token = _TRUSTED.set((outer_all or bool(everything), outer_names | {n for n in names if isinstance(n, str)}))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def trusted(name: str | None = None) -> bool:
    """Whether factory `name` (None: any factory, with its recorded import directory) may be imported here."""
    everything, names = _TRUSTED.get()
    return everything or name is not None and name in names


def check_named_in_file(name: object, source: object, option: str | None = "--model") -> None:
    """Refuse a model factory that the file `source` names, unless the caller opted in (`trusting`): importing it
    would run code that came with the file. Zoo, ``tv:`` and ``timm:`` names pass (they are data). `option` is the
    command-line option by which the user may name it instead (None: only the full opt-in applies)."""
    if isinstance(name, str) and is_reference(name) and not trusted(name):
        ways = f"pass {option} {name} or {TRUST_OPTION}" if option else f"pass {TRUST_OPTION}"
        raise AmcError(f"{source} names the model factory {name}, which is Python code that amc runs only when you "
                       f"ask: if you trust it, {ways} (from Python: trust_model_code=True)")


def is_reference(name: str) -> bool:
    """True for ``module:attribute`` names (not the registry's own ``tv:`` and ``timm:`` prefixes)."""
    return ":" in name and not name.startswith(("tv:", "timm:"))


def build(reference: str, search_dirs: tuple[str, ...] = (), **kwargs) -> tuple[nn.Module, str | None]:
    """Import the factory of `reference`, call it with `kwargs`, and return the network and the directory its
    module was imported from (recorded so a run can rebuild it from another working directory).

    The module is looked up on sys.path, then the current directory, then `search_dirs`. Every failure is a
    one-line AmcError naming the reference, the problem and the fix.
    """
    if not _REFERENCE.match(reference):
        raise AmcError(f"model reference {reference!r} is not of the form package.module:function; name the "
                       "Python module and the function that returns the network, e.g. mypkg.nets:build")
    module_name, _, attribute = reference.partition(":")
    module = _import(module_name, (os.getcwd(), *search_dirs), reference)
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise AmcError(f"model factory {reference}: module {module_name} has no attribute {part!r}; check the "
                           "name after the colon")
        factory = getattr(factory, part)
    if not callable(factory):
        raise AmcError(f"model factory {reference} is a {type(factory).__name__}, not a function; point at a "
                       "function that returns the network")
    try:
        model = factory(**kwargs)
    except SystemExit as e:  # the user's code may end the process; amc says where instead of exiting mutely
        raise AmcError(f"model factory {reference} called sys.exit({e.code!r}) instead of returning the network; "
                       "return the network, or raise an exception that says what is wrong") from None
    except Exception as e:  # noqa: BLE001 - the user's code can fail any way; one line says where
        detail = (str(e).strip().splitlines() or [""])[0][:160]
        raise AmcError(f"model factory {reference} raised {type(e).__name__}: {detail}; fix the factory (it is "
                       "called with no arguments)") from None
    if not isinstance(model, nn.Module):
        raise AmcError(f"model factory {reference} returned a {type(model).__name__}, not a torch.nn.Module; "
                       "return the network itself")
    return model, _import_root(module, module_name)


def stated_info(reference: str, model: nn.Module) -> dict | None:
    """The `amc_info` the factory attached, as a dict of INFO_KEYS (None if it attached none)."""
    info = getattr(model, "amc_info", None)
    if info is None:
        return None
    if not isinstance(info, Mapping):
        info = {key: getattr(info, key, None) for key in INFO_KEYS}
    missing = [key for key in INFO_KEYS if info.get(key) is None]
    if missing:
        raise AmcError(f"model factory {reference} attached amc_info without {', '.join(missing)}; give all of "
                       f"{', '.join(INFO_KEYS)}")
    try:
        shape, mean, std = (tuple(info[k]) for k in ("input_shape", "mean", "std"))
        stated = {"input_shape": tuple(int(v) for v in shape), "mean": tuple(float(v) for v in mean),
                  "std": tuple(float(v) for v in std), "num_classes": int(info["num_classes"])}
    except (TypeError, ValueError):
        raise AmcError(f"model factory {reference} attached amc_info of the wrong types; input_shape is (C, H, W), "
                       "mean and std one number per channel, num_classes an integer") from None
    if len(stated["input_shape"]) != 3 or len(stated["mean"]) != len(stated["std"]):
        raise AmcError(f"model factory {reference} attached amc_info with input_shape {stated['input_shape']}, mean "
                       f"{stated['mean']}, std {stated['std']}; input_shape is (C, H, W), mean and std one number "
                       "per channel")
    return stated


def output_classes(reference: str, model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Classes the network predicts, from one forward pass on zeros of `input_shape` (C, H, W); a network that
    rejects that shape is reported now, not minutes into a search."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, *input_shape))
    except Exception as e:  # noqa: BLE001
        detail = (str(e).strip().splitlines() or [""])[0][:160]
        raise AmcError(f"model {reference} fails on inputs of shape {tuple(input_shape)} ({type(e).__name__}: "
                       f"{detail}); pick data of the shape it takes, or state it in the factory's amc_info") from None
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != 1:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise AmcError(f"model {reference} returns {shape} for one image; amc prunes classifiers that return "
                       "logits of shape [batch, classes]")
    return int(output.shape[1])


def _import(module_name: str, extra_dirs: tuple[str, ...], reference: str):
    added = [d for d in extra_dirs if d and d not in sys.path]
    sys.path.extend(added)  # after sys.path: an installed package of the same name wins
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise AmcError(f"model factory {reference}: no module named {e.name!r} on the Python path or in "
                           f"{os.getcwd()}; run from the directory that holds it or add it to PYTHONPATH") from None
        raise AmcError(f"model factory {reference}: importing {module_name} failed (no module named {e.name!r}); "
                       "install what it needs") from None
    except SystemExit as e:  # a script's code at module level, run by the import
        raise AmcError(f"model factory {reference}: importing {module_name} called sys.exit({e.code!r}); guard the "
                       "module's script code with if __name__ == \"__main__\"") from None
    except Exception as e:  # noqa: BLE001 - a syntax error or any failure while the module runs
        detail = (str(e).strip().splitlines() or [""])[0][:160]
        raise AmcError(f"model factory {reference}: importing {module_name} failed ({type(e).__name__}: {detail}); "
                       "fix the module") from None
    finally:
        for directory in added:
            sys.path.remove(directory)


def _import_root(module, module_name: str) -> str | None:
    """The sys.path entry `module` was found under (its file's directory, one level up per package)."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    depth = module_name.count(".") + (1 if path.name == "__init__.py" else 0)
    return str(path.parents[depth])


__all__ = ["INFO_KEYS", "build", "is_reference", "output_classes", "stated_info"]
