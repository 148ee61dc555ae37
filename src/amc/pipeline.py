"""What a search, or applying a saved policy, builds before pruning anything: data, model, graph, scorer.

`prepare(config)` is the pipeline's front half in one call: load the dataset and the model (checked against
each other), trace the prunable decisions, and build the scorer. Benchmarks call it to set up exactly what
`amc search` sets up; the search calls its two halves (`load_inputs`, cheap, then `with_scorer`) so that it
can check everything else between them, before the first expensive step.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from amc import models
from amc.config import SearchConfig
from amc.data import Dataset, load_dataset
from amc.devices import resolve_device
from amc.errors import AmcError
from amc.evaluate import Evaluator
from amc.graph import LayerGraph
from amc.pruning.fine_grained import WeightGraph
from amc.scoring import Scorer, build_scorer


@dataclass
class Setup:
    """The loaded inputs of a run and the scorer built over them."""

    dataset: Dataset
    model: nn.Module
    info: models.ModelInfo
    graph: LayerGraph | WeightGraph
    scorer: Scorer
    weights: str | None             # the checkpoint the model was loaded from (given or bundled)
    device: torch.device            # where the model, the scorer's images and statistics live

    def baseline_top1(self) -> float:
        """fp32 held-out top-1 of the original model, on the whole held-out split."""
        return Evaluator(self.dataset.heldout, self.info.mean, self.info.std,
                         device=self.device).top1(copy.deepcopy(self.model))


def run_device(config: SearchConfig) -> torch.device:
    """The device a run with `config` works on, or a one-line error where this machine lacks it. "auto" takes
    a GPU where there is one, except where a run cannot use one: a latency budget is measured on the CPU, and
    Ray workers (`--workers`) run on the CPU or on CUDA GPUs (Ray schedules no other accelerator here); another
    device named for them is refused."""
    device = resolve_device(config.device)
    cpu_only = "--target latency runs on the CPU only" if config.target == "latency" else \
        "--workers > 1 runs on the CPU or CUDA GPUs only" if config.workers > 1 and device.type != "cuda" else None
    if config.gpus_per_worker is not None and device.type != "cuda":
        raise AmcError(f"--gpus-per-worker needs a CUDA device, but this run works on {device}; pass --device cuda "
                       "or drop --gpus-per-worker")
    if cpu_only and device.type != "cpu":
        if config.device == "auto":
            return torch.device("cpu")
        raise AmcError(f"{cpu_only}; pass --device cpu (or auto)")
    return device


def seed_and_threads(config: SearchConfig) -> None:
    """What a run's reproducibility rests on, set the same way for a search and for applying a policy."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)


def load_model(config: SearchConfig, dataset: Dataset) -> tuple[nn.Module, str | None]:
    """The model to prune and the checkpoint it was loaded from (given, bundled, or None)."""
    weights = config.weights if config.weights is not None else models.bundled_weights(config.model)
    # input_shape: what a timm CNN or a factory without amc_info is fed (the zoo states its own)
    model = models.create(config.model, num_classes=dataset.num_classes, input_shape=dataset.input_shape)
    expected = models.model_info(model).input_shape
    if tuple(expected) != tuple(dataset.input_shape):
        raise AmcError(f"model {config.model} expects inputs {expected} but dataset {config.data} has "
                       f"{tuple(dataset.input_shape)}; pick a matching --model or --data")
    if weights is None:
        warnings.warn(f"no --weights given for {config.model}: searching a randomly initialised model "
                      "(fine for checking structure, meaningless for accuracy)", stacklevel=4)
    else:
        models.load_weights(model, weights)
    return model.eval(), None if weights is None else str(weights)


@dataclass
class Inputs:
    """What a run loads before anything expensive: the dataset, the model (checked against each other) and its
    traced prunable layers. Everything a user can get wrong in them is refused by the time this exists."""

    dataset: Dataset
    model: nn.Module
    info: models.ModelInfo
    graph: LayerGraph | WeightGraph
    weights: str | None
    device: torch.device


def load_inputs(config: SearchConfig, model: nn.Module | None = None, dataset: Dataset | None = None, *,
                device: torch.device | None = None) -> Inputs:
    """Load data and model (unless given), check them against each other, trace the prunable layers, and move
    the model to `device` (default: `run_device(config)`)."""
    if device is None:
        device = run_device(config)
    if dataset is None:
        dataset = load_dataset(config.data, config.data_dir, seed=0, download=config.download,
                               max_memory_gb=config.max_memory_gb)
    if len(dataset.heldout) == 0:
        raise AmcError(f"held-out split of {config.data} is empty (candidates are scored on it); use a dataset "
                       "with at least two training images per class")
    if len(dataset.heldout.y.unique()) < 2:
        raise AmcError(f"held-out split of {config.data} holds a single class: every candidate would score 0% or "
                       "100% on it, so none can be ranked; use a dataset with at least two classes")
    model, weights = (model, config.weights) if model is not None else load_model(config, dataset)
    broken = models.non_finite(model.state_dict())
    if broken:  # a user's own nn.Module (a checkpoint is checked as it loads)
        raise AmcError(f"the model holds non-finite values (NaN or inf) in {broken[0]}; every score of it would be "
                       "meaningless: pass a model whose weights are all finite")
    info = models.model_info(model)
    model.eval()
    graph = WeightGraph(model, info.input_shape) if config.method == "fine-grained" else \
        LayerGraph(model, info.input_shape, group_coupled=config.group_coupled)
    if config.threads is None and graph.total_macs < 10_000_000:
        # tiny convolutions gain nothing from intra-op threads and lose a lot when another job shares the
        # cores (digits_cnn: 50 ms per episode on one thread against ~700 ms on two, measured here)
        torch.set_num_threads(1)
    model.to(device)  # in place, after tracing on the CPU: the graph refers to the same modules
    return Inputs(dataset, model, info, graph, weights, device)


def with_scorer(inputs: Inputs, config: SearchConfig) -> Setup:
    """The scorer over `inputs` (the first expensive step: it samples the calibration features)."""
    return Setup(inputs.dataset, inputs.model, inputs.info, inputs.graph,
                 build_scorer(inputs.model, inputs.graph, inputs.dataset, config, device=inputs.device),
                 inputs.weights, inputs.device)


def prepare(config: SearchConfig, model: nn.Module | None = None, dataset: Dataset | None = None, *,
            device: torch.device | None = None) -> Setup:
    """Load data and model (unless given), trace the prunable layers, and build the scorer, on `device`
    (default: `run_device(config)`)."""
    return with_scorer(load_inputs(config, model, dataset, device=device), config)


__all__ = ["Inputs", "Setup", "load_inputs", "load_model", "prepare", "run_device", "seed_and_threads",
           "with_scorer"]
