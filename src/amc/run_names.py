"""The names of a run directory's files, and which names in a run are amc's: one list that the run's owner
(`amc.runs.RunDir`), its lifecycle (`amc.run_lifecycle`) and later commands share."""

from __future__ import annotations

import re
from pathlib import Path

from amc.errors import AmcError

CONFIG_FILE = "config.json"
EPISODES_FILE = "episodes.jsonl"
POLICY_FILE = "policy.json"
STATE_FILE = "state.pt"
SUMMARY_FILE = "summary.json"
LATENCY_CALIBRATION_FILE = "latency_calibration.json"  # a resumed latency search reuses it: the same clipping
MODEL_FILE = "model.pt"
META_FILE = "model.json"
SPARSE_FILE = "model_sparse.pt"
FINETUNE_CHECKPOINT_FILE = "finetune.pt"
FINETUNED_FILE = "model_finetuned.pt"
FINETUNED_SPARSE_FILE = "model_finetuned_sparse.pt"
REPORT_FILE = "report.html"
LAYERS_FIGURE = "report_layers.png"
SEARCH_FIGURE = "report_search.png"
TIMINGS_FILE = "latency.json"  # `amc report --latency`: the original and the pruned model timed
TENSORBOARD_DIR = "tensorboard"
RUN_MARKER = ".amc-run"  # written first into a directory amc creates: only such a directory is ever replaced
LOCK_FILE = ".amc-lock"  # flock-ed by the one process writing the run; holds that process's pid
EXPORT_FILES = (MODEL_FILE, META_FILE, SPARSE_FILE)  # what summary.json's "export" record names by SHA-256
RUN_FILES = {CONFIG_FILE, EPISODES_FILE, POLICY_FILE, STATE_FILE, SUMMARY_FILE, LATENCY_CALIBRATION_FILE, MODEL_FILE,
             META_FILE, SPARSE_FILE, FINETUNE_CHECKPOINT_FILE, FINETUNED_FILE, FINETUNED_SPARSE_FILE, REPORT_FILE,
             LAYERS_FIGURE, SEARCH_FIGURE, TIMINGS_FILE, TENSORBOARD_DIR, RUN_MARKER, LOCK_FILE}
TENSORBOARD_EVENTS = "events.out.tfevents."  # the only files torch's SummaryWriter writes into its directory
# `amc.atomic`'s temporary files: "." + the target's name + mkstemp's 8 random characters + ".tmp"
_TEMPORARY = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$")


def is_run_file(name: str) -> bool:
    """Whether `name` is a file amc writes into a run (or a temporary file of an interrupted atomic write)."""
    temporary = _TEMPORARY.match(name)
    return name in RUN_FILES or temporary is not None and temporary[1] in RUN_FILES


def is_temporary(name: str) -> bool:
    """Whether `name` is a temporary file of an interrupted write of a run file."""
    return is_run_file(name) and name not in RUN_FILES


def check_not_a_run_file(path: str | Path) -> None:
    """Refuse to write `path` where it is one of the files of an amc run (its directory holds amc's marker): a
    command's own output never replaces another run's model, state or log."""
    path = Path(path)
    if path.name in RUN_FILES and (path.parent / RUN_MARKER).is_file():
        raise AmcError(f"{path} is a file of the amc run {path.parent}; writing it would damage that run: choose "
                       "another path")
