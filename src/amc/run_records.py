"""What a run's files hold, as types: `RunSummary` (summary.json, what an export measured: one type for a search's
best policy and for the policy `amc prune` applied, so that each figure has one name whoever wrote it; the held-out
score is `heldout_top1`) and `ExportedModel` (model.json and model.pt). `amc.runs.RunDir` reads and writes them;
this module only says what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# what earlier versions wrote under another name: read as the field it names now
LEGACY_NAMES = {"best_val_top1": "heldout_top1"}  # a search's exported held-out top-1 (a prune wrote heldout_top1)


@dataclass
class RunSummary:
    """summary.json. Accuracies are fractions in [0, 1], measured fp32 on the full splits. A field that does not
    apply to the run (a prune's agent, a search's policy source, a dense model's sparse size) is None and left out
    of the file; a file may also lack what an older amc did not write, so every field may be None."""

    model: str | None = None
    # the search: who searched, how many episodes, which one was exported
    agent: str | None = None
    seed: int | None = None
    episodes: int | None = None
    best_episode: int | None = None
    # `amc prune`: the policy file it applied
    policy_source: str | None = None
    # the exported network
    heldout_top1: float | None = None
    best_search_score: float | None = None  # the exported policy's score during the search (subset, precision)
    best_reward: float | None = None
    racing: bool | None = None
    test_top1: float | None = None
    test_top5: float | None = None
    macs: int | None = None
    macs_ratio: float | None = None
    params: int | None = None               # nonzero parameters for a fine-grained run
    params_ratio: float | None = None
    sparse_macs: int | None = None          # fine-grained: the MACs of the nonzero weights
    dense_bytes: int | None = None          # fine-grained: model.pt, zeros stored
    sparse_bytes: int | None = None         # fine-grained: model_sparse.pt, a bitmask and the nonzero values
    method: str | None = None               # "fine-grained"; None for channel pruning
    baseline: dict | None = None            # the original network: heldout_top1, macs, params (a search: test_top1)
    budget_ratio: float | None = None       # the search's budget as a share of the original (None: no budget)
    target: str | None = None
    search_seconds: float | None = None
    agent_seconds: float | None = None      # of search_seconds, the agent's own setup (the knapsack's sensitivity)
    data_bytes: int | None = None           # the dataset's images in memory (uint8, all splits)
    finalists: dict | None = None           # `amc.finalists`: the finalist stage's candidates and winner
    stopped_early: dict | None = None       # a callback stopped the search: {"planned", "by"}
    baselines: dict | None = None           # fixed policies at the same budget, scored as the export is
    searched_minus_best_baseline: dict | None = None
    latency: dict | None = None             # a latency search: predicted and measured, and whether the budget was met
    export: dict | None = None              # {file name: SHA-256} of the exported files, written by RunDir
    finetune: dict | None = None            # `amc finetune`'s record (test_top1, heldout_top1, history, ...)
    extra: dict[str, Any] = field(default_factory=dict)  # what this amc does not know (a newer one's), kept

    @classmethod
    def from_dict(cls, raw: dict) -> RunSummary:
        """A summary as read from summary.json, of this or an earlier version (its names for a field mapped to
        today's; a value already checked by `amc.run_schema`)."""
        known = _field_names()
        values = {name: value for name, value in raw.items() if name in known}
        for old, new in LEGACY_NAMES.items():
            if old in raw and values.get(new) is None:
                values[new] = raw[old]
        extra = {k: v for k, v in raw.items() if k not in known and k not in LEGACY_NAMES}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict:
        """summary.json's content: the fields that apply (not None), in the order above, then what `extra` keeps."""
        values = {name: getattr(self, name) for name in _field_names()}
        return {**{k: v for k, v in values.items() if v is not None}, **self.extra}


def _field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(RunSummary) if f.name != "extra")


@dataclass(frozen=True)
class ExportedModel:
    """A run's exported model as saved (`RunDir.read_model`): model.json's architecture record (a `ModelInfo` as a
    dict) and the residual blocks it dropped, model.pt's tensors, and the two files (named in messages)."""

    record: dict
    dropped_blocks: list[str]
    state_dict: dict
    meta_file: Path
    weights_file: Path


__all__ = ["ExportedModel", "LEGACY_NAMES", "RunSummary"]
