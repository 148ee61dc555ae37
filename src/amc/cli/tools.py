"""The commands that use a model or a run: eval, export, bench, report, prune, models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import typer

from amc.cli.app import app
from amc.cli.progress import console
from amc.config import DEFAULTS
from amc.errors import AmcError


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
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="ONNX file to write (replaced if it exists)."),
    torchscript: Optional[Path] = typer.Option(None, "--torchscript", help="TorchScript file to write (replaced if "
                                               "it exists); plain torch.jit.load runs it, without amc."),
    finetuned: bool = typer.Option(False, help="Export the fine-tuned weights (after `amc finetune`)."),
    opset: int = typer.Option(17, help="ONNX opset version."),
    dynamic_batch: bool = typer.Option(True, help="Symbolic batch dimension (else fixed at 1)."),
    check_images: int = typer.Option(64, help="Held-out images on which each file must match PyTorch."),
) -> None:
    """Write a run's pruned model as ONNX (checked with onnxruntime) and/or TorchScript (checked with
    torch.jit.load), each against PyTorch's outputs on held-out images."""
    from amc import load_pruned, models
    from amc.finetune import load_finetuned
    from amc.onnx_export import check_onnx, export_onnx, require_onnx
    from amc.torchscript_export import write_checked_torchscript

    if onnx is None and torchscript is None:
        raise AmcError("nothing to write: pass --onnx FILE and/or --torchscript FILE")
    if check_images < 1:
        raise AmcError(f"--check-images must be at least 1, got {check_images}")
    if onnx is not None:
        require_onnx()  # before any work: the one-line install hint
    net = load_finetuned(run_dir) if finetuned else load_pruned(run_dir)
    info = models.model_info(net)
    inputs, described = _sample_inputs(run_dir, info, check_images)
    record = {"check_inputs": described}
    if onnx is not None:
        export_onnx(net, onnx, info.input_shape, opset=opset, dynamic_batch=dynamic_batch)
        try:
            max_abs_diff = check_onnx(net, onnx, inputs)
        except AmcError:
            onnx.unlink(missing_ok=True)  # a file that computes something else must not be left behind
            raise
        console.print(f"wrote {onnx} (opset {opset}, {'dynamic' if dynamic_batch else 'fixed'} batch); onnxruntime "
                      f"matches PyTorch on {described}: max abs diff {max_abs_diff:.2e}", highlight=False)
        record.update(onnx=str(onnx), max_abs_diff=max_abs_diff, opset=opset, dynamic_batch=dynamic_batch)
    if torchscript is not None:
        script_diff = write_checked_torchscript(net, torchscript, inputs)
        console.print(f"wrote {torchscript} (TorchScript); torch.jit.load's module matches PyTorch on {described}: "
                      f"max abs diff {script_diff:.2e}", highlight=False)
        record.update(torchscript=str(torchscript), torchscript_max_abs_diff=script_diff)
    print(json.dumps(record))


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
    model: str = typer.Argument(..., help="Zoo name, tv:/timm:<name>, package.module:function, or a run directory "
                                "of `amc search`."),
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
    """The pruned model of a run directory, else model `name` (zoo, tv:/timm:, or a factory reference; with
    `weights` if given)."""
    from amc import load_pruned, models

    path = Path(name)
    if path.is_dir():
        if weights is not None:
            raise AmcError("--weights applies to zoo models; a run directory carries its own weights")
        return load_pruned(path)
    if path.exists():
        raise AmcError(f"{name} is a file; pass the run directory holding it, or a zoo name with --weights {name}")
    if "/" in name or "\\" in name:
        raise AmcError(f"run directory not found: {name}; pass the --out of `amc search`, a zoo name or "
                       "package.module:function")
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
    """List the model zoo (any torchvision model is reachable as tv:<name>, any timm one as timm:<name>, your own
    network as package.module:function)."""
    from amc import models
    for name in models.list_models():
        print(name)
