import json
import shutil
import subprocess
import sys

import pytest
import torch
from pathlib import Path

import amc
from amc.data import load_dataset
from amc.errors import AmcError
from amc.evaluate import Evaluator
from amc.export import load_pruned
from amc.finetune import finetune, load_finetuned
from amc.models import bundled_weights, model_info
from amc.search import SearchConfig
from amc.train import TrainConfig, _lr_at, distillation_loss


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture()
def harsh_run(tmp_path, digits):
    """Uniform pruning to 20% MACs without reconstruction: accuracy drops, so fine-tuning has work to do."""
    config = SearchConfig(agent="uniform", ratio=0.2, lbound=0.05, reconstruct=False, calibration_images=200)
    amc.search(config=config, out=tmp_path / "run", data=digits)
    return tmp_path / "run"


def test_distillation_loss_is_zero_for_identical_logits_and_positive_otherwise():
    logits = torch.randn(8, 10)
    assert float(distillation_loss(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, torch.randn(8, 10), 4.0)) > 0.01


def test_learning_rate_warms_up_linearly_then_follows_the_cosine_to_zero():
    lrs = [_lr_at(step, 100, 10, 0.1) for step in range(100)]
    assert lrs[:10] == pytest.approx([0.01 * (i + 1) for i in range(10)])  # the warm-up ends at the peak
    assert lrs[10] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.05, abs=1e-3) and lrs[-1] < 1e-3
    assert _lr_at(0, 100, 0, 0.1) == pytest.approx(0.1)  # no warm-up: the cosine starts at the peak
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=2, warmup_epochs=3)


def test_finetune_recovers_accuracy_and_records_it(harsh_run, digits):
    before = json.loads((harsh_run / "summary.json").read_text())
    record = finetune(harsh_run, TrainConfig(epochs=4, lr=0.02, batch_size=64), distill=True, data=digits)
    assert record["start"] == "exported"  # searched without least squares: the export is the same network
    assert record["heldout_top1"] > before["heldout_top1"] + 0.02
    summary = json.loads((harsh_run / "summary.json").read_text())
    assert summary["finetune"]["test_top1"] == record["test_top1"]
    assert summary["macs"] == before["macs"]  # the search's own figures stay as they were
    model = load_finetuned(harsh_run)
    info = model_info(model)
    assert Evaluator(digits.test, info.mean, info.std).top1(model) == pytest.approx(record["test_top1"])
    # the architecture is the pruned one, not the original
    assert amc.count_macs(model, info.input_shape) == before["macs"]


def test_finetune_refuses_to_redo_and_resumes(harsh_run, digits):
    finetune(harsh_run, TrainConfig(epochs=1, lr=0.02, batch_size=64), data=digits)
    with pytest.raises(AmcError, match="--resume"):
        finetune(harsh_run, TrainConfig(epochs=1, lr=0.02, batch_size=64), data=digits)
    record = finetune(harsh_run, TrainConfig(epochs=2, lr=0.02, batch_size=64), data=digits, resume=True)
    assert [h["epoch"] for h in record["history"]] == [1, 2]  # continued, not restarted


@pytest.fixture()
def reconstructed_run(tmp_path, digits):
    """The same budget with least-squares reconstruction (the default), from weights in a file of the test's."""
    weights = tmp_path / "original.pt"
    shutil.copy(bundled_weights("digits_cnn"), weights)
    config = SearchConfig(agent="uniform", ratio=0.2, lbound=0.05, calibration_images=200, weights=str(weights))
    amc.search(config=config, out=tmp_path / "lsq", data=digits)
    return tmp_path / "lsq"


def _starting_state(monkeypatch) -> dict:
    """Spy on the weights `amc.finetune` hands to training."""
    seen, real = {}, amc.finetune.train

    def spy(model, *args, **kwargs):
        seen["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real(model, *args, **kwargs)
    monkeypatch.setattr(amc.finetune, "train", spy)
    return seen


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_starts_from_the_policy_pruned_without_least_squares(reconstructed_run, digits, tmp_path,
                                                                      monkeypatch):
    plain = tmp_path / "plain"
    amc.apply_policy(reconstructed_run, data=digits, out=plain, reconstruct=False)  # what `amc prune` rebuilds
    unreconstructed, exported = load_pruned(plain).state_dict(), load_pruned(reconstructed_run).state_dict()
    assert not _same(unreconstructed, exported)  # least squares changed the kept weights
    seen = _starting_state(monkeypatch)
    config = TrainConfig(epochs=1, lr=0.02, batch_size=64)
    record = finetune(reconstructed_run, config, data=digits)
    assert record["start"] == "unreconstructed" and _same(seen["state"], unreconstructed)
    # its fine-tuned weights fit the exported architecture
    model = load_finetuned(reconstructed_run)
    info = model_info(model)
    assert Evaluator(digits.test, info.mean, info.std).top1(model) == pytest.approx(record["test_top1"])
    # resumed: it goes on from its checkpoint and keeps saying what it started from
    record = finetune(reconstructed_run, TrainConfig(epochs=2, lr=0.02, batch_size=64), data=digits, resume=True,
                      start="exported")
    assert record["start"] == "unreconstructed" and [h["epoch"] for h in record["history"]] == [1, 2]
    record = finetune(reconstructed_run, config, data=digits, overwrite=True, start="exported")
    assert record["start"] == "exported" and _same(seen["state"], exported)


def test_finetune_start_needs_the_original_weights_or_says_how_to_do_without(reconstructed_run, digits):
    Path(json.loads((reconstructed_run / "config.json").read_text())["search"]["weights"]).unlink()
    config = TrainConfig(epochs=1, lr=0.02, batch_size=64)
    with pytest.raises(AmcError, match="not found.*--teacher-weights FILE.*--start exported"):
        finetune(reconstructed_run, config, data=digits)
    assert finetune(reconstructed_run, config, data=digits, start="exported")["start"] == "exported"
    with pytest.raises(AmcError, match="unknown fine-tuning start 'lsq'; pick one of unreconstructed, exported"):
        finetune(reconstructed_run, config, data=digits, start="lsq", overwrite=True)


def test_a_network_built_elsewhere_is_fine_tuned_as_exported(reconstructed_run, digits, tmp_path):
    """A benchmark's peer (its config says so) or a directory without a policy: nothing to prune again."""
    peer = tmp_path / "peer"
    shutil.copytree(reconstructed_run, peer)
    config = json.loads((peer / "config.json").read_text())
    (peer / "config.json").write_text(json.dumps({**config, "search": {**config["search"], "peer": "fastnas"}}))
    train = TrainConfig(epochs=1, lr=0.02, batch_size=64)
    assert finetune(peer, train, data=digits)["start"] == "exported"
    (reconstructed_run / "policy.json").unlink()
    assert finetune(reconstructed_run, train, data=digits)["start"] == "exported"


def _amc(*args):
    return subprocess.run([sys.executable, "-m", "amc.cli", *args], capture_output=True, text=True)


def test_cli_finetune_and_its_errors(harsh_run, tmp_path):
    r = _amc("finetune", str(harsh_run), "--epochs", "1", "--batch-size", "64", "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["epochs"] == 1
    assert "eta" in r.stderr  # progress with an ETA
    for args, message in (([str(tmp_path / "nope")], "not a search run"),
                          ([str(harsh_run), "--optimizer", "lion"], "optimizer must be sgd or adamw"),
                          ([str(harsh_run)], "--resume")):
        r = _amc("finetune", *args, "--epochs", "1")
        assert r.returncode == 2, r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], r.stderr
        assert "Traceback" not in r.stderr
