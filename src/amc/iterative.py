"""The paper's iterative schedule for fine-grained pruning: several stages of decreasing overall density,
each a search followed by masked fine-tuning, each starting from the previous stage's fine-tuned model.

Every stage is an ordinary run directory (`OUT/stage1`, `OUT/stage2`, ...); a finished stage is skipped and
an interrupted one resumed, so the whole schedule can be killed and restarted.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

from amc.errors import AmcError
from amc.config import SearchConfig
from amc.devices import resolve_device
from amc.finetune import finetune
from amc.models.factory import trusting
from amc.runs import RunDir
from amc.search import search
from amc.train import TrainConfig


def iterative_fine_grained(config: SearchConfig, densities: Sequence[float], out: str | Path, *,
                           train_config: TrainConfig = TrainConfig(epochs=2, lr=0.01), data=None,
                           progress: Callable[[str], None] | None = None) -> dict:
    """Run one fine-grained search + fine-tune per density in `densities` (decreasing, in (0, 1]).

    `config` gives the model, data and search settings of every stage (its method, target and ratio are
    set per stage). Returns the schedule's summary, also written to OUT/summary.json.
    """
    densities = [float(d) for d in densities]
    if not densities or any(not 0 < d <= 1 for d in densities) or densities != sorted(densities, reverse=True):
        raise AmcError(f"densities must be decreasing values in (0, 1], got {densities}; e.g. 0.5,0.3,0.2")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with trusting(names=(config.model,)):  # the stages' runs name the model the caller named
        return _stages(config, densities, out, train_config, data, progress)


def _stages(config: SearchConfig, densities: list[float], out: Path, train_config: TrainConfig, data,
            progress: Callable[[str], None] | None) -> dict:
    weights, stages = config.weights, []
    for number, density in enumerate(densities, start=1):
        run = RunDir(out / f"stage{number}")
        stage_config = replace(config, method="fine-grained", target="params", reward="acc", ratio=density,
                               weights=weights)
        if not run.has_summary():
            if progress:
                progress(f"stage {number}/{len(densities)}: search at {density:g} of the parameters")
            search(config=stage_config, out=run.path, data=data, resume=run.has_state(),
                   overwrite=not run.has_state() and run.path.exists())
        summary = run.read_summary()
        if summary.finetune is None or summary.finetune["epochs"] < train_config.epochs:
            if progress:
                progress(f"stage {number}/{len(densities)}: fine-tune {train_config.epochs} epoch(s), weights masked")
            finetune(run.path, train_config, data=data, resume=run.has_finetune_checkpoint(),
                     device=resolve_device(config.device))
            summary = run.read_summary()
        stages.append({"stage": number, "density": density, "run_dir": str(run),
                       "params": summary.params, "params_ratio": summary.params_ratio,
                       "heldout_top1_before_finetune": summary.heldout_top1,
                       "heldout_top1": summary.finetune["heldout_top1"],
                       "test_top1": summary.finetune["test_top1"],
                       "sparse_bytes": summary.sparse_bytes})
        weights = str(run.finetuned_weights)  # the next stage starts from this stage's fine-tuned model
    result = {"densities": densities, "search": asdict(config), "finetune": asdict(train_config), "stages": stages}
    RunDir(out).write_schedule_summary(result)
    return result


__all__ = ["iterative_fine_grained"]
