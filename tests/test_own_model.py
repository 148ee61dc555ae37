"""Bring your own model: a network amc's zoo does not know (tests/mynet.py, a timm architecture) searched,
pruned, rebuilt by `load_pruned` (from its factory or from its definition), exported and benchmarked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import amc
from amc import models
from amc.data import load_dataset
from amc.errors import AmcError
from amc.export import reshape_to
from amc.torchscript_export import check_torchscript, export_torchscript, write_checked_torchscript

from tests import mynet

REPO = Path(__file__).resolve().parents[1]
FAST = dict(agent="ddpg", episodes=3, warmup=1, calibration_images=200)  # a few episodes of a search


def amc_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "amc.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def _ok(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _images(info, count=16):
    dataset = load_dataset("digits")
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (dataset.heldout.x[:count].float() / 255 - mean) / std


@pytest.mark.slow
def test_a_factory_model_goes_through_search_prune_load_export_and_bench_on_the_cli(tmp_path):
    weights, run, pruned = tmp_path / "mynet.pt", tmp_path / "run", tmp_path / "pruned"
    _ok(amc_cli("train", "--model", "tests.mynet:build", "--data", "digits", "--epochs", "1", "--out", weights, "--json"))
    searched = _ok(amc_cli("search", "--model", "tests.mynet:build", "--weights", weights, "--episodes", 4,
                           "--warmup", 2, "--calibration-images", 200, "--out", run, "--json"))
    assert searched["macs_ratio"] <= 0.5 + 1e-9
    # the run names the factory, and where its module was imported from
    config, meta = (json.loads((run / name).read_text()) for name in ("config.json", "model.json"))
    assert config["search"]["model"] == config["model"]["name"] == meta["info"]["name"] == "tests.mynet:build"
    assert meta["info"]["import_root"] == str(REPO)
    # the run names a factory, which is code: what reads the run imports it only when asked to
    refused = amc_cli("prune", "--policy", run / "policy.json", "--weights", weights, "--out", pruned)
    assert refused.returncode == 2 and "pass --model tests.mynet:build or --trust-model-code" in refused.stderr
    assert not pruned.exists()
    _ok(amc_cli("prune", "--policy", run / "policy.json", "--weights", weights, "--calibration-images", 200,
                "--out", pruned, "--trust-model-code", "--json"))

    from_factory = amc.load_pruned(run, trust_model_code=True)
    from_definition = amc.load_pruned(run, model=mynet.build())
    applied = amc.load_pruned(pruned, trust_model_code=True)
    assert isinstance(from_definition, mynet.MyNet) and isinstance(from_factory, mynet.MyNet)
    assert models.model_info(from_definition) == models.model_info(from_factory)
    images = _images(models.model_info(from_factory))
    with torch.no_grad():
        expected = from_factory(images)
        assert torch.equal(from_definition(images), expected) and torch.equal(applied(images), expected)
    assert amc.count_params(from_factory) < amc.count_params(mynet.build())

    # exports, from another working directory (the factory's module is found through the run's record)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    onnx_wanted = _has_onnx()
    exported = _ok(amc_cli("export", run, "--torchscript", tmp_path / "net.ts", "--trust-model-code",
                           *(["--onnx", tmp_path / "net.onnx"] if onnx_wanted else []), "--json", cwd=elsewhere))
    assert exported["torchscript_max_abs_diff"] < 1e-4 and "held-out digits" in exported["check_inputs"]
    if onnx_wanted:
        assert exported["max_abs_diff"] < 1e-4 and (tmp_path / "net.onnx").is_file()
    torch.save(images, tmp_path / "images.pt")
    # a deployment loads the TorchScript file with plain torch: amc is not imported, tests.mynet is not needed
    code = ("import sys, torch; m = torch.jit.load(sys.argv[1]);"
            " torch.save(m(torch.load(sys.argv[2], weights_only=True)), sys.argv[3]);"
            " assert 'amc' not in sys.modules and 'tests.mynet' not in sys.modules")
    loaded = subprocess.run([sys.executable, "-I", "-c", code, tmp_path / "net.ts", tmp_path / "images.pt",
                             tmp_path / "out.pt"], capture_output=True, text=True, cwd=elsewhere)
    assert loaded.returncode == 0, loaded.stderr
    assert torch.allclose(torch.load(tmp_path / "out.pt", weights_only=True), expected, atol=1e-5)

    bench = _ok(amc_cli("bench", run, "--repeats", 3, "--bench-warmup", 0, "--min-seconds", 0, "--json",
                        "--trust-model-code", cwd=elsewhere))
    assert bench["model"] == "tests.mynet:build" and bench["macs"] == searched["macs"]


def _has_onnx() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("reference,message", [
    ("tests.no_such_module:build", "no module named 'tests.no_such_module'"),
    ("tests.mynet:nope", "has no attribute 'nope'"),
    ("tests.mynet:broken", "raised ValueError: the factory is broken on purpose"),
    ("tests.mynet:not_a_network", "returned a str, not a torch.nn.Module"),
    ("tests.mynet:claims_rgb", "fails on inputs of shape (3, 8, 8)"),
])
def test_factory_mistakes_are_one_line_errors(reference, message):
    with pytest.raises(AmcError, match=re.escape(message)) as error:
        models.create(reference, input_shape=(1, 8, 8))
    assert "\n" not in str(error.value)


def test_a_factory_mistake_on_the_cli_is_one_line_before_any_work(tmp_path):
    r = amc_cli("search", "--model", "tests.mynet:broken", "--episodes", 2, "--out", tmp_path / "run")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "tests.mynet:broken raised ValueError" in errors[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_a_factory_without_amc_info_takes_the_data_shape_unnormalised(tmp_path, digits):
    torch.save(mynet.build_plain().state_dict(), tmp_path / "plain.pt")
    with pytest.warns(UserWarning, match="attaches no amc_info"):
        result = amc.search("tests.mynet:build_plain", digits, out=tmp_path / "run", weights=str(tmp_path / "plain.pt"),
                            **FAST)
    info = models.model_info(amc.load_pruned(result.run_dir, trust_model_code=True))
    assert (info.input_shape, info.mean, info.std, info.num_classes) == ((1, 8, 8), (0.0,), (1.0,), 10)
    with pytest.raises(AmcError, match="attaches no amc_info.*model.amc_info = "):
        models.create("tests.mynet:build_plain")  # nothing to take the shape from


def test_a_factory_for_other_classes_than_the_data_is_refused():
    with pytest.raises(AmcError, match="predicts 10 classes but 3 are asked for"):
        models.create("tests.mynet:build", num_classes=3)


def test_an_unnamed_network_comes_back_from_its_definition(tmp_path, digits):
    net = mynet.MyNet()
    net.amc_info = models.ModelInfo("mynet", (1, 8, 8), (0.5,), (0.5,), 10)
    result = amc.search(net, digits, out=tmp_path / "run", **FAST)
    with pytest.raises(AmcError, match=r"'mynet'.*cannot rebuild it; pass its original definition, "
                                       r"amc\.load_pruned\(run, model=YourNet\(\)\)"):
        amc.load_pruned(result.run_dir)
    rebuilt = amc.load_pruned(result.run_dir, model=mynet.MyNet())
    assert models.model_info(rebuilt).name == "mynet"
    assert amc.count_macs(rebuilt, (1, 8, 8)) == result.summary["macs"]
    with pytest.raises(AmcError, match="does not fit this network"):
        amc.load_pruned(result.run_dir, model=models.create("digits_cnn"))  # another definition


def test_reshape_keeps_the_layer_classes_and_what_they_add():
    class NormAct(nn.BatchNorm2d):  # like timm's BatchNormAct2d: a norm with an activation fused in
        def __init__(self, channels):
            super().__init__(channels)
            self.act = nn.Hardswish()

        def forward(self, x):
            return self.act(super().forward(x))

    def net():
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), NormAct(8), nn.Conv2d(8, 8, 3, groups=8, padding=1),
                             nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 64, 10))

    narrow = {"0.weight": torch.zeros(5, 1, 3, 3), "0.bias": torch.zeros(5), "1.weight": torch.zeros(5),
              "1.bias": torch.zeros(5), "1.running_mean": torch.zeros(5), "1.running_var": torch.ones(5),
              "2.weight": torch.zeros(5, 1, 3, 3), "3.weight": torch.zeros(4, 5, 1, 1)}
    model = net()
    reshape_to(model, {**net().state_dict(), **narrow})
    assert isinstance(model[1], NormAct) and isinstance(model[1].act, nn.Hardswish) and model[1].num_features == 5
    assert (model[2].in_channels, model[2].out_channels, model[2].groups) == (5, 5, 5)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_torchscript_export_is_checked_and_a_wrong_file_is_removed(tmp_path):
    model = models.create("digits_cnn").train()
    inputs = torch.randn(4, 1, 8, 8)
    assert write_checked_torchscript(model, tmp_path / "m.ts", inputs) < 1e-5 and model.training
    other = models.create("digits_cnn")  # other random weights: computes something else
    with pytest.raises(AmcError, match="differs from PyTorch's"):
        check_torchscript(other, tmp_path / "m.ts", inputs)
    with pytest.raises(AmcError, match="is a directory"):
        export_torchscript(model, tmp_path, (1, 8, 8))


def test_timm_without_timm_installed_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(AmcError, match=r"pip install 'amc-compress\[timm\]'"):
        models.create("timm:resnet10t")


@pytest.mark.slow
def test_a_timm_architecture_is_searched_and_rebuilt_from_its_name(tmp_path, digits):
    pytest.importorskip("timm", reason="timm is an optional extra (pip install 'amc-compress[timm]')")
    with pytest.raises(AmcError, match="never downloads weights"):
        models.create("timm:resnet10t", pretrained=True)
    with pytest.raises(AmcError, match="did you mean: timm:resnet10t"):
        models.create("timm:resnet10")
    weights = tmp_path / "timm.pt"
    torch.save(models.create("timm:resnet10t", num_classes=10, input_shape=(1, 8, 8)).state_dict(), weights)
    result = amc.search("timm:resnet10t", digits, out=tmp_path / "run", weights=str(weights), **FAST)
    assert result.summary["macs_ratio"] <= 0.5 + 1e-9
    pruned = amc.load_pruned(result.run_dir)
    info = models.model_info(pruned)
    assert info.input_shape == (1, 8, 8) and info.kwargs == {"in_chans": 1}  # digits are grey: recorded
    assert amc.count_macs(pruned, info.input_shape) == result.summary["macs"]
    assert write_checked_torchscript(pruned, tmp_path / "timm.ts", _images(info, 8)) < 1e-4


def test_a_factory_run_is_fine_tuned_with_its_own_teacher_and_reported(tmp_path, digits):
    """The steps after a search rebuild the original from the run's record, not from amc's zoo: the distillation
    teacher of `amc finetune --distill` and the report's original architecture."""
    from amc.finetune import finetune
    from amc.report import write_report
    from amc.train import TrainConfig

    weights, run = tmp_path / "mynet.pt", tmp_path / "run"
    torch.save(mynet.build().state_dict(), weights)
    amc.search("tests.mynet:build", digits, weights=str(weights), out=run, seed=0, **FAST)
    record = finetune(run, TrainConfig(epochs=1, batch_size=256), distill=True, trust_model_code=True)
    assert record["epochs"] == 1 and 0.0 <= record["test_top1"] <= 1.0
    assert (run / "model_finetuned.pt").is_file()
    html = write_report(run, trust_model_code=True).read_text()
    assert "tests.mynet:build" in html


@pytest.mark.parametrize("module,text,message", [
    ("exits_when_called", "import sys\n\n\ndef build():\n    sys.exit(3)\n",
     "model factory exits_when_called:build called sys.exit(3) instead of returning the network"),
    ("exits_on_import", "import sys\nsys.exit('usage: exits_on_import.py DATA')\n",
     "importing exits_on_import called sys.exit('usage: exits_on_import.py DATA'); guard the module's script code"),
])
def test_a_factory_that_calls_sys_exit_is_a_one_line_error_not_a_silent_exit(tmp_path, monkeypatch, module, text,
                                                                              message):
    (tmp_path / f"{module}.py").write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AmcError, match=re.escape(message)):
        models.create(f"{module}:build", input_shape=(1, 8, 8))
