"""Drives the `amc` command as a user would."""

import json
import os
import subprocess
import sys

import pytest


def amc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "amc.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_commands():
    r = amc("--help")
    assert r.returncode == 0
    for command in ("search", "train", "eval", "prune", "models"):
        assert command in r.stdout


@pytest.mark.parametrize("command,unloaded", [
    ([], ("torch", "numpy", "torch_pruning", "gymnasium", "amc.env", "amc.graph")),
    (["search"], ("torch_pruning", "gymnasium", "timm", "torchvision", "amc.env", "amc.graph", "amc.search")),
])
def test_help_loads_only_what_it_shows(command, unloaded):
    """`amc --help` loads no torch; `amc search --help` loads the catalogues its choices list (they import torch),
    not the search."""
    code = ("import sys\nfrom amc.cli import main\nsys.argv = ['amc', *sys.argv[1:], '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint(*sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True)
    assert r.returncode == 0 and "Usage: amc" in r.stdout, r.stderr
    loaded = set(r.stderr.split())
    assert not loaded & set(unloaded), sorted(loaded & set(unloaded))


def test_models_lists_zoo():
    r = amc("models")
    assert r.returncode == 0 and "resnet56" in r.stdout and "mobilenet_v2" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["eval", "--model", "resnet5", "--data", "digits"], "did you mean"),
    (["eval", "--model", "digits_cnn", "--weights", "/nonexistent.pt", "--data", "digits"], "not found"),
    (["search", "--ratio", "1.5", "--episodes", "2"], "--ratio must be in (0, 1]"),
    (["search", "--ratio", "0.001", "--episodes", "2"], "cannot be met"),
    (["eval", "--model", "digits_cnn", "--data", "cifar10"], "--data-dir"),
    (["eval"], "pass a run directory"),
    (["prune", "--out", "pruned"], "pass the run whose policy to apply"),
    (["search", "--agent-option", "noequals", "--episodes", "2"], "KEY=VALUE"),
    (["search", "--agent-option", "no_such_setting=1", "--episodes", "2"], "bad --agent-option"),
])
def test_user_mistakes_get_one_line_errors(tmp_path, args, message):
    if args[0] == "search":
        args = [*args, "--out", str(tmp_path / "run")]
    r = amc(*args)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_train_then_eval_json(tmp_path):
    ckpt = tmp_path / "cnn.pt"
    r = amc("train", "--model", "digits_cnn", "--data", "digits", "--epochs", "6", "--batch-size", "64", "--lr", "0.05",
            "--out", str(ckpt))
    assert r.returncode == 0, r.stderr
    r = amc("eval", "--model", "digits_cnn", "--weights", str(ckpt), "--data", "digits", "--split", "val", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert {"top1", "top5", "macs", "params"} <= set(result)
    assert 0.8 < result["top1"] <= result["top5"] <= 1  # fractions; six short epochs are far above chance (0.1)


def test_accuracy_guaranteed_search_says_it_has_no_budget_and_shows_the_params_share(tmp_path):
    r = amc("search", "--method", "fine-grained", "--reward", "acc-params", "--episodes", "2", "--warmup", "1",
            "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stderr.split())  # progress goes to stderr; rich wraps long lines at the console width
    assert "reward acc-params (accuracy-guaranteed, no budget)" in text and "<=" not in text
    episode_lines = [line for line in r.stderr.splitlines() if line.startswith("episode ")]
    assert episode_lines and all(" params 0." in line and " macs " not in line for line in episode_lines)


def test_default_search_runs_end_to_end(tmp_path):
    r = amc("search", "--json", cwd=tmp_path)  # the README's first command
    assert r.returncode == 0, r.stderr
    assert "agent knapsack, 1 episode ->" in r.stderr
    demo, = (tmp_path / "runs").glob("digits_cnn-knapsack-*")  # named after the agent that ran
    result = json.loads(r.stdout)
    assert result["macs_ratio"] <= 0.05  # the digits CNN's own budget
    assert result["searched_minus_best_baseline"] > 0.03  # what the default shows: the allocation matters here
    assert (demo / "model.pt").exists()
    # `amc prune` applies the saved policy and exports the very network the search exported (on the device named,
    # here the CPU the default search used)
    r = amc("prune", "--policy", str(demo / "policy.json"), "--out", str(tmp_path / "pruned"), "--json",
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["macs"] == result["macs"]
    assert (tmp_path / "pruned" / "model.pt").read_bytes() == (demo / "model.pt").read_bytes()


def _amc_with_stdout_closed(*args, cwd):
    """`amc ARGS >&-`: the command starts with descriptor 1 closed."""
    return subprocess.run([sys.executable, "-m", "amc.cli", *args], cwd=cwd, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: os.close(1))


@pytest.mark.parametrize("args", [["models"], ["show", "run"], ["show", "run", "--json"], ["runs", "."]])
def test_a_closed_stdout_is_one_line_not_a_traceback(tmp_path, args):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"search": {}}')
    r = _amc_with_stdout_closed(*args, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "standard output is closed" in errors[0], r.stderr


def test_a_command_that_prints_only_on_stderr_runs_with_stdout_closed(tmp_path):
    r = _amc_with_stdout_closed("eval", "--model", "digits_cnn", "--data", "digits", cwd=tmp_path)
    assert r.returncode == 0 and "top-1" in r.stderr, r.stderr
