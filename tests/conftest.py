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
