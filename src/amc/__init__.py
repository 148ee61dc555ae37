"""amc: AutoML for Model Compression (He et al., ECCV 2018), channel pruning searched by DDPG.

Public API: `amc.models.create`, `amc.count_macs`, `amc.count_params`, `amc.search`, `amc.apply_policy`,
`amc.load_pruned`.
"""

from amc.version import __version__  # noqa: E402

from amc.cost import count_macs, count_params  # noqa: E402
from amc.export import load_pruned  # noqa: E402
from amc.apply import apply_policy  # noqa: E402
from amc.config import SearchConfig  # noqa: E402
# Binding the function after the submodule import keeps `amc.search` the function, not the module.
from amc.search import SearchResult, search  # noqa: E402

__all__ = ["count_macs", "count_params", "load_pruned", "search", "apply_policy", "SearchConfig", "SearchResult",
           "__version__"]
