"""Shared fixtures: small real models and the optional shared data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_NPZ = SHARED_DATA / "cifar10-jpeg" / "cifar10_jpeg.npz"
PRETRAINED = SHARED_DATA / "pretrained"


def need_shared(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared test data beside the repository); not present here")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def simulated_ms(model: torch.nn.Module, input_shape, batch: int = 1) -> float:
    """A deterministic "machine": 1 ms per 10M MACs plus 2 us per layer, whatever load this machine is under."""
    from amc.cost import count_macs
    layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)) for m in model.modules())
    if len(input_shape) == 1:  # a linear layer timed alone
        macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    else:
        macs = count_macs(model, tuple(input_shape))
    return batch * macs / 1e7 + 0.002 * layers


@pytest.fixture
def simulated_timer(monkeypatch, tmp_path):
    """Replace every latency measurement amc makes (layer tables, whole networks, the latency guard) by
    `simulated_ms`, so that a test of a latency budget does not depend on how fast this machine runs now."""
    import contextlib

    import amc.latency.measure as measuring

    @contextlib.contextmanager
    def runner(model, input_shape, *, backend="torch", batch=1, threads=1):
        measuring.check_settings(backend, batch, threads)
        yield lambda: simulated_ms(model, input_shape, batch)

    def time_calls(run, *, warmup=5, repeats=50, min_seconds=0.0):
        return [run()] * max(1, repeats)

    monkeypatch.setattr(measuring, "runner", runner)
    monkeypatch.setattr(measuring, "time_calls", time_calls)
    monkeypatch.setenv("AMC_CACHE_DIR", str(tmp_path / "simulated-cache"))  # never mixed with real timings
    yield
