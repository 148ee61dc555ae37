"""The accuracy of a zoo model or of a search run's pruned model on a dataset split: `evaluate_model`, behind
`amc eval`. (The scoring itself is `amc.evaluate.Evaluator`; this module sits above the zoo and the exporter.)"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from amc import models
from amc.cost import count_macs, count_params
from amc.data import Dataset, load_dataset
from amc.errors import AmcError
from amc.evaluate import Evaluator
from amc.export import load_pruned

SPLITS = ("val", "test")  # the held-out split searches score on, or test


def evaluate_model(model: str | Path, data: Dataset | str, *, data_dir: str | Path | None = None,
                   weights: str | Path | None = None, split: str = "test", download: bool = False,
                   threads: int | None = None) -> dict:
    """Top-1/top-5 accuracy (in %), MACs and parameters of zoo model `model` (with `weights`; random init, with a
    warning, without) or of a search run's pruned model (`model` is its run directory) on `data`'s `split`
    ("val": the held-out split searches score on, or "test"). Returns the record `amc eval --json` prints:
    {"model", "split", "images", "top1", "top5", "macs", "params", "seconds"}. Example::

        amc.accuracy.evaluate_model("runs/r56", "cifar10", data_dir="cifar10.npz")
    """
    if split not in SPLITS:
        raise AmcError(f"--split must be val or test, got {split!r}")
    saved_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        dataset = data if isinstance(data, Dataset) else load_dataset(data, data_dir, download=download)
        if Path(model).is_dir():
            net = load_pruned(model)
        else:
            net = models.create(str(model), num_classes=dataset.num_classes, weights=weights)
            if weights is None:
                warnings.warn(f"no --weights: evaluating a randomly initialised {model}", stacklevel=2)
        info = models.model_info(net)
        if tuple(info.input_shape) != tuple(dataset.input_shape):
            name = data if isinstance(data, str) else dataset.name
            raise AmcError(f"model expects inputs {info.input_shape} but {name} has {dataset.input_shape}")
        images = dataset.heldout if split == "val" else dataset.test
        t0 = time.perf_counter()
        acc = Evaluator(images, info.mean, info.std).accuracy(net, (1, 5))
        return {"model": info.name, "split": split, "images": len(images),
                "top1": round(100 * acc[1], 3), "top5": round(100 * acc[5], 3),
                "macs": count_macs(net, info.input_shape), "params": count_params(net),
                "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        torch.set_num_threads(saved_threads)  # the thread count is process-wide; leave it as found
