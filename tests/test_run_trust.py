"""A run directory is data: reading one never imports or calls the code its files name.

A model factory (`package.module:function`) is code. Named in a run's config.json, model.json or policy.json, or
in a `--config` file, it runs only when the person running amc names it too (`--model`, `model=`) or opts in
(`--trust-model-code`, `trust_model_code=True`); zoo, `tv:` and `timm:` names stay data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

import amc
from amc import models
from amc.accuracy import evaluate_model
from amc.errors import AmcError
from amc.models import factory

from tests import mynet

FAST = dict(episodes=3, warmup=1, calibration_images=200)
MARKER = "code-ran"


@pytest.fixture(scope="module")
def factory_run(tmp_path_factory) -> Path:
    """A finished search of tests.mynet:build (its run files name the factory)."""
    root = tmp_path_factory.mktemp("trust")
    torch.save(mynet.build().state_dict(), root / "mynet.pt")
    amc.search("tests.mynet:build", "digits", weights=str(root / "mynet.pt"), out=root / "run", seed=0, **FAST)
    return root / "run"


def _hostile(run: Path, tmp_path: Path, name: str, **kwargs) -> Path:
    """A copy of `run` whose model.json names `name` (called with `kwargs`) and a module directory of its own."""
    import shutil
    copy = tmp_path / "hostile"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "model.json").read_text())
    evil = tmp_path / "evil"
    (evil / "tests").mkdir(parents=True)
    (evil / "tests" / "mynet.py").write_text(f"open({str(tmp_path / MARKER)!r}, 'w')\ndef build(**k):\n    pass\n")
    meta["info"].update(name=name, kwargs=kwargs, import_root=str(evil))
    (copy / "model.json").write_text(json.dumps(meta))
    summary = json.loads((copy / "summary.json").read_text())  # a forger makes the export record agree
    summary["export"]["model.json"] = hashlib.sha256((copy / "model.json").read_bytes()).hexdigest()
    (copy / "summary.json").write_text(json.dumps(summary))
    return copy


def test_a_run_naming_a_shell_command_as_its_model_runs_nothing(factory_run, tmp_path):
    hostile = _hostile(factory_run, tmp_path, "os:system", command=f"touch {tmp_path / MARKER}")
    with pytest.raises(AmcError, match=r"model\.json names the model factory os:system, which is Python code"):
        evaluate_model(hostile, split="val")
    with pytest.raises(AmcError, match="pass --trust-model-code"):
        amc.load_pruned(hostile)
    assert not (tmp_path / MARKER).exists()


def test_a_factory_a_run_names_is_imported_only_when_trusted(factory_run):
    with pytest.raises(AmcError, match="names the model factory tests.mynet:build"):
        amc.load_pruned(factory_run)
    with pytest.raises(AmcError, match="names the model factory tests.mynet:build"):
        amc.apply_policy(factory_run, out=factory_run.parent / "pruned")
    assert not (factory_run.parent / "pruned").exists()
    trusted = amc.load_pruned(factory_run, trust_model_code=True)
    assert isinstance(trusted, mynet.MyNet)
    # naming the factory yourself is trust enough for that name
    applied = amc.apply_policy(factory_run, "tests.mynet:build", out=factory_run.parent / "pruned",
                               calibration_images=200)
    assert applied["macs"] == amc.count_macs(trusted, (1, 8, 8))


def test_naming_a_factory_does_not_trust_the_directory_a_run_points_to(factory_run, tmp_path, monkeypatch):
    """The run's import_root is searched only under the full opt-in: a name the user trusts cannot be served from
    a directory the file chose."""
    hostile = _hostile(factory_run, tmp_path, "tests.mynet:build")
    monkeypatch.delitem(sys.modules, "tests.mynet", raising=False)
    monkeypatch.chdir(tmp_path)  # the repository's tests package is still on sys.path (pytest's pythonpath)
    with factory.trusting(names=("tests.mynet:build",)):
        net = amc.load_pruned(hostile)
    assert not (tmp_path / MARKER).exists() and type(net).__module__ == "tests.mynet"


def test_a_policy_naming_a_factory_is_refused_before_it_is_called(tmp_path):
    policy = {"model": "os:abort", "consumers": ["features.1.0"], "channels": [32], "keep": [16]}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    with pytest.raises(AmcError, match=r"policy\.json names the model factory os:abort"):
        amc.apply_policy(tmp_path / "policy.json", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_resumed_factory_run_needs_the_factory_named_again(factory_run, tmp_path):
    import shutil
    run = tmp_path / "resumed"
    shutil.copytree(factory_run, run)
    with pytest.raises(AmcError, match="pass --model tests.mynet:build or --trust-model-code"):
        amc.search(out=run, resume=True, episodes=4)


@pytest.mark.parametrize("kwargs,problem", [
    ({"command": {"nested": "dict"}}, "option command is dict"),
    ({"not an identifier": 1}, "is not an identifier"),
])
def test_model_options_in_a_run_are_plain_data(kwargs, problem):
    record = {"name": "digits_cnn", "input_shape": [1, 8, 8], "mean": [0.5], "std": [0.5], "num_classes": 10,
              "kwargs": kwargs}
    with pytest.raises(AmcError, match=problem):
        models.info_from_record(record, "run/model.json")


def test_timm_options_that_read_files_are_refused():
    pytest.importorskip("timm", reason="timm is an optional extra")
    with pytest.raises(AmcError, match="checkpoint_path makes timm read files"):
        models.create("timm:resnet10t", checkpoint_path=os.devnull)


def test_trust_is_scoped_to_the_call():
    assert not factory.trusted("tests.mynet:build")
    with factory.trusting(names=("tests.mynet:build",)):
        assert factory.trusted("tests.mynet:build") and not factory.trusted("os:system") and not factory.trusted()
        with factory.trusting(True):
            assert factory.trusted("os:system")
        assert not factory.trusted("os:system")
    assert not factory.trusted("tests.mynet:build")
