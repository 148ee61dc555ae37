"""torchvision models at 224x224 on an ImageFolder, end to end: search, export, fine-tune, bench, ONNX.

There is no ImageNet here: the folder holds random-noise images, so only the plumbing is under test
(shapes, costs, files), never accuracy.
"""

import json

import numpy as np
import pytest
import torch

import amc
from amc import count_macs, models
from amc.data import load_dataset
from amc.finetune import finetune, load_finetuned
from amc.latency import measure_latency
from amc.search import SearchConfig
from amc.train import TrainConfig


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet_like")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 2)):
        for name in ("ant", "bee", "cat"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (240, 260, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return load_dataset("imagefolder", root, cache=False)  # decoded once per module: nothing to keep


def _search(name, data, out, **kw):
    config = SearchConfig(model=name, data="imagefolder", agent="random", episodes=2, calibration_images=6,
                          points_per_image=4, threads=2, **kw)
    with pytest.warns(UserWarning, match="randomly initialised"):  # asked for, and still said
        return amc.search(config=config, out=out, data=data, random_init=True)


def test_resnet50_search_exports_a_model_whose_counted_macs_match_the_policy(tmp_path, imagefolder):
    assert imagefolder.input_shape == (3, 224, 224)
    result = _search("tv:resnet50", imagefolder, tmp_path / "r50")
    pruned = amc.load_pruned(tmp_path / "r50")
    best = max(result.episodes, key=lambda r: r["reward"])
    assert count_macs(pruned, (3, 224, 224)) == best["macs"] == result.summary["macs"]
    assert result.summary["macs_ratio"] <= 0.5 + 1e-9
    assert pruned(torch.zeros(1, 3, 224, 224)).shape == (1, 3)


def test_mobilenet_v2_search_finetune_bench_and_onnx(tmp_path, imagefolder):
    pytest.importorskip("onnxruntime")
    from amc.onnx_export import check_onnx, export_onnx

    result = _search("tv:mobilenet_v2", imagefolder, tmp_path / "mb", channel_round=8)
    run = tmp_path / "mb"
    pruned = amc.load_pruned(run)
    assert count_macs(pruned, (3, 224, 224)) == result.summary["macs"]
    assert all(c % 8 == 0 or c == full for c, full in zip(result.policy.keep, result.policy.channels))
    record = finetune(run, TrainConfig(epochs=1, batch_size=8, lr=0.01), data=imagefolder)
    assert json.loads((run / "summary.json").read_text())["finetune"]["test_top1"] == record["test_top1"]
    tuned = load_finetuned(run)
    original = models.create("tv:mobilenet_v2", num_classes=3).eval()
    fast = measure_latency(tuned, (3, 224, 224), repeats=3, warmup=1, threads=2).median_ms
    slow = measure_latency(original, (3, 224, 224), repeats=3, warmup=1, threads=2).median_ms
    assert 0 < fast and 0 < slow
    export_onnx(tuned, tmp_path / "mb.onnx", (3, 224, 224))
    inputs = torch.randn(2, 3, 224, 224)
    assert check_onnx(tuned, tmp_path / "mb.onnx", inputs) < 1e-3
