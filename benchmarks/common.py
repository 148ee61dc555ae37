"""What the benchmark scripts share: where the shared data lie, one mean ± std, resumable searches through
`amc.search`, the fixed allocations at a budget, and latency pairs timed by the latency guard's interleaving.

The scripts run as scripts, so benchmarks/ is on sys.path and `from common import ...` finds this module.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SHARED_DATA = "../shared/data/cifar10-jpeg/cifar10_jpeg.npz"  # CIFAR-10 as JPEG, what the results were run on
SHARED_WEIGHTS = "../shared/data/pretrained/cifar10jpeg"  # the zoo's CIFAR-10 checkpoints, <model>.pt


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """'mean ± std' of `values` times `scale` (percent by default); one value alone, '-' for none."""
    if not values:
        return "-"
    scaled = [scale * v for v in values]
    mean = f"{statistics.mean(scaled):.{digits}f}"
    return f"{mean} ± {statistics.stdev(scaled):.{digits}f}" if len(scaled) > 1 else mean


def search_resumably(config, dataset, out: Path, label: str):
    """`amc.search` of `config` into `out`, resumed where it holds a saved state (else started afresh), with a
    progress line at most once a minute. Returns its `amc.SearchResult`."""
    import amc
    from amc.runs import RunDir

    t0 = last = time.time()

    def progress(record: dict) -> None:
        nonlocal last
        if time.time() - last > 60 or record["remaining"] == 0:
            last = time.time()
            print(f"  {label}: episode {record['episode'] + 1}/{record['episodes']} best "
                  f"{record['best_reward']:.4f} ({time.time() - t0:.0f}s)", flush=True)

    resume = RunDir(out).has_state()
    return amc.search(data=dataset, config=config, out=out, resume=resume, overwrite=not resume, progress=progress)


def ramp_spread(anchor: str, spread: float) -> float | None:
    """The signed first-to-last difference of preserve ratio of the ramp `anchor` names (`amc.agents.ANCHORS`
    gives its direction: shallower layers pruned more is negative, 0 is the uniform policy), `spread` its size;
    None for the knapsack, which is no ramp."""
    from amc.agents import ANCHORS

    direction = ANCHORS[anchor]
    if direction is None:
        return None
    return math.copysign(abs(spread), direction) if direction else 0.0


def fixed_ratios(budget, anchor: str, spread: float, scorer=None) -> list[float]:
    """Per-decision preserve ratios of a fixed allocation at `budget` (an `amc.budget.Budget`): amc's own policy
    of that anchor (`amc.agents.resolve_anchor`: the uniform ratio, the knapsack's allocation with its
    sensitivities scored by `scorer`, a ramp at amc's spread), or the ramp of `ramp_spread(anchor, spread)`."""
    from amc.agents import ANCHORS, resolve_anchor

    signed = ramp_spread(anchor, spread)
    if signed is not None and signed != ANCHORS[anchor]:
        return budget.ramp_ratios(signed)
    ratios = resolve_anchor(budget, anchor, scorer)
    return [ratios] * len(budget.channels) if isinstance(ratios, float) else list(ratios)


def latency_pair(original, pruned, input_shape, rounds: int, *, backend: str = "torch", threads: int = 1,
                 batch: int = 1) -> dict:
    """Latency of `pruned` against `original`, each round timed by the latency guard (`measure_interleaved`:
    fresh contiguous copies, the two timed one after the other, so that a slow moment hits both): the median
    milliseconds of each over the rounds, the median of the per-round speed-ups and their interquartile range."""
    from amc.config import SearchConfig
    from amc.latency.guard import measure_interleaved

    settings = SearchConfig(latency_backend=backend, latency_threads=threads, latency_batch=batch)
    pairs = [measure_interleaved([original, pruned], input_shape, settings, rounds=1) for _ in range(rounds)]
    ratios = [o / p for o, p in pairs]
    q25, q75 = np.percentile(ratios, [25, 75])
    return {"original_ms": float(np.median([o for o, _ in pairs])),
            "pruned_ms": float(np.median([p for _, p in pairs])),
            "speedup": float(np.median(ratios)), "speedup_iqr": float(q75 - q25)}


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure (tight layout, 120 dpi) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (the benchmarks write figures, never show them)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
