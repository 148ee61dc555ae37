"""amc: AutoML for Model Compression (He et al., ECCV 2018), channel pruning searched by DDPG.

Public API: `amc.models.create`, `amc.count_macs`, `amc.count_params`, `amc.search`, `amc.apply_policy`,
`amc.load_pruned`.

Each name is imported from its module on first use, so that `import amc` (and `amc --help`) does not load
torch; `from amc import search` and `amc.search(...)` work as with eager imports.
"""

from __future__ import annotations

import importlib
import sys
import types

from amc.version import __version__

# each public name -> the module that defines it
_PUBLIC = {"count_macs": "amc.cost", "count_params": "amc.cost", "load_pruned": "amc.export",
           "apply_policy": "amc.apply", "SearchConfig": "amc.config", "SearchResult": "amc.search",
           "search": "amc.search"}

__all__ = ["SearchConfig", "SearchResult", "__version__", "apply_policy", "count_macs", "count_params", "load_pruned",
           "search"]


def __getattr__(name: str):
    """A public name, imported from its module; else a submodule (`amc.models`), imported on first use."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    if not name.isidentifier() or name.startswith("_"):  # only a direct submodule by its plain name, nothing else
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package, whose `search` is the function: importing the submodule `amc.search` binds the module on
    the package under that name, which would hide the function once something imported the submodule first."""

    @property
    def search(self):
        value = vars(self).get("search")
        return value if value is not None else importlib.import_module("amc.search").search

    @search.setter
    def search(self, value) -> None:
        if not isinstance(value, types.ModuleType):  # a user's or a test's replacement is kept
            vars(self)["search"] = value

    @search.deleter
    def search(self) -> None:
        vars(self).pop("search", None)


sys.modules[__name__].__class__ = _Package
