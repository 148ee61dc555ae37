"""What a later command takes from a search run: its settings as the command's defaults, its input files found
again, and the refusal to work on a randomly initialised network that nobody asked for.

config.json stores absolute paths (since issue 20), so `amc finetune RUN` works from any directory. A run
written before holds its paths as they were typed, relative to a directory that is no longer known: such a path
is tried as it is, and a file not found is named in one line with the option that supplies it.
"""

from __future__ import annotations

from pathlib import Path

from amc import models
from amc.models import factory
from amc.config import SearchConfig
from amc.data import Dataset, load_dataset
from amc.errors import AmcError
from amc.runs import CONFIG_FILE, POLICY_FILE, RunDir

# a run's input files: setting -> (what it is, the option that supplies it)
INPUT_FILES = {"weights": ("weights", "--weights"), "data_dir": ("data", "--data-dir")}


def find_input(path: str | None, what: str, option: str) -> str | None:
    """`path` (a run's recorded input) if it exists here; else a one-line error naming the option to pass."""
    if path is None or Path(path).exists():
        return path
    where = "" if Path(path).is_absolute() else " (the run records it relative to where the search ran)"
    raise AmcError(f"the run's {what} {path} is not found{where}; pass {option} FILE")


def run_config(run: str | Path, purpose: str = "used", *, unchecked: tuple[str, ...] = (), **given) -> SearchConfig:
    """The run's settings with the `given` ones (not None: what the user typed) in their place; the run's own
    input files are checked to exist here (a missing one names the option that replaces it), except those in
    `unchecked` (supplied otherwise, e.g. a loaded dataset). A `data` other than the run's drops the run's
    data_dir with it."""
    settings = dict(RunDir(run).settings(purpose))
    given = {k: v for k, v in given.items() if v is not None}
    if "model" not in given:  # the run's own model: a factory it names is code that came with the run
        factory.check_named_in_file(settings.get("model"), RunDir(run) / CONFIG_FILE)
    if "data" in given and given["data"] != settings.get("data") and "data_dir" not in given:
        given["data_dir"] = None  # another dataset: the run's file is not its file
    settings.update(given)
    for key, (what, option) in INPUT_FILES.items():
        if key not in given and key not in unchecked:
            settings[key] = find_input(settings.get(key), what, option)
    try:
        return SearchConfig.from_dict(settings)
    except (AmcError, ValueError, TypeError) as e:
        raise AmcError(f"cannot use the settings of {run} ({e}); fix the option or re-run the search") from None


def run_dataset(run: str | Path, data_dir: str | Path | None = None, purpose: str = "used") -> Dataset:
    """The dataset a run was searched on (its data_dir, or `data_dir` in its place), with the run's split."""
    settings = RunDir(run).settings(purpose)
    path = str(data_dir) if data_dir is not None else find_input(settings.get("data_dir"), "data", "--data-dir")
    return load_dataset(settings.get("data", SearchConfig.data), path, seed=0,
                        download=bool(settings.get("download", False)),
                        max_memory_gb=settings.get("max_memory_gb", SearchConfig.max_memory_gb))


def policy_run(policy: str | Path) -> Path | None:
    """The run a policy belongs to: the directory itself, or the directory of RUN/policy.json; None for a policy
    file outside a run (its settings are then the search defaults)."""
    path = Path(policy)
    if path.is_dir():
        return path
    return path.parent if path.name == POLICY_FILE and (path.parent / CONFIG_FILE).is_file() else None


def check_weights(model: str, weights: str | Path | None, random_init: bool, doing: str = "use") -> None:
    """Refuse to `doing` a randomly initialised `model` (no weights given, none bundled) unless `random_init`
    asks for it. An unknown name is refused first, as unknown (with the names it may have meant): no weights
    would make it known. A user's own factory (`pkg.module:factory`) decides its weights itself."""
    models.check_name(model)
    built_here = model.startswith(("tv:", "timm:")) or model in models.list_models()
    if weights is None and not random_init and built_here and models.bundled_weights(model) is None:
        raise AmcError(f"no weights for {model}: amc would {doing} a randomly initialised network; pass --weights "
                       "FILE (the trained checkpoint), or --random-init if an untrained network is what you want")


__all__ = ["check_weights", "find_input", "policy_run", "run_config", "run_dataset"]
