"""The device a run works on (`--device`, `device=`): names checked and resolved in one line, every tensor of an
episode on the configured device, and `device="cpu"` the very run the default is on a machine without a GPU.
The checks run on the CPU; they assert that the device-generic path keeps everything where it is told."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import amc
from amc import models
from amc.config import SearchConfig
from amc.data import load_dataset
from amc.devices import resolve_device
from amc.errors import AmcError
from amc.pipeline import prepare

NO_GPU = not torch.cuda.is_available() and not (getattr(torch.backends, "mps", None) is not None
                                                 and torch.backends.mps.is_available())
SETTINGS = dict(episodes=4, warmup=2, calibration_images=200, seed=0, ratio=0.5, lbound=0.2)
AMC_SOURCE = str(Path(amc.__file__).parent)
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.eye, torch.arange, torch.tensor, torch.rand,
             torch.randn, torch.randint, torch.randperm, torch.linspace}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_device_names_resolve_or_are_refused_in_one_line():
    assert resolve_device("cpu") == torch.device("cpu")
    if NO_GPU:
        assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(AmcError, match="unknown device 'gpu7'; pass --device auto, cpu, cuda, cuda:N, mps"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(AmcError, match="'cuda' is not available on this machine; pass --device cpu"):
            resolve_device("cuda")
    else:
        with pytest.raises(AmcError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_a_device_name_is_checked_with_the_settings():
    assert SearchConfig(device="cuda:1").device == "cuda:1"  # availability is the run's to check, not the config's
    for bad in ("gpu", "cuda:", "CPU"):
        with pytest.raises(AmcError, match="unknown device"):
            SearchConfig(device=bad)
    with pytest.raises(AmcError, match="--device must be a string"):
        SearchConfig(device=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the device")
def test_a_missing_device_is_refused_before_anything_loads(tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded inputs before checking the device")

    monkeypatch.setattr(importlib.import_module("amc.search"), "load_inputs", no_loading)
    with pytest.raises(AmcError, match="not available on this machine; pass --device cpu"):
        amc.search(out=tmp_path / "run", device="cuda", **SETTINGS)
    assert not (tmp_path / "run").exists()


def test_a_gpu_named_for_a_cpu_only_setting_is_refused():
    from amc.pipeline import run_device
    config = SearchConfig(device="cpu", workers=2)
    assert run_device(config) == torch.device("cpu")
    if torch.cuda.is_available():
        with pytest.raises(AmcError, match="--target latency runs on the CPU only"):
            run_device(SearchConfig(device="cuda", target="latency"))
        assert run_device(SearchConfig(workers=2)) == torch.device("cuda")  # Ray actors take a share of a GPU


def test_ray_actors_each_take_one_cpu_and_a_share_of_a_gpu():
    from amc.parallel import actor_resources
    assert actor_resources(4, on_gpu=False, gpus=0) == {"num_cpus": 1}
    assert actor_resources(4, on_gpu=True, gpus=1) == {"num_cpus": 1, "num_gpus": 0.25}  # four to a card
    assert actor_resources(2, on_gpu=True, gpus=4) == {"num_cpus": 1, "num_gpus": 1.0}   # never more than one
    assert actor_resources(8, on_gpu=True, gpus=2, gpus_per_worker=0.25) == {"num_cpus": 1, "num_gpus": 0.25}
    with pytest.raises(AmcError, match="need 4 GPUs but the cluster has 2; pass --gpus-per-worker 0.5"):
        actor_resources(4, on_gpu=True, gpus=2, gpus_per_worker=1.0)
    with pytest.raises(AmcError, match="no GPU for the actors; pass --device cpu"):
        actor_resources(2, on_gpu=True, gpus=0)


def test_a_gpu_share_is_refused_without_workers_or_a_cuda_device():
    from amc.pipeline import run_device
    for settings in ({"gpus_per_worker": 0.5}, {"workers": 2, "gpus_per_worker": 1.5},
                     {"workers": 2, "gpus_per_worker": 0.0}):
        with pytest.raises(AmcError, match="--gpus-per-worker must be in"):
            SearchConfig(**settings)
    if not torch.cuda.is_available():
        with pytest.raises(AmcError, match="--gpus-per-worker needs a CUDA device, but this run works on cpu"):
            run_device(SearchConfig(workers=2, gpus_per_worker=0.5))


class OutputDevices(TorchDispatchMode):
    """Every device an operator's output tensor was placed on, while active."""

    def __init__(self):
        super().__init__()
        self.devices: dict[str, set[str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.devices.setdefault(str(t.device), set()).add(str(func))
        return out


class UnplacedFactories(TorchFunctionMode):
    """amc's own calls of a tensor factory that name no device: on another device they would land on the CPU."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and "device" not in kwargs:
            frame = sys._getframe(1)
            while frame is not None and f"{os.sep}torch{os.sep}" in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(AMC_SOURCE):
                self.calls.append(f"{func.__name__} at {frame.f_code.co_filename}:{frame.f_lineno}")
        return func(*args, **kwargs)


def test_every_tensor_an_episode_creates_lives_on_the_configured_device(digits):
    setup = prepare(SearchConfig(device="cpu", **SETTINGS), dataset=digits)
    assert setup.device == torch.device("cpu")
    stats = next(iter(setup.scorer.stats.values()))
    placed = {"model": {p.device for p in setup.model.parameters()}, "gram": {stats.gram.device},
              "calibration": {setup.scorer.calibration.device},
              "recalibration": {x.device for x in setup.scorer.recalibration},
              "heldout": {t.device for batch in setup.scorer.evaluator._batches for t in batch}}
    assert all(devices == {torch.device("cpu")} for devices in placed.values()), placed
    uniform = [max(1, c // 2) for c in setup.graph.full_keep()]
    with OutputDevices() as outputs, UnplacedFactories() as factories:
        setup.scorer(uniform)  # prune (selection, least squares, surgery), recalibrate BN, score
        setup.scorer.build([max(1, c // 3) for c in setup.graph.full_keep()])
    assert set(outputs.devices) == {"cpu"}, {d: sorted(ops)[:5] for d, ops in outputs.devices.items()}
    assert factories.calls == [], factories.calls


def test_heldout_and_calibration_images_stay_uint8_and_read_as_normalised_float_batches(digits):
    """A quarter of the memory of float batches (what lets 10,000 images at 224 px sit on a GPU), same scores."""
    from amc.data import batches
    from amc.evaluate import Evaluator
    from amc.scoring import calibration_images

    model = models.create("digits_cnn", num_classes=10)
    info = models.model_info(model)
    evaluator = Evaluator(digits.heldout, info.mean, info.std, batch_size=64, device="cpu")
    assert {x.dtype for x, _ in evaluator._batches} == {torch.uint8}
    assert sum(x.numel() for x, _ in evaluator._batches) == digits.heldout.x.numel()
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x).argmax(1) == y).sum())
                   for x, y in batches(digits.heldout, 64, mean=info.mean, std=info.std))
    assert evaluator.top1(model) == hits / len(digits.heldout)
    assert 0 < hits < len(digits.heldout)  # a random network: neither all right nor all wrong

    calibration = calibration_images(digits, model, 50, seed=0, device="cpu")
    assert calibration.pixels.dtype == torch.uint8 and len(calibration) == 50
    chosen = digits.train.subset(digits.calibration_indices(50, 0))
    assert torch.equal(calibration[0:50], next(batches(chosen, 50, mean=info.mean, std=info.std))[0])


def test_every_tensor_of_a_whole_search_lives_on_the_configured_device(tmp_path, digits):
    with OutputDevices() as outputs:
        amc.search(out=tmp_path / "run", data=digits, device="cpu", **SETTINGS)
    assert set(outputs.devices) == {"cpu"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["search"]["device"] == "cpu" and config["device"] == "cpu"


def test_the_statistics_and_ranking_name_their_device(digits):
    """Sampling the calibration statistics and the greedy ranking place every tensor they make explicitly (the
    graph is traced and the images are batched on the CPU, before they move)."""
    from amc.pruning import ChannelPruner, collect_stats
    setup = prepare(SearchConfig(device="cpu", **SETTINGS), dataset=digits)
    with UnplacedFactories() as factories:
        stats = collect_stats(setup.model, setup.graph, setup.scorer.calibration, seed=0)
        ChannelPruner(setup.model, setup.graph, stats, selection="greedy")
    # the one CPU draw: calibration positions come from a CPU generator, the same on every device
    assert [c for c in factories.calls if "features.py" not in c] == [], factories.calls


@pytest.mark.skipif(not NO_GPU, reason="the default device is a GPU here")
def test_device_cpu_given_is_the_default_run(tmp_path, digits):
    runs = {}
    for name, extra in (("default", {}), ("cpu", {"device": "cpu"})):
        result = amc.search(out=tmp_path / name, data=digits, **SETTINGS, **extra)
        runs[name] = ([(r["keep"], r["reward"], r["accuracy"]) for r in result.episodes],
                      (tmp_path / name / "policy.json").read_text(), result.summary["test_top1"])
    assert runs["cpu"] == runs["default"]
    assert json.loads((tmp_path / "default" / "config.json").read_text())["device"] == "cpu"


@pytest.mark.parametrize("args, expect", [
    (["--device", "gpu7"], "error: unknown device 'gpu7'; pass --device auto, cpu, cuda, cuda:N, mps"),
    (["--device", "cuda"], "error: device 'cuda' is not available on this machine; pass --device cpu (or auto)"),
])
def test_amc_search_refuses_a_missing_device_in_one_line(tmp_path, args, expect):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, on any machine
    r = subprocess.run([sys.executable, "-m", "amc.cli", "search", *args, "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [expect]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_amc_train_trains_on_the_device_named(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import amc.train
    from amc.cli import app

    out = tmp_path / "digits.pt"
    devices = []
    real_train = amc.train.train
    monkeypatch.setattr(amc.train, "train", lambda *a, device, **k: devices.append(device) or real_train(
        *a, device=device, **k))
    trained = CliRunner().invoke(app, ["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1",
                                       "--out", str(out), "--json", "--device", "cpu"])
    assert trained.exit_code == 0, trained.stderr
    assert devices == [torch.device("cpu")]
    record = json.loads(trained.stdout)
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["test_top1"] == record["test_top1"]
