"""The commands that use a model or a run: eval, export, bench, report, prune, models."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import typer

from amc.cli.app import app
from amc.cli.options import DATASETS, FROM_RUN, JSON_HELP, THREADS_HELP, TRUST_HELP
from amc.cli.progress import console
from amc.devices import DEVICE_HELP
from amc.errors import AmcError


@app.command("eval")
def eval_command(
    run: Optional[Path] = typer.Argument(None, help="Run directory of `amc search` or `amc prune` (its pruned "
                                         "model, on its own data by default)."),
    model: Optional[str] = typer.Option(None, help="A zoo name instead of a run (or, as before, a run directory)."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint of --model (default: its bundled weights)."),
    random_init: bool = typer.Option(False, help="Evaluate --model randomly initialised when it has no weights."),
    data: Optional[str] = typer.Option(None, help="Dataset (default: the run's).", metavar=DATASETS),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset file or folder (default: the run's)."),
    download: bool = typer.Option(False, help="Download CIFAR-10 if it is not in --data-dir (needs network)."),
    split: str = typer.Option("test", help="val: the held-out split searches score on.", metavar="val|test"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    threads: Optional[int] = typer.Option(None, help=THREADS_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    trust_model_code: bool = typer.Option(False, help=TRUST_HELP),
) -> None:
    """Top-1/top-5 accuracy, MACs and parameters of a run's pruned model or of a zoo model."""
    from amc.accuracy import evaluate_model

    if (run is None) == (model is None):
        raise AmcError("pass a run directory (`amc eval RUN`) or a zoo model (`amc eval --model NAME --data DATA`), "
                       "not both" if run is not None else "pass a run directory (`amc eval RUN`) or a zoo model "
                       "(`amc eval --model NAME --data DATA`)")
    result = evaluate_model(run if run is not None else model, data, data_dir=data_dir, weights=weights,
                            split=split, download=download, threads=threads, random_init=random_init,
                            trust_model_code=trust_model_code, device=device)
    if as_json:
        print(json.dumps(result))
        return
    console.print(f"{result['source']} ({result['model']}) on {result['data']} {split} ({result['images']} images): "
                  f"top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  MACs "
                  f"{result['macs'] / 1e6:.2f}M  params {result['params'] / 1e6:.3f}M", highlight=False)


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
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    trust_model_code: bool = typer.Option(False, help=TRUST_HELP),
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
    load = load_finetuned if finetuned else load_pruned
    net = load(run_dir, trust_model_code=trust_model_code)
    info = models.model_info(net)
    inputs, described = _sample_inputs(run_dir, info, check_images)

    def say(line: str) -> None:
        if not as_json:
            console.print(line, highlight=False)

    record = {"check_inputs": described}
    if onnx is not None:
        export_onnx(net, onnx, info.input_shape, opset=opset, dynamic_batch=dynamic_batch)
        try:
            max_abs_diff = check_onnx(net, onnx, inputs)
        except AmcError:
            onnx.unlink(missing_ok=True)  # a file that computes something else must not be left behind
            raise
        say(f"wrote {onnx} (opset {opset}, {'dynamic' if dynamic_batch else 'fixed'} batch); onnxruntime "
            f"matches PyTorch on {described}: max abs diff {max_abs_diff:.2e}")
        record.update(onnx=str(onnx), max_abs_diff=max_abs_diff, opset=opset, dynamic_batch=dynamic_batch)
    if torchscript is not None:
        script_diff = write_checked_torchscript(net, torchscript, inputs)
        say(f"wrote {torchscript} (TorchScript); torch.jit.load's module matches PyTorch on {described}: "
            f"max abs diff {script_diff:.2e}")
        record.update(torchscript=str(torchscript), torchscript_max_abs_diff=script_diff)
    if as_json:
        print(json.dumps(record))


def _sample_inputs(run_dir: Path, info, count: int):
    """`count` held-out images of the run's dataset, normalised for the model; random inputs (with a
    warning) when the data cannot be loaded here."""
    import torch

    from amc.data import batches
    from amc.run_inputs import run_dataset
    from amc.runs import RunDir

    try:
        config = RunDir(run_dir).settings("checked on its own data")
        dataset = run_dataset(run_dir, purpose="checked on its own data")
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
    model: str = typer.Argument(..., help="Zoo name, tv:/timm:<name>, package.module:function, or a run "
                                "directory of `amc search`."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint of a zoo model (default: its bundled weights)."),
    random_init: bool = typer.Option(False, help="Time a zoo model without weights, randomly initialised (latency "
                                     "hardly depends on the values)."),
    backend: str = typer.Option("torch", help="The runtime (onnxruntime: the model exported to ONNX first).",
                                metavar="torch|onnxruntime"),
    batch: int = typer.Option(1, help="Images per forward pass."),
    threads: int = typer.Option(1, help="Intra-op threads of the backend (latency is measured on 1 unless asked, as "
                                "`amc search --latency-threads`)."),
    bench_warmup: int = typer.Option(10, "--bench-warmup", help="Untimed runs first."),
    deprecated_warmup: Optional[int] = typer.Option(None, "--warmup", hidden=True, help="Old name of --bench-warmup."),
    repeats: int = typer.Option(100, help="Timed runs, at least."),
    min_seconds: float = typer.Option(1.0, help="Keep timing until this many seconds of runs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    trust_model_code: bool = typer.Option(False, help=TRUST_HELP),
) -> None:
    """Inference latency of a model on this CPU: median and 90th percentile of individually timed runs."""
    from amc import count_macs, count_params, models
    from amc.latency import check_settings, measure_latency

    from amc.run_inputs import check_weights

    check_settings(backend, batch, threads)  # before loading anything
    warmup = deprecated_warmup if deprecated_warmup is not None else bench_warmup
    if not Path(model).exists() and not any(c in model for c in "/\\"):  # a zoo name (paths: _model_or_run)
        check_weights(model, weights, random_init, doing="time")
        weights = weights if weights is not None else models.bundled_weights(model)
    net = _model_or_run(model, weights, trust_model_code)
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


def _model_or_run(name: str, weights: Optional[Path], trust_model_code: bool = False):
    """The pruned model of a run directory, else model `name` (zoo, tv:/timm:, or a factory reference; with
    `weights` if given)."""
    from amc import load_pruned, models

    path = Path(name)
    if path.is_dir():
        if weights is not None:
            raise AmcError("--weights applies to zoo models; a run directory carries its own weights")
        return load_pruned(path, trust_model_code=trust_model_code)
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
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    trust_model_code: bool = typer.Option(False, help=TRUST_HELP),
) -> None:
    """Figures (per-layer policy, search curve) and a self-contained report.html, written into the run."""
    from amc.report import LAYERS_FIGURE, SEARCH_FIGURE, write_report

    path = write_report(run_dir, latency=latency, trust_model_code=trust_model_code)
    if not as_json:
        console.print(f"wrote {path} with {LAYERS_FIGURE} and {SEARCH_FIGURE} beside it", highlight=False)
        return
    print(json.dumps({"report": str(path), "figures": [str(path.parent / f) for f in (LAYERS_FIGURE, SEARCH_FIGURE)]}))


@app.command("prune")
def prune_command(
    run: Optional[Path] = typer.Argument(None, help="Run directory of `amc search`: its best policy, pruned with "
                                         "its own settings (the search's export, rebuilt)."),
    out: Path = typer.Option(..., help="Directory for the pruned model (model.pt, model.json, summary.json)."),
    policy: Optional[Path] = typer.Option(None, help="A policy.json (default: RUN's); a run's own policy.json "
                                          "brings that run's settings."),
    model: Optional[str] = typer.Option(None, help="Zoo name (outside a run: the policy's model). " + FROM_RUN),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint the search pruned. " + FROM_RUN),
    random_init: bool = typer.Option(False, help="Prune a randomly initialised model when no weights are given, "
                                     "recorded or bundled."),
    data: Optional[str] = typer.Option(None, help=FROM_RUN, metavar=DATASETS),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset file or folder. " + FROM_RUN),
    download: Optional[bool] = typer.Option(None, help="Download CIFAR-10 if it is not in --data-dir. " + FROM_RUN),
    method: Optional[str] = typer.Option(None, help=FROM_RUN, metavar="channel|fine-grained"),
    group_coupled: Optional[bool] = typer.Option(None, help=FROM_RUN),
    selection: Optional[str] = typer.Option(None, help="Channel selection. " + FROM_RUN, metavar="magnitude|l2|greedy"),
    reconstruct: Optional[bool] = typer.Option(None, help="Least-squares reconstruction. " + FROM_RUN),
    bn_recalibration: Optional[int] = typer.Option(None, help="BN re-estimation batches. " + FROM_RUN),
    calibration_images: Optional[int] = typer.Option(None, help="Calibration images. " + FROM_RUN),
    seed: Optional[int] = typer.Option(None, help="Seed of the search (it picks the calibration images). " + FROM_RUN),
    threads: Optional[int] = typer.Option(None, help=THREADS_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP + " " + FROM_RUN),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    trust_model_code: bool = typer.Option(False, help=TRUST_HELP),
) -> None:
    """Apply a saved policy and export the pruned model exactly as `amc search` exports its best policy: `amc
    prune RUN --out DIR` rebuilds the search's export from the run's own settings."""
    from amc.apply import apply_policy

    if run is None and policy is None:
        raise AmcError("pass the run whose policy to apply (`amc prune RUN --out DIR`) or --policy FILE")
    given = dict(model=model, weights=str(weights) if weights else None, data=data,
                 data_dir=str(data_dir) if data_dir else None, download=download, method=method,
                 group_coupled=group_coupled, selection=selection, reconstruct=reconstruct,
                 bn_recalibration=bn_recalibration, calibration_images=calibration_images, seed=seed, threads=threads,
                 device=device)
    given = {k: v for k, v in given.items() if v is not None}
    source = policy if policy is not None else run
    config = None
    if run is not None and policy is not None:  # another policy, this run's settings
        from amc.models.factory import trusting
        from amc.run_inputs import run_config
        with trusting(trust_model_code):
            config = run_config(run, "pruned by a policy", **given)
    summary = apply_policy(source, out=out, config=config, overwrite=overwrite, random_init=random_init,
                           trust_model_code=trust_model_code, **given)
    if as_json:
        print(json.dumps({"out": str(out), **{k: summary[k] for k in ("heldout_top1", "test_top1", "macs",
                                                                      "macs_ratio", "params")}}))
        return
    console.print(f"pruned {summary['model']} by {summary['policy_source']}: held-out top-1 "
                  f"{100 * summary['heldout_top1']:.2f}% (original {100 * summary['baseline']['heldout_top1']:.2f}%), "
                  f"test top-1 {100 * summary['test_top1']:.2f}%, MACs {summary['macs'] / 1e6:.2f}M "
                  f"({summary['macs_ratio']:.3f}); wrote {out}/model.pt and summary.json", highlight=False)


@app.command("models")
def models_command() -> None:
    """List the model zoo (any torchvision model is reachable as tv:<name>, any timm one as timm:<name>, your own
    network as package.module:function)."""
    from amc import models
    for name in models.list_models():
        print(name)
