"""The golden ResNet-20 run (racing, BN recalibration, the JPEG CIFAR-10 of ../shared): the slowest golden run, in a
file of its own so that the test workers share the golden runs (pytest-xdist hands out whole files)."""

from __future__ import annotations

import pytest

import amc
from conftest import CIFAR_NPZ, PRETRAINED, need_shared
from test_golden import _compare, _record


@pytest.mark.shared_data
@pytest.mark.slow
def test_resnet20_random_search_with_racing_and_bn_recalibration_is_unchanged(tmp_path):
    need_shared(CIFAR_NPZ)
    weights = PRETRAINED / "cifar10jpeg" / "resnet20.pt"
    need_shared(weights)
    run = tmp_path / "run"
    # lbound: pinned, as the fixture was made with 0.2 (the default now follows the ratio)
    amc.search("resnet20", "cifar10", weights=str(weights), data_dir=str(CIFAR_NPZ), out=run, agent="random",
               episodes=4, racing=True, bn_recalibration=2, calibration_images=500, heldout_limit=1000,
               ratio=0.5, lbound=0.2, seed=0)
    _compare("resnet20_random", _record(run))
