"""Runs carry their settings: README's workflow from another directory with no option repeated, the refusal of
random weights, settings files, and `amc show` / `amc runs` (issue 20)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from amc import models
from amc.config import read_settings_file
from amc.errors import AmcError
from amc.run_inputs import run_config


def amc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "amc.cli", *args], capture_output=True, text=True, cwd=cwd)


def amc_here(*args, cwd):
    """`amc ARGS` from `cwd`, run in this process: what the workflow checks is how a run's paths resolve from
    another directory, not a fresh interpreter (tests/test_cli.py starts real ones), and each process would cost
    seconds of imports."""
    from typer.testing import CliRunner

    from amc.cli import app

    before = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def one_json(r) -> dict:
    """The command's stdout, which --json makes exactly one JSON object."""
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def error_line(r) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A tiny search started in its own directory, with the weights given by a path relative to it."""
    root = tmp_path_factory.mktemp("workflow")
    project = root / "project"
    project.mkdir()
    shutil.copy(models.bundled_weights("digits_cnn"), project / "cnn.pt")
    r = amc("search", "--weights", "cnn.pt", "--calibration-images", "300", "--seed", "3", "--keep-ratio", "0.4",
            "--out", "runs/a", "--json", cwd=project)  # the default agent: the knapsack, one episode
    return root, project / "runs" / "a", one_json(r)


def test_readme_workflow_from_another_directory_with_no_option_repeated(searched):
    root, run, result = searched
    config = json.loads((run / "config.json").read_text())
    assert config["search"]["weights"] == str(run.parent.parent / "cnn.pt")  # absolute, as the run stores it
    assert config["search"]["ratio"] == 0.4
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    rel = "../project/runs/a"

    shown = one_json(amc_here("show", rel, "--json", cwd=elsewhere))
    assert shown["status"] == "finished" and shown["settings"]["seed"] == 3
    assert shown["best"]["heldout_top1"] == result["heldout_top1"] and 0 < shown["best"]["test_top1"] <= 1
    assert {"config.json", "model.pt", "policy.json", "summary.json"} <= {f["name"] for f in shown["files"]}
    assert all(f["bytes"] > 0 for f in shown["files"])

    evaluated = one_json(amc_here("eval", rel, "--split", "test", "--device", "cpu", "--json", cwd=elsewhere))
    assert evaluated["top1"] == pytest.approx(result["test_top1"])  # a fraction, as summary.json's
    assert 0 <= evaluated["top5"] <= 1 and evaluated["data"] == "digits"

    # `amc prune RUN` rebuilds the search's export from the run's own weights, seed and calibration images
    pruned = one_json(amc_here("prune", rel, "--out", "pruned", "--json", cwd=elsewhere))
    assert pruned["macs"] == result["macs"]
    assert torch.equal(_state(elsewhere / "pruned" / "model.pt")["features.0.0.weight"],
                       _state(run / "model.pt")["features.0.0.weight"])
    assert (elsewhere / "pruned" / "model.pt").read_bytes() == (run / "model.pt").read_bytes()

    tuned = one_json(amc_here("finetune", rel, "--epochs", "1", "--batch-size", "256", "--distill", "--json",
                         cwd=elsewhere))  # the teacher is the run's weights, found by their absolute path
    assert tuned["epochs"] == 1 and 0 < tuned["test_top1"] <= 1

    pytest.importorskip("onnxruntime")
    exported = one_json(amc_here("export", rel, "--onnx", "cnn.onnx", "--json", cwd=elsewhere))
    assert "held-out digits images" in exported["check_inputs"] and (elsewhere / "cnn.onnx").exists()
    bench = one_json(amc_here("bench", rel, "--bench-warmup", "1", "--repeats", "3", "--min-seconds", "0", "--json",
                         cwd=elsewhere))
    assert bench["macs"] == result["macs"]
    pytest.importorskip("matplotlib")
    report = one_json(amc_here("report", rel, "--json", cwd=elsewhere))
    assert (elsewhere / report["report"]).exists()


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_without_json_a_command_prints_a_line_for_people_and_nothing_on_stdout(searched):
    _, run, result = searched
    r = amc("eval", str(run))
    assert r.returncode == 0 and r.stdout == ""
    assert f"top-1 {100 * result['test_top1']:.2f}%" in r.stderr


def test_amc_runs_lists_each_run_with_its_figures(searched):
    root, run, result = searched
    rows = one_json(amc("runs", str(root), "--json"))["runs"]
    row = next(r for r in rows if r["run"] == "project/runs/a")
    assert (row["model"], row["target"], row["ratio"], row["agent"]) == ("digits_cnn", "macs", 0.4, "knapsack")
    assert row["episodes"] == 1 and row["best_heldout_top1"] == result["heldout_top1"]
    assert row["test_top1"] == result["test_top1"] and row["status"] == "finished"
    table = amc("runs", str(root))
    assert table.returncode == 0
    line = next(line for line in table.stdout.splitlines() if "project/runs/a" in line)
    for cell in ("digits_cnn", "macs", "0.4", "knapsack", "1/1", f"{100 * result['heldout_top1']:.2f}%",
                 f"{100 * result['test_top1']:.2f}%"):
        assert cell in line, line


def test_an_old_run_with_relative_paths_names_the_missing_file_and_the_option(searched, tmp_path):
    _, run, _ = searched
    old = tmp_path / "old"
    shutil.copytree(run, old)
    config = json.loads((old / "config.json").read_text())
    config["search"].update(weights="cnn.pt", data="cifar10", data_dir="cifar10.npz")  # as typed before issue 20
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(AmcError, match=r"the run's weights cnn.pt is not found .*relative.*; pass --weights FILE"):
        run_config(old)
    with pytest.raises(AmcError, match="the run's data cifar10.npz is not found .*; pass --data-dir FILE"):
        run_config(old, weights=str(run.parent.parent / "cnn.pt"))
    # options finetune accepts: the original weights (what its start is pruned from), then the data
    r = amc("finetune", str(old), "--epochs", "1", "--overwrite")
    assert "the original weights cnn.pt are not found" in error_line(r) and "--teacher-weights FILE" in error_line(r)
    r = amc("finetune", str(old), "--epochs", "1", "--overwrite", "--teacher-weights", str(run.parent.parent / "cnn.pt"))
    assert "pass --data-dir FILE" in error_line(r)


@pytest.mark.parametrize("args", [
    ["search", "--model", "resnet20", "--data", "cifar10", "--out", "run"],
    ["prune", "--policy", "policy.json", "--model", "resnet20", "--out", "pruned"],
    ["bench", "resnet20"],
    ["eval", "--model", "resnet20", "--data", "digits"],
])
def test_a_randomly_initialised_network_is_refused_unless_asked_for(tmp_path, args):
    (tmp_path / "policy.json").write_text(json.dumps({"model": "resnet20", "consumers": ["layer1.0.conv2"],
                                                      "channels": [16], "keep": [8]}))
    line = error_line(amc(*args, cwd=tmp_path))
    assert "no weights for resnet20" in line and "--weights FILE" in line and "--random-init" in line
    assert [p.name for p in tmp_path.iterdir()] == ["policy.json"]  # refused before anything was written


def test_random_init_when_asked_for(tmp_path):
    bench = one_json(amc("bench", "resnet20", "--random-init", "--bench-warmup", "1", "--repeats", "2",
                         "--min-seconds", "0", "--json"))
    assert bench["model"] == "resnet20" and bench["median_ms"] > 0


def test_settings_file_with_the_command_line_overriding_it_and_a_run_repeated(tmp_path):
    settings = tmp_path / "search.toml"
    settings.write_text('agent = "random"\nepisodes = 2\nratio = 0.3\ncalibration-images = 200\n'
                        'out = "from_file"\n[agent_options]\n')
    r = amc("search", "--config", str(settings), "--keep-ratio", "0.6", "--json", cwd=tmp_path)
    result = one_json(r)
    saved = json.loads((tmp_path / "from_file" / "config.json").read_text())["search"]
    assert (saved["agent"], saved["episodes"], saved["calibration_images"]) == ("random", 2, 200)  # the file
    assert saved["ratio"] == 0.6 and result["macs_ratio"] <= 0.6  # the command line over the file
    # a run's config.json repeats the run: the same settings, the same policy
    again = one_json(amc("search", "--config", "from_file/config.json", "--out", "again", "--json", cwd=tmp_path))
    assert json.loads((tmp_path / "again" / "config.json").read_text())["search"] == saved
    assert again["macs"] == result["macs"] and again["heldout_top1"] == result["heldout_top1"]
    assert json.loads((tmp_path / "again" / "policy.json").read_text())["keep"] == \
        json.loads((tmp_path / "from_file" / "policy.json").read_text())["keep"]


def test_settings_file_mistakes_are_one_line(tmp_path):
    (tmp_path / "bad.toml").write_text("sigma = 0.3\n")
    with pytest.raises(AmcError, match="unknown setting 'sigma' in .*valid settings: .*agent_options.*ratio"):
        read_settings_file(tmp_path / "bad.toml")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(AmcError, match="is not valid JSON"):
        read_settings_file(tmp_path / "broken.json")
    line = error_line(amc("search", "--config", "bad.toml", cwd=tmp_path))
    assert "unknown setting 'sigma'" in line and "episodes" in line


def test_search_help_groups_its_options_and_lists_choices():
    r = subprocess.run([sys.executable, "-m", "amc.cli", "search", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"})  # wide enough that no choice list wraps
    text = r.stdout
    for panel in ("Model and data", "Budget", "Agent", "Pruning and scoring", "Run and output", "Performance"):
        assert panel in text
    for choices in ("ddpg|random|uniform|tpe|knapsack", "macs|params|latency", "channel|fine-grained"):
        assert choices in text
    assert "--keep-ratio" in text and "share of the original cost kept" in text
