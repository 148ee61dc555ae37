"""`amc train`, `amc finetune` and `amc iterate`: the commands that train."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from amc.cli.app import app, on_command_line
from amc.cli.options import DATASETS, JSON_HELP, THREADS_HELP, TRUST_HELP
from amc.cli.progress import StepProgress, console
from amc.config import default
from amc.devices import DEVICE_HELP
from amc.errors import AmcError


@app.command("train")
def train_command(
    model: str = typer.Option(..., help="Zoo name (see `amc models`)."),
    data: str = typer.Option(..., help="Dataset.", metavar=DATASETS),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset file or folder."),
    download: bool = typer.Option(False, help="Download CIFAR-10 if it is not in --data-dir (needs network)."),
    epochs: int = typer.Option(..., help="Training epochs."),
    out: Path = typer.Option(..., help="Checkpoint file, rewritten after every epoch."),
    weights: Optional[Path] = typer.Option(None, help="Start from these weights (fine-tuning)."),
    lr: float = typer.Option(0.1, help="Peak learning rate (cosine schedule)."),
    warmup_epochs: float = typer.Option(0.0, help="Linear LR warm-up before the cosine, in epochs (VGG-16 "
                                        "from scratch stalls at lr 0.1 without one)."),
    batch_size: int = typer.Option(128, help="Batch size."),
    weight_decay: float = typer.Option(5e-4, help="Weight decay."),
    seed: int = typer.Option(0, help="Seed."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast (faster for plain convs on CPUs "
                                  "with bf16 support)."),
    threads: Optional[int] = typer.Option(None, help=THREADS_HELP),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in --out."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Train a zoo model on a dataset's training split (held-out excluded), cosine LR, checkpoint per epoch."""
    from amc.devices import resolve_device
    from amc.train import train_model

    target = resolve_device(device)  # refused in one line before the data is loaded
    with StepProgress() as progress:
        final = train_model(model, data, out, data_dir=data_dir, weights=weights, download=download, resume=resume,
                            threads=threads, progress=progress.epoch, on_step=progress.step, device=target,
                            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                            precision=precision, warmup_epochs=warmup_epochs)
    if as_json:
        print(json.dumps({"out": str(out), "heldout_top1": final.get("heldout_top1"), "test_top1": final["test_top1"]}))
        return
    held_out = f"held-out top-1 {100 * final['heldout_top1']:.2f}%, " if final.get("heldout_top1") is not None else ""
    console.print(f"trained {model}: {held_out}test top-1 {100 * final['test_top1']:.2f}%; wrote {out}",
                  highlight=False)


@app.command("finetune")
def finetune_command(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="Output directory of `amc search` (or `amc prune`)."),
    epochs: int = typer.Option(20, help="Fine-tuning epochs."),
    data_dir: Optional[Path] = typer.Option(None, help="The run's dataset file or folder, if its recorded path no "
                                            "longer resolves (default: the run's)."),
    lr: float = typer.Option(0.01, help="Peak learning rate (cosine schedule); ~1e-3 for adamw."),
    optimizer: str = typer.Option("sgd", help="sgd (Nesterov momentum) or adamw."),
    batch_size: int = typer.Option(128, help="Batch size."),
    weight_decay: float = typer.Option(5e-4, help="Weight decay."),
    distill: bool = typer.Option(False, help="Distil from the original network (the run's model and weights)."),
    distill_alpha: float = typer.Option(0.5, help="Weight of the distillation loss with --distill."),
    teacher_weights: Optional[Path] = typer.Option(None, help="Weights of the original network (the teacher, and "
                                                   "what the start is pruned from), if the run's path no longer "
                                                   "resolves."),
    start: str = typer.Option("unreconstructed", help="unreconstructed: the run's policy pruned again without "
                              "least squares (fine-tunes higher, see benchmarks/RESULTS.md); exported: model.pt "
                              "as the search exported it."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast."),
    seed: int = typer.Option(0, help="Seed (data order, augmentation)."),
    threads: Optional[int] = typer.Option(None, help=THREADS_HELP),
    resume: bool = typer.Option(False, help="Continue an interrupted fine-tune of this run, with its own settings "
                                "(those typed with it replace them)."),
    overwrite: bool = typer.Option(False, help="Start a new fine-tune, discarding a previous one."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    trust_model_code: bool = typer.Option(False, help=TRUST_HELP),
) -> None:
    """Fine-tune a search run's pruned model on the training split; writes model_finetuned.pt and the test
    top-1 into summary.json."""
    import torch

    from amc.finetune import finetune
    from amc.run_inputs import run_dataset
    from amc.threads import check_threads
    from amc.devices import resolve_device
    from amc.train import TrainConfig

    settings = dict(epochs=epochs, lr=lr, optimizer=optimizer, batch_size=batch_size, weight_decay=weight_decay,
                    precision=precision, seed=seed)
    try:
        config = TrainConfig(**settings, distill_alpha=distill_alpha if distill else 0.0)
    except ValueError as e:
        raise AmcError(f"bad fine-tuning setting: {e}") from None
    if epochs < 1:
        raise AmcError(f"--epochs must be at least 1, got {epochs}")
    check_threads(threads)
    target = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dataset = run_dataset(run_dir, data_dir, purpose="fine-tuned") if data_dir is not None else None
    changes = None
    if resume:  # the interrupted fine-tune's settings, with what was typed in their place
        changes = {field: value for field, value in settings.items() if on_command_line(ctx, field)}
        if on_command_line(ctx, "distill") or on_command_line(ctx, "distill_alpha"):
            changes["distill_alpha"] = config.distill_alpha
        config = None
    with StepProgress() as progress:
        record = finetune(run_dir, config, changes=changes, distill=distill, teacher_weights=teacher_weights,
                          resume=resume, overwrite=overwrite, progress=progress.epoch, on_step=progress.step, device=target,
                          data=dataset, trust_model_code=trust_model_code, start=start)
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), **{k: record[k] for k in ("epochs", "start", "heldout_top1",
                                                                             "test_top1")}}))
        return
    started = "its policy pruned without least squares" if record["start"] == "unreconstructed" else "its export"
    console.print(f"fine-tuned {run_dir} (from {started}): held-out top-1 {100 * record['heldout_top1']:.2f}%, "
                  f"test top-1 {100 * record['test_top1']:.2f}%; wrote model_finetuned.pt and summary.json",
                  highlight=False)


@app.command("iterate")
def iterate_command(
    densities: str = typer.Option(..., help="Decreasing overall densities, one stage each, e.g. 0.5,0.3,0.2."),
    model: str = typer.Option(default("model"), help="Zoo name or tv:<torchvision name>."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint of the trained model."),
    data: str = typer.Option(default("data"), help="Dataset.", metavar=DATASETS),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset file or folder."),
    # the paper's searcher: the iterative schedule is its experiment
    agent: str = typer.Option("ddpg", help="ddpg, random, uniform, tpe or knapsack."),
    episodes: int = typer.Option(100, help="Search episodes per stage."),
    lbound: float = typer.Option(0.05, help="Smallest density of any layer."),
    epochs: int = typer.Option(2, help="Masked fine-tuning epochs after each stage."),
    lr: float = typer.Option(0.01, help="Fine-tuning learning rate."),
    precision: str = typer.Option(default("precision"), help="Scoring and training precision: fp32 or bf16."),
    seed: int = typer.Option(default("seed"), help="Seed."),
    threads: Optional[int] = typer.Option(default("threads"), help=THREADS_HELP),
    device: str = typer.Option(default("device"), help=DEVICE_HELP),
    out: Path = typer.Option(..., help="Directory for the stages (stage1, stage2, ...) and summary.json."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Fine-grained pruning on the paper's iterative schedule: search + masked fine-tune per density stage,
    each stage starting from the previous one. Rerun the same command to resume."""
    from amc.iterative import iterative_fine_grained
    from amc.config import SearchConfig
    from amc.train import TrainConfig

    try:
        stages = [float(x) for x in densities.split(",") if x.strip()]
        train_config = TrainConfig(epochs=epochs, lr=lr, precision=precision, seed=seed)
    except ValueError as e:
        raise AmcError(f"bad --densities or fine-tuning setting: {e}") from None
    config = SearchConfig(model=model, weights=str(weights) if weights else None, data=data,
                          data_dir=str(data_dir) if data_dir else None, agent=agent, episodes=episodes,
                          lbound=lbound, precision=precision, seed=seed, threads=threads, method="fine-grained",
                          target="params", device=device)
    result = iterative_fine_grained(config, stages, out, train_config=train_config,
                                    progress=lambda m: console.print(m, highlight=False))
    if as_json:
        print(json.dumps({"out": str(out), "stages": result["stages"]}))
        return
    for s in result["stages"]:
        console.print(f"stage {s['stage']}: density {s['params_ratio']:.3f}, held-out top-1 "
                      f"{100 * s['heldout_top1_before_finetune']:.2f}% -> {100 * s['heldout_top1']:.2f}% after "
                      f"fine-tuning, test {100 * s['test_top1']:.2f}%, sparse file {s['sparse_bytes']} bytes",
                      highlight=False)
