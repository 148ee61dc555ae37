"""amc: AutoML for Model Compression (He et al., ECCV 2018), channel pruning searched by DDPG.

Public API: `amc.models.create`, `amc.count_macs`, `amc.count_params`, `amc.search`, `amc.load_pruned`.
Attributes are imported lazily so that `import amc.models` does not pull in the search machinery.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {"count_macs": "amc.cost", "count_params": "amc.cost", "load_pruned": "amc.export",
         "search": "amc.search", "SearchConfig": "amc.search", "SearchResult": "amc.search"}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'amc' has no attribute {name!r}")
