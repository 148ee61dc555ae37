"""Fine-tuning the pruned model of a search run, optionally distilled from the original network.

Reads the run's config.json (model, weights, data) and exported model, trains on the training split
(held-out excluded), keeps a resumable checkpoint in `finetune.pt`, writes the fine-tuned weights to
`model_finetuned.pt` and the outcome into summary.json under "finetune", every file through `amc.runs.RunDir`.

It starts, by default, from the run's policy pruned again without least-squares reconstruction (BatchNorm still
re-estimated), not from the exported model: the reconstructed weights fit the original's features at the pruned
width, which is what makes a score before fine-tuning informative, but they fine-tune lower. Measured on five
settings (ResNet-20 and -56 at 20% and 30% of the MACs, the digits CNN at 5%): +0.09 to +0.61 test top-1 after
the same fine-tune, none the other way (benchmarks/RESULTS.md, "Least squares after fine-tuning").
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from amc import models
from amc.apply import rebuild_policy
from amc.data import Dataset
from amc.errors import AmcError
from amc.export import load_pruned
from amc.pruning.fine_grained import pack_sparse
from amc.run_inputs import run_dataset
from amc.models.factory import trusting
from amc.runs import POLICY_FILE, RunDir
from amc.train import TrainConfig, train


DEFAULT_CONFIG = TrainConfig(epochs=20, lr=0.01)
STARTS = ("unreconstructed", "exported")  # what a fine-tune starts from; see the module's docstring


def finetune(run_dir: str | Path, config: TrainConfig | None = None, *,
             distill: bool = False, teacher_weights: str | Path | None = None, data: Dataset | None = None,
             resume: bool = False, overwrite: bool = False, progress: Callable[[dict], None] | None = None,
             on_step: Callable[[int, int], None] | None = None, device: str = "cpu",
             trust_model_code: bool = False, changes: dict | None = None, start: str = "unreconstructed") -> dict:
    """Fine-tune `run_dir`'s pruned model on `device`; returns the summary's "finetune" record (test_top1, ...).

    `start="unreconstructed"` (default) fine-tunes the run's policy pruned again without least squares, from the
    original weights (the run's, or `teacher_weights`); `"exported"` fine-tunes model.pt as the search exported it.
    Where the two are the same (a run without reconstruction, a fine-grained run) or the search had no weights (a
    random initialisation), the export is used; the record's "start" says which it was. A resumed fine-tune goes
    on from its checkpoint, whatever it started from.

    With `distill=True` the original network (the run's model and weights, or `teacher_weights`) is the
    teacher, mixed in with `config.distill_alpha` (0.5 if left at 0). `config` defaults to `DEFAULT_CONFIG`;
    with `resume=True` and no `config`, the interrupted fine-tune goes on with its own settings (distillation
    included) and the `changes` given (TrainConfig fields, e.g. {"epochs": 30}). A model factory the run names is code: it is imported only with `trust_model_code=True`.
    """
    if start not in STARTS:
        raise AmcError(f"unknown fine-tuning start {start!r}; pick one of {', '.join(STARTS)}")
    run = RunDir(run_dir)
    run_dir = run.path
    search_config = run.settings("fine-tuned")
    checkpoint = run.finetune_checkpoint
    if resume and not run.has_finetune_checkpoint():
        raise AmcError(f"nothing to resume: {checkpoint} does not exist; start without --resume")
    if run.has_finetune_checkpoint() and not (resume or overwrite):
        raise AmcError(f"{run_dir} has already been fine-tuned ({checkpoint.name}); pass --resume to "
                       "continue it or --overwrite to start again")
    run.check_finished("fine-tune")  # a search still going, stopped or half-exported has no model to tune yet
    if config is None and resume:  # the interrupted fine-tune's own settings
        config, distill = _saved_config(run)
        try:
            config = TrainConfig(**{**asdict(config), **(changes or {})})
        except (TypeError, ValueError) as e:
            raise AmcError(f"bad fine-tuning setting: {e}") from None
    config = config or DEFAULT_CONFIG
    weights = teacher_weights or search_config.get("weights") or models.bundled_weights(search_config["model"])
    if resume:  # the checkpoint holds the weights; what they started from is recorded in it
        start = run.read_finetune_checkpoint().get("start", "exported")
    elif not _differs_from_export(run, search_config):
        start = "exported"  # the same network either way
    elif weights is None:
        start = "exported"  # searched from a random initialisation (a structure check): nothing to prune again
    rebuild = start == "unreconstructed" and not resume
    if distill or rebuild:
        _check_found(weights, rebuild)
    else:
        weights = None
    with run.writing(), trusting(trust_model_code):  # one writer per run: a second writer is refused
        if overwrite and not resume:
            run.remove_finetune_checkpoint()
        dataset = data if data is not None else run_dataset(run_dir, purpose="fine-tuned")
        original = _original(run, weights) if weights is not None else None
        student = load_pruned(run_dir) if not rebuild else \
            rebuild_policy(run_dir, copy.deepcopy(original), dataset, device=device, purpose="fine-tuned",
                           reconstruct=False)
        teacher = None
        if distill:
            teacher = original
            if config.distill_alpha == 0:
                config = TrainConfig(**{**asdict(config), "distill_alpha": 0.5})
        # a fine-grained run stays sparse: its pruned weights are held at zero throughout
        sparse_layers = _pruned_layers(run, student) if search_config.get("method") == "fine-grained" else []
        masks = {name: dict(student.named_modules())[name].weight.detach() != 0 for name in sparse_layers}
        t0 = time.perf_counter()
        final = train(student, dataset, checkpoint, config, resume=resume, progress=progress, teacher=teacher,
                      on_step=on_step, masks=masks or None, device=device, extra={"start": start})
        student.cpu()
        run.write_finetuned(student.state_dict())
        state = run.read_finetune_checkpoint()
        if sparse_layers:
            run.write_finetuned_sparse(pack_sparse(student, sparse_layers))
        record = {"epochs": config.epochs, "lr": config.lr, "optimizer": config.optimizer, "seed": config.seed,
                  "device": str(device), "start": start,
                  "precision": config.precision, "distill": distill,
                  "distill_alpha": config.distill_alpha if distill else 0.0,
                  "heldout_top1": final.get("heldout_top1"), "test_top1": final["test_top1"],
                  "history": state["history"], "seconds_this_session": round(time.perf_counter() - t0, 1)}
        run.record_finetune(record)
        return record


def _differs_from_export(run: RunDir, settings: dict) -> bool:
    """Whether a run's export differs from its policy pruned without least squares: a policy pruned by channels
    with reconstruction on (`settings`: config.json's "search"). A benchmark's peer (a network another tool
    built) is its own export."""
    return (settings.get("method", "channel") != "fine-grained" and settings.get("reconstruct", True)
            and "peer" not in settings and run.has(POLICY_FILE))


def _check_found(weights: str | Path | None, rebuild: bool) -> None:
    """A one-line error if the original network's weights are not there."""
    if weights is None or not Path(weights).exists():
        fix = " (or --start exported: the exported model as it is, which needs them only with --distill)" \
            if rebuild else ""
        raise AmcError(f"the original weights {weights} are not found (an older run records them relative to where "
                       f"the search ran); pass --teacher-weights FILE{fix}")


def _original(run: RunDir, weights: str | Path) -> torch.nn.Module:
    """The run's unpruned network (the architecture it recorded: zoo, torchvision, timm or the user's own
    factory) with the original `weights`."""
    original = models.rebuild(*run.original_record("fine-tuned"))
    models.load_weights(original, weights)
    return original.eval()


def _saved_config(run: RunDir) -> tuple[TrainConfig, bool]:
    """The settings finetune.pt was trained with, and whether it distilled."""
    saved = run.read_finetune_checkpoint().get("config")
    try:
        config = TrainConfig(**saved)
    except (TypeError, ValueError):
        raise AmcError(f"{run.finetune_checkpoint} records no settings to continue with; pass them again "
                       "(e.g. --epochs) with --resume, or fine-tune again with --overwrite") from None
    return config, config.distill_alpha > 0


def _pruned_layers(run: RunDir, model: torch.nn.Module) -> list[str]:
    """Layers a fine-grained search decided on (from its config's decisions)."""
    raw = run.read_config("fine-tuned")
    names = {name for name, _ in model.named_modules()}
    return [d["consumer"] for d in raw.get("decisions", []) if d["consumer"] in names]


def load_finetuned(run_dir: str | Path, *, trust_model_code: bool = False) -> torch.nn.Module:
    """The run's pruned model with its fine-tuned weights (after `amc finetune`)."""
    run = RunDir(run_dir)
    state = run.read_finetuned()
    model = load_pruned(run.path, trust_model_code=trust_model_code)
    model.load_state_dict(state)
    return model.eval()


__all__ = ["DEFAULT_CONFIG", "STARTS", "finetune", "load_finetuned"]
