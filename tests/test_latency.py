"""Latency measurement, ONNX export and the `amc bench` / `amc export` commands, on small real models."""

import json
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import amc
from amc import cli, count_macs, models
from amc.data import batches, load_dataset
from amc.errors import AmcError
from amc.latency import cpu_name, measure_latency
from amc.onnx_export import check_onnx, export_onnx, ort_session
from amc.search import SearchConfig

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits):
    """A finished search on digits: the bundled CNN pruned uniformly to half its MACs."""
    out = tmp_path_factory.mktemp("latency") / "run"
    amc.search(config=SearchConfig(agent="uniform", episodes=1, calibration_images=200, seed=0), out=out, data=digits)
    return out


def _heldout_images(digits, info, n=64):
    images, _ = next(batches(digits.heldout, n, mean=info.mean, std=info.std))
    return images


def _resnet20_with_nontrivial_norms():
    """Untrained resnet20 whose BatchNorms do something (the exporter folds them into the convs)."""
    model = models.create("resnet20")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


class _Recorder(nn.Module):
    """Records, per forward pass, what the measurement promised: threads, inference mode, eval, input shape."""

    def __init__(self, sleep_s: float = 0.0):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.sleep_s = sleep_s
        self.seen = set()

    def forward(self, x):
        self.seen.add((torch.get_num_threads(), torch.is_inference_mode_enabled(), self.training, tuple(x.shape)))
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return self.linear(x)


# --- ONNX export ---------------------------------------------------------------------------------------------

def test_onnx_of_a_pruned_model_matches_torch_on_real_images(run_dir, digits, tmp_path):
    pruned = amc.load_pruned(run_dir)
    original = models.create("digits_cnn")
    assert count_macs(pruned, (1, 8, 8)) < count_macs(original, (1, 8, 8))  # really a pruned network
    path = export_onnx(pruned, tmp_path / "pruned.onnx", (1, 8, 8))
    images = _heldout_images(digits, models.model_info(pruned))
    assert check_onnx(pruned, path, images) < 1e-4
    # the file holds the pruned network itself: its outputs agree with the pruned model's predictions
    session = ort_session(path)
    logits = session.run(None, {"input": images[:5].numpy()})[0]
    assert logits.shape == (5, 10)
    with torch.no_grad():
        assert (logits.argmax(1) == pruned(images[:5]).argmax(1).numpy()).all()


def test_onnx_of_resnet20_matches_torch_with_dynamic_and_fixed_batch(tmp_path):
    model = _resnet20_with_nontrivial_norms()
    inputs = torch.randn(6, 3, 32, 32)
    dynamic = export_onnx(model, tmp_path / "dynamic.onnx", (3, 32, 32))
    fixed = export_onnx(model, tmp_path / "fixed.onnx", (3, 32, 32), dynamic_batch=False)
    assert check_onnx(model, dynamic, inputs) < 1e-4
    assert check_onnx(model, fixed, inputs) < 1e-4  # run one image at a time
    assert ort_session(fixed).get_inputs()[0].shape == [1, 3, 32, 32]
    assert isinstance(ort_session(dynamic).get_inputs()[0].shape[0], str)


def test_check_onnx_rejects_a_file_that_computes_something_else(tmp_path):
    model = _resnet20_with_nontrivial_norms()
    path = export_onnx(model, tmp_path / "r20.onnx", (3, 32, 32))
    with torch.no_grad():
        model.linear.bias += 0.5
    with pytest.raises(AmcError, match="differs from PyTorch"):
        check_onnx(model, path, torch.randn(2, 3, 32, 32))


def test_export_leaves_the_train_mode_and_refuses_a_directory(tmp_path):
    model = models.create("digits_cnn").train()
    export_onnx(model, tmp_path / "m.onnx", (1, 8, 8))
    assert model.training and (tmp_path / "m.onnx").is_file() and not (tmp_path / "m.onnx.partial").exists()
    with pytest.raises(AmcError, match="is a directory"):
        export_onnx(model, tmp_path, (1, 8, 8))


# --- latency -------------------------------------------------------------------------------------------------

def test_torch_latency_uses_the_requested_setting_and_restores_threads():
    model = _Recorder().train()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = measure_latency(model, (4,), backend="torch", batch=3, threads=1, warmup=2, repeats=7)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert model.seen == {(1, True, False, (3, 4))}  # 1 thread, inference mode, eval, [batch, *shape]
    assert model.training
    assert (result.backend, result.batch, result.threads, result.input_shape) == ("torch", 3, 1, (4,))
    assert result.repeats == 7 and result.onnxruntime_version is None and result.cpu == cpu_name() != ""
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert result.std_ms >= 0 and result.iqr_ms >= 0


def test_min_seconds_keeps_timing_and_times_are_in_milliseconds():
    result = measure_latency(_Recorder(sleep_s=0.005), (4,), warmup=0, repeats=1, min_seconds=0.03)
    assert result.median_ms >= 5.0                     # each run sleeps 5 ms
    assert result.repeats >= 2 and result.repeats * result.mean_ms >= 30.0


def test_onnxruntime_latency_of_the_digits_cnn_and_of_a_single_linear_layer():
    model = models.create("digits_cnn", weights=models.bundled_weights("digits_cnn")).train()
    before = torch.get_num_threads()
    result = measure_latency(model, (1, 8, 8), backend="onnxruntime", batch=4, threads=1, warmup=2, repeats=20)
    assert torch.get_num_threads() == before and model.training
    assert (result.backend, result.batch, result.threads) == ("onnxruntime", 4, 1)
    assert result.onnxruntime_version == onnxruntime.__version__ and result.repeats == 20
    assert 0 < result.median_ms <= result.p90_ms < 1000
    # what the latency lookup table measures: one layer, a flat input
    layer = measure_latency(nn.Linear(64, 10), (64,), backend="onnxruntime", warmup=1, repeats=5)
    assert layer.input_shape == (64,) and layer.median_ms > 0


@pytest.mark.parametrize("kwargs,message", [
    ({"backend": "tvm"}, "backend must be one of torch, onnxruntime"),
    ({"threads": 0}, "at least 1"),
    ({"batch": 0}, "at least 1"),
    ({"repeats": 0}, "repeats >= 1"),
])
def test_bad_settings_are_user_errors(kwargs, message):
    with pytest.raises(AmcError, match=message):
        measure_latency(nn.Linear(4, 2), (4,), **kwargs)


# --- CLI -----------------------------------------------------------------------------------------------------

def _main(capsys, monkeypatch, *args):
    """Run `amc ARGS` in this process, through main() as the console script does: (exit code, out, err)."""
    monkeypatch.setattr(sys, "argv", ["amc", *map(str, args)])
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() replaces it
    with pytest.raises(SystemExit) as exited:
        cli.main()
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out, captured.err


def test_bench_json_of_a_run_directory_in_a_fresh_process(run_dir):
    r = subprocess.run([sys.executable, "-m", "amc.cli", "bench", str(run_dir), "--backend", "onnxruntime",
                        "--batch", "2", "--threads", "1", "--repeats", "5", "--warmup", "1", "--min-seconds", "0",
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert {"median_ms", "p90_ms", "backend", "batch", "threads", "cpu", "macs", "params"} <= set(record)
    assert (record["backend"], record["batch"], record["threads"], record["repeats"]) == ("onnxruntime", 2, 1, 5)
    assert record["macs"] == json.loads((run_dir / "summary.json").read_text())["macs"]
    assert 0 < record["median_ms"] <= record["p90_ms"]


def test_bench_of_a_zoo_model_with_weights(capsys, monkeypatch):
    code, out, err = _main(capsys, monkeypatch, "bench", "digits_cnn", "--weights",
                           models.bundled_weights("digits_cnn"), "--repeats", "5", "--min-seconds", "0", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert (record["model"], record["backend"], record["batch"], record["threads"]) == ("digits_cnn", "torch", 1, 1)
    assert record["macs"] == count_macs(models.create("digits_cnn"), (1, 8, 8))


def test_export_writes_a_checked_loadable_onnx_file(run_dir, digits, tmp_path, capsys, monkeypatch):
    path = tmp_path / "out" / "pruned.onnx"
    code, out, err = _main(capsys, monkeypatch, "export", run_dir, "--onnx", path, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["max_abs_diff"] < 1e-4 and "held-out digits" in record["check_inputs"]
    onnx.checker.check_model(onnx.load(str(path)))
    pruned = amc.load_pruned(run_dir)
    images = _heldout_images(digits, models.model_info(pruned), n=10)
    with torch.no_grad():
        expected = pruned(images).numpy()
    got = ort_session(path).run(None, {"input": images.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_export_falls_back_to_random_inputs_when_the_data_is_gone(run_dir, tmp_path, capsys, monkeypatch):
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("model.json", "model.pt", "config.json", "summary.json"):
        (moved / name).write_bytes((run_dir / name).read_bytes())
    config = json.loads((moved / "config.json").read_text())
    config["search"].update(data="cifar10", data_dir=str(tmp_path / "gone.npz"))
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="checking on random inputs: the run's data cannot be loaded"):
        code, out, err = _main(capsys, monkeypatch, "export", moved, "--onnx", tmp_path / "m.onnx",
                               "--check-images", "8", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["check_inputs"] == "8 random inputs" and record["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("args,message", [
    (["bench", "digits_cnn", "--backend", "tvm"], "backend must be one of torch, onnxruntime"),
    (["bench", "runs/no-such-run"], "run directory not found"),
    (["bench", "digits_cnn", "--threads", "0"], "at least 1"),
    (["export", "no/such/run", "--onnx", "x.onnx"], "holds no exported model"),
])
def test_user_mistakes_exit_2_with_one_line(args, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(capsys, monkeypatch, *args)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err and not (tmp_path / "x.onnx").exists()


def test_missing_onnx_extra_is_an_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(AmcError, match=r"need onnxruntime: pip install 'amc-compress\[onnx\]'"):
        measure_latency(nn.Linear(4, 2), (4,), backend="onnxruntime")
    with pytest.raises(AmcError, match=r"pip install 'amc-compress\[onnx\]'"):
        export_onnx(nn.Linear(4, 2), tmp_path / "m.onnx", (4,))
