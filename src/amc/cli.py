"""The `amc` command: parses arguments, calls the Python API, prints. Nothing else lives here."""

from __future__ import annotations

import json
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from amc.cli_progress import EpisodeProgress, StepProgress, console
from amc.config import DEFAULTS
from amc.errors import AmcError, one_line

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="AMC: AutoML for Model Compression. Search per-layer channel pruning policies with DDPG "
                       "under a hard MACs/params budget, export the pruned model, train and evaluate models.")
_debug = {"on": False}


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    _debug["on"] = debug


@app.command("search")
def search_command(
    ctx: typer.Context,
    model: str = typer.Option(DEFAULTS.model, help="Zoo name (see `amc models`) or tv:<torchvision name>."),
    weights: Optional[Path] = typer.Option(DEFAULTS.weights, help="Checkpoint of the trained model. Without it: "
                                           "the bundled weights of the embedded default, else random init (a "
                                           "warning)."),
    data: str = typer.Option(DEFAULTS.data, help="Dataset: digits (embedded default), cifar10, imagefolder."),
    data_dir: Optional[Path] = typer.Option(DEFAULTS.data_dir, help="cifar10: .npz or CIFAR python folder; "
                                            "imagefolder: root."),
    download: bool = typer.Option(DEFAULTS.download, help="Download CIFAR-10 if it is not in --data-dir (needs "
                                  "network)."),
    target: str = typer.Option(DEFAULTS.target, help="Budgeted resource: macs, params, or latency (measured per "
                               "layer once on this machine, cached, checked on the final model)."),
    method: str = typer.Option(DEFAULTS.method, help="channel (remove whole channels: faster) or fine-grained "
                               "(zero single weights by magnitude: smaller; use with --target params)."),
    workers: int = typer.Option(DEFAULTS.workers, help="Score episodes in parallel on this many Ray actors (extra "
                                "`distributed`); 1 = in this process."),
    ray_address: Optional[str] = typer.Option(DEFAULTS.ray_address, help="Existing Ray cluster for --workers "
                                              "(default: a local instance)."),
    latency_backend: str = typer.Option(DEFAULTS.latency_backend, help="With --target latency: torch or "
                                        "onnxruntime."),
    latency_threads: int = typer.Option(DEFAULTS.latency_threads, help="With --target latency: threads the "
                                        "latency is measured with."),
    ratio: float = typer.Option(DEFAULTS.ratio, help="Budget as a share of the original cost, in (0, 1]."),
    reward: str = typer.Option(DEFAULTS.reward, help="acc (hard budget, reward = held-out accuracy), or acc-macs / "
                               "acc-params (accuracy-guaranteed: -error*log(cost), no budget)."),
    agent: str = typer.Option(DEFAULTS.agent, help="ddpg, random (same clipping, random actions), uniform, or tpe "
                              "(Optuna's TPE over the per-layer ratios; extra `tpe`)."),
    episodes: int = typer.Option(DEFAULTS.episodes, help="Episodes (scored candidates) to run."),
    warmup: Optional[int] = typer.Option(DEFAULTS.warmup, help="DDPG warm-up episodes with random actions "
                                         "(default: min(100, episodes/4))."),
    agent_option: list[str] = typer.Option([], help="Agent setting as KEY=VALUE, repeatable (DDPG: any "
                                           "DDPGConfig field, e.g. noise_sigma_min=0.1)."),
    lbound: float = typer.Option(DEFAULTS.lbound, help="Smallest preserve ratio of any layer."),
    channel_round: int = typer.Option(DEFAULTS.channel_round, help="Round kept channels to multiples of this (8 "
                                      "suits fast kernels)."),
    group_coupled: bool = typer.Option(DEFAULTS.group_coupled, help="Also prune each residual-coupled channel "
                                       "group as one decision (where torch-pruning follows it; never across "
                                       "padded shortcuts)."),
    selection: str = typer.Option(DEFAULTS.selection, help="Channel selection: magnitude or greedy "
                                  "(reconstruction-aware)."),
    reconstruct: bool = typer.Option(DEFAULTS.reconstruct, help="Least-squares reconstruction of pruned layers."),
    bn_recalibration: int = typer.Option(DEFAULTS.bn_recalibration, help="Re-estimate BN statistics on this many "
                                         "batches of 100 calibration images before scoring (0 = off)."),
    calibration_images: int = typer.Option(DEFAULTS.calibration_images, help="Training images used to sample "
                                           "layer features."),
    heldout_limit: Optional[int] = typer.Option(DEFAULTS.heldout_limit, help="Score candidates on the first N "
                                                "held-out images."),
    tensorboard: bool = typer.Option(DEFAULTS.tensorboard, help="Also log every episode for TensorBoard into "
                                     "OUT/tensorboard (extra `tensorboard`)."),
    racing: Optional[bool] = typer.Option(DEFAULTS.racing, "--racing/--no-racing", help="Stop scoring a candidate "
                                          "once it cannot plausibly beat the best so far (the best is always "
                                          "scored in full). Default: on with --reward acc."),
    precision: str = typer.Option(DEFAULTS.precision, help="Scoring precision of candidates: fp32, or bf16 (about "
                                  "2x faster on CPUs with bf16 units; final figures are always fp32)."),
    finalists: int = typer.Option(DEFAULTS.finalists, help="Give the top K distinct candidates short distilled "
                                  "fine-tunes and export the winner (successive halving); 1 = off."),
    finalist_steps: int = typer.Option(DEFAULTS.finalist_steps, help="SGD steps per finalist per round."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seed for the agent, calibration sampling and torch."),
    threads: Optional[int] = typer.Option(DEFAULTS.threads, help="torch CPU threads (default: torch's choice)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<model>-<agent>-<time>)."),
    resume: bool = typer.Option(False, help="Continue the search in --out where it stopped."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
) -> None:
    """Search a per-layer pruning policy under a budget and export the pruned model.

    With no arguments: prunes the bundled digits CNN to 50% MACs on scikit-learn's digits (a few minutes).
    """
    from amc.config import SearchConfig
    from amc.runs import CONFIG_FILE, RunDir
    from amc.search import resumed_config, search

    if resume and out is None:
        raise AmcError("--resume needs --out pointing at the run directory to continue")
    out = out or Path("runs") / f"{model.replace(':', '_')}-{agent}-{datetime.now():%Y%m%d-%H%M%S}"
    settings = dict(
        model=model, weights=str(weights) if weights else None, data=data,
        data_dir=str(data_dir) if data_dir else None, download=download, target=target, ratio=ratio,
        reward=reward, agent=agent, episodes=episodes, warmup=warmup, lbound=lbound, channel_round=channel_round,
        group_coupled=group_coupled, selection=selection, reconstruct=reconstruct, bn_recalibration=bn_recalibration,
        calibration_images=calibration_images, heldout_limit=heldout_limit, racing=racing, precision=precision,
        seed=seed, tensorboard=tensorboard, threads=threads, agent_options=_key_values(agent_option),
        latency_backend=latency_backend, latency_threads=latency_threads, method=method,
        workers=workers, ray_address=ray_address, finalists=finalists, finalist_steps=finalist_steps)
    # a resume keeps the run's settings; what was typed must equal them or be a change a resume allows
    given = {k: v for k, v in settings.items() if resume and ctx.get_parameter_source(
        "agent_option" if k == "agent_options" else k).name == "COMMANDLINE"}
    config = resumed_config(out, given) if resume else SearchConfig(**settings)
    episodes = config.episodes_to_run
    goal = (f"{config.target} <= {config.ratio:g}" if config.reward == "acc"
            else f"reward {config.reward} (accuracy-guaranteed, no budget)")
    console.print(f"[bold]amc search[/bold] {config.model} on {config.data}: {goal}, "
                  f"agent {config.agent}, {episodes} episodes -> {out}{' (resumed)' if resume else ''}",
                  highlight=False)
    if config.finalists > 1:
        console.print(f"then the finalist stage: the best {config.finalists} distinct candidates, short distilled "
                      f"fine-tunes of {config.finalist_steps} steps a round, the better half kept each round",
                      highlight=False)
    try:
        with EpisodeProgress(episodes, config.resource) as progress:
            result = search(config=None if resume else config, out=out, resume=resume, overwrite=overwrite,
                            progress=progress, **given)
    except KeyboardInterrupt:
        # state.pt is replaced atomically after every episode, so what is there is whole
        run = RunDir(out)
        if run.has_state():
            console.print(f"interrupted; {out} holds the search up to its last finished episode: continue it "
                          f"with `amc search --resume --out {out}`", highlight=False)
        elif (run / CONFIG_FILE).exists():
            console.print(f"interrupted before the first episode finished: nothing to resume; start again with "
                          f"`amc search --overwrite --out {out}`", highlight=False)
        else:
            console.print("interrupted before the search started; nothing was written", highlight=False)
        raise typer.Exit(130) from None
    s = result.summary
    if "finalists" in s and s["finalists"]["candidates"]:
        f = s["finalists"]
        console.print(f"finalist stage: episode {f['winner_episode']} won (the search's best was episode "
                      f"{f['search_best_episode']}), {f['total_steps']} steps in {f['seconds']:.0f} s",
                      highlight=False)
    console.print(f"best policy: held-out top-1 {s['best_val_top1']:.4f} (original "
                  f"{s['baseline']['heldout_top1']:.4f}), test top-1 {s['test_top1']:.4f}, "
                  f"MACs {s['macs'] / 1e6:.2f}M ({s['macs_ratio']:.3f}), params {s['params'] / 1e6:.3f}M "
                  f"({s['params_ratio']:.3f}); wrote {out}/summary.json, policy.json, model.pt", highlight=False)
    if "latency" in s:
        lat = s["latency"]
        console.print(f"latency ({lat['backend']}, {lat['threads']} thread(s), batch {lat['batch']}): measured "
                      f"{lat['pruned_ms']:.3f} ms against {lat['original_ms']:.3f} ms ({lat['measured_ratio']:.3f}; "
                      f"target {lat['target_ratio']:g}, predicted {lat['predicted_ratio']:.3f})", highlight=False)
    print(json.dumps({"run_dir": str(out), **{k: s[k] for k in ("best_val_top1", "test_top1", "macs",
                                                                "macs_ratio", "params")},
                      **({"latency_ratio": s["latency"]["measured_ratio"]} if "latency" in s else {})}))


def _key_values(pairs: list[str]) -> dict:
    """KEY=VALUE strings to a dict, values parsed as JSON where possible (numbers, booleans)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AmcError(f"--agent-option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


@app.command("train")
def train_command(
    model: str = typer.Option(..., help="Zoo name (see `amc models`)."),
    data: str = typer.Option(..., help="Dataset: digits, cifar10, imagefolder."),
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
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in --out."),
) -> None:
    """Train a zoo model on a dataset's training split (held-out excluded), cosine LR, checkpoint per epoch."""
    from amc.train import train_model

    with StepProgress() as progress:
        final = train_model(model, data, out, data_dir=data_dir, weights=weights, download=download, resume=resume,
                            threads=threads, progress=progress.epoch, on_step=progress.step, epochs=epochs,
                            batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, precision=precision,
                            warmup_epochs=warmup_epochs)
    print(json.dumps({"out": str(out), "heldout_top1": final.get("heldout_top1"), "test_top1": final["test_top1"]}))


@app.command("finetune")
def finetune_command(
    run_dir: Path = typer.Argument(..., help="Output directory of `amc search`."),
    epochs: int = typer.Option(20, help="Fine-tuning epochs."),
    lr: float = typer.Option(0.01, help="Peak learning rate (cosine schedule); ~1e-3 for adamw."),
    optimizer: str = typer.Option("sgd", help="sgd (Nesterov momentum) or adamw."),
    batch_size: int = typer.Option(128, help="Batch size."),
    weight_decay: float = typer.Option(5e-4, help="Weight decay."),
    distill: bool = typer.Option(False, help="Distil from the original network (the run's model and weights)."),
    distill_alpha: float = typer.Option(0.5, help="Weight of the distillation loss with --distill."),
    teacher_weights: Optional[Path] = typer.Option(None, help="Weights of the original network, if the run's "
                                                   "path no longer resolves."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast."),
    seed: int = typer.Option(0, help="Seed (data order, augmentation)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    resume: bool = typer.Option(False, help="Continue an interrupted fine-tune of this run."),
    overwrite: bool = typer.Option(False, help="Start a new fine-tune, discarding a previous one."),
    device: str = typer.Option("cpu", help="Where to train: cpu, cuda, cuda:1, mps."),
) -> None:
    """Fine-tune a search run's pruned model on the training split; writes model_finetuned.pt and the test
    top-1 into summary.json."""
    import torch

    from amc.finetune import finetune
    from amc.train import TrainConfig, resolve_device

    try:
        config = TrainConfig(epochs=epochs, lr=lr, optimizer=optimizer, batch_size=batch_size,
                             weight_decay=weight_decay, precision=precision, seed=seed,
                             distill_alpha=distill_alpha if distill else 0.0)
    except ValueError as e:
        raise AmcError(f"bad fine-tuning setting: {e}") from None
    if epochs < 1:
        raise AmcError(f"--epochs must be at least 1, got {epochs}")
    target = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    with StepProgress() as progress:
        record = finetune(run_dir, config, distill=distill, teacher_weights=teacher_weights, resume=resume,
                          overwrite=overwrite, progress=progress.epoch, on_step=progress.step, device=target)
    console.print(f"fine-tuned {run_dir}: held-out top-1 {record['heldout_top1']:.4f}, test top-1 "
                  f"{record['test_top1']:.4f}; wrote model_finetuned.pt and summary.json", highlight=False)
    print(json.dumps({"run_dir": str(run_dir), **{k: record[k] for k in ("epochs", "heldout_top1", "test_top1")}}))


@app.command("iterate")
def iterate_command(
    densities: str = typer.Option(..., help="Decreasing overall densities, one stage each, e.g. 0.5,0.3,0.2."),
    model: str = typer.Option(DEFAULTS.model, help="Zoo name or tv:<torchvision name>."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint of the trained model."),
    data: str = typer.Option(DEFAULTS.data, help="Dataset: digits, cifar10, imagefolder."),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset file or folder."),
    agent: str = typer.Option(DEFAULTS.agent, help="ddpg, random, uniform or tpe."),
    episodes: int = typer.Option(100, help="Search episodes per stage."),
    lbound: float = typer.Option(0.05, help="Smallest density of any layer."),
    epochs: int = typer.Option(2, help="Masked fine-tuning epochs after each stage."),
    lr: float = typer.Option(0.01, help="Fine-tuning learning rate."),
    precision: str = typer.Option(DEFAULTS.precision, help="Scoring and training precision: fp32 or bf16."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seed."),
    out: Path = typer.Option(..., help="Directory for the stages (stage1, stage2, ...) and summary.json."),
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
                          lbound=lbound, precision=precision, seed=seed, method="fine-grained", target="params")
    result = iterative_fine_grained(config, stages, out, train_config=train_config,
                                    progress=lambda m: console.print(m, highlight=False))
    for s in result["stages"]:
        console.print(f"stage {s['stage']}: density {s['params_ratio']:.3f}, held-out top-1 "
                      f"{s['heldout_top1_before_finetune']:.4f} -> {s['heldout_top1']:.4f} after fine-tuning, "
                      f"test {s['test_top1']:.4f}, sparse file {s['sparse_bytes']} bytes", highlight=False)
    print(json.dumps({"out": str(out), "stages": result["stages"]}))


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., help="Zoo name, or a run directory of `amc search` (its pruned model)."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint (not needed for a run directory)."),
    data: str = typer.Option(..., help="Dataset: digits, cifar10, imagefolder."),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset file or folder."),
    download: bool = typer.Option(False, help="Download CIFAR-10 if it is not in --data-dir (needs network)."),
    split: str = typer.Option("test", help="val (the held-out split searches score on) or test."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
) -> None:
    """Top-1/top-5 accuracy, MACs and parameters of a model."""
    from amc.accuracy import evaluate_model

    result = evaluate_model(model, data, data_dir=data_dir, weights=weights, split=split, download=download,
                            threads=threads)
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"{result['model']} on {data} {split} ({result['images']} images): top-1 "
                      f"{result['top1']:.2f}%  top-5 {result['top5']:.2f}%  MACs {result['macs'] / 1e6:.2f}M  "
                      f"params {result['params'] / 1e6:.3f}M", highlight=False)


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="Output directory of `amc search`."),
    onnx: Path = typer.Option(..., "--onnx", help="ONNX file to write (replaced if it exists)."),
    finetuned: bool = typer.Option(False, help="Export the fine-tuned weights (after `amc finetune`)."),
    opset: int = typer.Option(17, help="ONNX opset version."),
    dynamic_batch: bool = typer.Option(True, help="Symbolic batch dimension (else fixed at 1)."),
    check_images: int = typer.Option(64, help="Held-out images on which onnxruntime must match PyTorch."),
) -> None:
    """Write a run's pruned model as ONNX, checked with onnxruntime against PyTorch on held-out images."""
    from amc import load_pruned, models
    from amc.finetune import load_finetuned
    from amc.onnx_export import check_onnx, export_onnx, require_onnx

    if check_images < 1:
        raise AmcError(f"--check-images must be at least 1, got {check_images}")
    require_onnx()  # before any work: the one-line install hint
    net = load_finetuned(run_dir) if finetuned else load_pruned(run_dir)
    info = models.model_info(net)
    inputs, described = _sample_inputs(run_dir, info, check_images)
    export_onnx(net, onnx, info.input_shape, opset=opset, dynamic_batch=dynamic_batch)
    try:
        max_abs_diff = check_onnx(net, onnx, inputs)
    except AmcError:
        onnx.unlink(missing_ok=True)  # a file that computes something else must not be left behind
        raise
    console.print(f"wrote {onnx} (opset {opset}, {'dynamic' if dynamic_batch else 'fixed'} batch); onnxruntime "
                  f"matches PyTorch on {described}: max abs diff {max_abs_diff:.2e}", highlight=False)
    print(json.dumps({"onnx": str(onnx), "max_abs_diff": max_abs_diff, "check_inputs": described,
                      "opset": opset, "dynamic_batch": dynamic_batch}))


def _sample_inputs(run_dir: Path, info, count: int):
    """`count` held-out images of the run's dataset, normalised for the model; random inputs (with a
    warning) when the data cannot be loaded here."""
    import torch

    from amc.data import batches, load_dataset
    from amc.runs import RunDir

    try:
        config = RunDir(run_dir).settings("checked on its own data")
        dataset = load_dataset(config["data"], config.get("data_dir"), seed=0)
        heldout = dataset.heldout.subset(torch.arange(min(count, len(dataset.heldout))))
        images, _ = next(batches(heldout, count, mean=info.mean, std=info.std))
        if tuple(images.shape[1:]) != tuple(info.input_shape):
            raise AmcError(f"its images are {tuple(images.shape[1:])}, the model takes {tuple(info.input_shape)}")
        return images, f"{len(images)} held-out {config['data']} images"
    except (AmcError, KeyError) as e:
        warnings.warn(f"checking on random inputs: the run's data cannot be loaded here ({e})", stacklevel=1)
        return torch.randn(count, *info.input_shape), f"{count} random inputs"


@app.command("bench")
def bench_command(
    model: str = typer.Argument(..., help="Zoo name, tv:<torchvision name>, or a run directory of `amc search`."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint of a zoo model (random init without it; "
                                           "latency hardly depends on the values)."),
    backend: str = typer.Option("torch", help="torch or onnxruntime (the model exported to ONNX first)."),
    batch: int = typer.Option(1, help="Images per forward pass."),
    threads: int = typer.Option(1, help="Intra-op threads of the backend."),
    warmup: int = typer.Option(10, help="Untimed runs first."),
    repeats: int = typer.Option(100, help="Timed runs, at least."),
    min_seconds: float = typer.Option(1.0, help="Keep timing until this many seconds of runs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Inference latency of a model on this CPU: median and 90th percentile of individually timed runs."""
    from amc import count_macs, count_params, models
    from amc.latency import check_settings, measure_latency

    check_settings(backend, batch, threads)  # before loading anything
    net = _model_or_run(model, weights)
    info = models.model_info(net)
    result = measure_latency(net, info.input_shape, backend=backend, batch=batch, threads=threads, warmup=warmup,
                             repeats=repeats, min_seconds=min_seconds)
    record = {"model": info.name, "source": model, **result.to_dict(), "macs": count_macs(net, info.input_shape),
              "params": count_params(net), "images_per_s": 1e3 * batch / result.median_ms}
    if as_json:
        print(json.dumps(record))
        return
    console.print(f"{info.name} ({model}) on {backend}, {threads} thread(s), batch {batch}: median "
                  f"{result.median_ms:.3f} ms, p90 {result.p90_ms:.3f} ms, IQR {result.iqr_ms:.3f} ms over "
                  f"{result.repeats} runs ({record['images_per_s']:.0f} images/s); MACs {record['macs'] / 1e6:.2f}M "
                  f"per image, params {record['params'] / 1e6:.3f}M; CPU {result.cpu}", highlight=False)


def _model_or_run(name: str, weights: Optional[Path]):
    """The pruned model of a run directory, else zoo model `name` (with `weights` if given)."""
    from amc import load_pruned, models

    path = Path(name)
    if path.is_dir():
        if weights is not None:
            raise AmcError("--weights applies to zoo models; a run directory carries its own weights")
        return load_pruned(path)
    if path.exists():
        raise AmcError(f"{name} is a file; pass the run directory holding it, or a zoo name with --weights {name}")
    if "/" in name or "\\" in name:
        raise AmcError(f"run directory not found: {name}; pass the --out of `amc search` or a zoo name")
    return models.create(name, weights=weights)


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="Output directory of a finished `amc search`."),
    latency: bool = typer.Option(False, help="First time the original and the pruned model (torch, 1 thread, "
                                 "batch 1, a few seconds) into latency.json."),
) -> None:
    """Figures (per-layer policy, search curve) and a self-contained report.html, written into the run."""
    from amc.report import LAYERS_FIGURE, SEARCH_FIGURE, write_report

    path = write_report(run_dir, latency=latency)
    console.print(f"wrote {path} with {LAYERS_FIGURE} and {SEARCH_FIGURE} beside it", highlight=False)
    print(json.dumps({"report": str(path), "figures": [str(path.parent / f) for f in (LAYERS_FIGURE, SEARCH_FIGURE)]}))


@app.command("prune")
def prune_command(
    policy: Path = typer.Option(..., help="policy.json of a search run (its best policy)."),
    out: Path = typer.Option(..., help="Directory for the pruned model (model.pt, model.json, summary.json)."),
    model: Optional[str] = typer.Option(None, help="Zoo name (default: the policy's model)."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint the search pruned (default: bundled weights)."),
    data: str = typer.Option(DEFAULTS.data, help="Dataset: digits, cifar10, imagefolder."),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset file or folder."),
    download: bool = typer.Option(DEFAULTS.download, help="Download CIFAR-10 if it is not in --data-dir (needs "
                                  "network)."),
    method: str = typer.Option(DEFAULTS.method, help="channel or fine-grained, as in the search."),
    group_coupled: bool = typer.Option(DEFAULTS.group_coupled, help="As in the search."),
    selection: str = typer.Option(DEFAULTS.selection, help="Channel selection, as in the search."),
    reconstruct: bool = typer.Option(DEFAULTS.reconstruct, help="Least-squares reconstruction, as in the search."),
    bn_recalibration: int = typer.Option(DEFAULTS.bn_recalibration, help="BN re-estimation batches, as in the "
                                         "search."),
    calibration_images: int = typer.Option(DEFAULTS.calibration_images, help="Calibration images, as in the search."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seed of the search (it picks the calibration images)."),
    threads: Optional[int] = typer.Option(DEFAULTS.threads, help="torch CPU threads."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
) -> None:
    """Apply a saved policy and export the pruned model exactly as `amc search` exports its best policy
    (pass the search's pruning settings to get the very same network)."""
    from amc.apply import apply_policy

    summary = apply_policy(policy, model, data, out=out, overwrite=overwrite, weights=str(weights) if weights
                           else None, data_dir=str(data_dir) if data_dir else None, download=download,
                           method=method, group_coupled=group_coupled, selection=selection, reconstruct=reconstruct,
                           bn_recalibration=bn_recalibration, calibration_images=calibration_images, seed=seed,
                           threads=threads)
    console.print(f"pruned {summary['model']} by {policy}: held-out top-1 {summary['heldout_top1']:.4f} (original "
                  f"{summary['baseline']['heldout_top1']:.4f}), test top-1 {summary['test_top1']:.4f}, MACs "
                  f"{summary['macs'] / 1e6:.2f}M ({summary['macs_ratio']:.3f}); wrote {out}/model.pt and "
                  "summary.json", highlight=False)
    print(json.dumps({"out": str(out), **{k: summary[k] for k in ("heldout_top1", "test_top1", "macs",
                                                                  "macs_ratio", "params")}}))


@app.command("models")
def models_command() -> None:
    """List the model zoo (torchvision models are reachable as tv:<name>)."""
    from amc import models
    for name in models.list_models():
        print(name)


def main() -> None:
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, category, *a, **k: f"warning: {msg}\n"
    try:
        app()
    except (AmcError, OSError) as e:
        line = one_line(e)
        if _debug["on"] or line is None:
            raise
        # escaped: messages hold "[key, ...]" lists that rich would otherwise take for markup and drop
        console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; a search can be continued with --resume --out RUN_DIR")
        sys.exit(130)


if __name__ == "__main__":
    main()
