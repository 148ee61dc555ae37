"""The accuracy of a zoo model or of a search run's pruned model on a dataset split: `evaluate_model`, behind
`amc eval`. (The scoring itself is `amc.evaluate.Evaluator`; this module sits above the zoo and the exporter.)"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from amc import models
from amc.cost import count_macs, count_params
from amc.data import Dataset, load_dataset
from amc.devices import resolve_device
from amc.errors import AmcError
from amc.evaluate import Evaluator
from amc.export import load_pruned
from amc.run_inputs import check_weights, run_dataset
from amc.runs import CONFIG_FILE, RunDir
from amc.threads import check_threads

SPLITS = ("val", "test")  # the held-out split searches score on, or test


def evaluate_model(model: str | Path, data: Dataset | str | None = None, *, data_dir: str | Path | None = None,
                   weights: str | Path | None = None, split: str = "test", download: bool = False,
                   threads: int | None = None, random_init: bool = False, trust_model_code: bool = False,
                   device: str = "auto") -> dict:
    """Top-1/top-5 accuracy (fractions in [0, 1]), MACs and parameters of zoo model `model` (with `weights`, else
    its bundled weights; a network with neither is refused unless `random_init`) or of a search run's pruned
    model (`model` is its run directory) on `data`'s `split` ("val": the held-out split searches score on, or
    "test"), on `device` (`amc.devices.resolve_device`'s names). A run's data is the default: `data` and `data_dir` replace it. A factory the run's model.json names
    is code: it is imported only with `trust_model_code=True`. Returns the record `amc eval --json`
    prints: {"model", "source", "data", "split", "images", "top1", "top5", "macs", "params", "seconds"}. Example::

        amc.accuracy.evaluate_model("runs/r56", split="test")
    """
    if split not in SPLITS:
        raise AmcError(f"--split must be val or test, got {split!r}")
    check_threads(threads)
    target = resolve_device(device)  # a device this machine lacks is refused before anything loads
    run = Path(model) if Path(model).is_dir() else None
    if run is None:
        if data is None:
            raise AmcError(f"--data is needed to evaluate zoo model {model} (a run directory carries its own)")
        check_weights(str(model), weights, random_init, doing="evaluate")
    saved_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        dataset = _dataset(run, data, data_dir, download)
        if run is not None:
            net = load_pruned(run, trust_model_code=trust_model_code)
        else:
            weights = weights if weights is not None else models.bundled_weights(str(model))
            net = models.create(str(model), num_classes=dataset.num_classes, weights=weights)
        info = models.model_info(net)
        if tuple(info.input_shape) != tuple(dataset.input_shape):
            raise AmcError(f"model expects inputs {info.input_shape} but {dataset.name} has {dataset.input_shape}; "
                           "pass a matching --data")
        images = dataset.heldout if split == "val" else dataset.test
        t0 = time.perf_counter()
        net.to(target)
        acc = Evaluator(images, info.mean, info.std, device=target).accuracy(net, (1, 5))
        return {"model": info.name, "source": str(model), "data": dataset.name, "split": split,
                "images": len(images), "top1": acc[1], "top5": acc[5],
                "macs": count_macs(net, info.input_shape), "params": count_params(net),
                "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        torch.set_num_threads(saved_threads)  # the thread count is process-wide; leave it as found


def _dataset(run: Path | None, data: Dataset | str | None, data_dir, download: bool) -> Dataset:
    """`data` as given, else the run's own (its recorded data_dir unless `data_dir` replaces it)."""
    if isinstance(data, Dataset):
        return data
    if run is not None and (data is None or data_dir is None and (run / CONFIG_FILE).is_file()
                            and data == RunDir(run).settings("evaluated").get("data")):
        return run_dataset(run, data_dir, purpose="evaluated")
    return load_dataset(data, data_dir, download=download)
