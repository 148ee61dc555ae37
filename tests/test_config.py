"""Settings are checked once, in their dataclass: the CLI and the Python API refuse the same values alike."""

from __future__ import annotations

import os

import pytest

from amc.config import SearchConfig, read_settings_file
from amc.errors import AmcError
from amc.train import TrainConfig


@pytest.mark.parametrize("setting,message", [
    ({"seed": -1}, "--seed must be at least 0, got -1"),
    ({"threads": -1}, "--threads must be at least 1, got -1"),
    ({"threads": 0}, "--threads must be at least 1, got 0"),
    ({"threads": 100000}, "--threads must be at most 1024, got 100000"),
    ({"latency_threads": 100000}, "--latency-threads must be at most 1024, got 100000"),
    ({"warmup": -2}, "--warmup must be at least 0"),
    ({"heldout_limit": 0}, "--heldout-limit must be at least 1"),
    ({"bn_recalibration": -1}, "--bn-recalibration must be at least 0"),
    ({"eval_batch_size": 0}, "--eval-batch-size must be at least 1"),
    ({"episodes": 2.5}, "--episodes must be an integer, got 2.5"),
    ({"seed": True}, "--seed must be an integer, got True"),
    ({"ratio": float("nan")}, "--ratio must be a finite number, got nan"),
    ({"lbound": float("inf")}, "--lbound must be a finite number, got inf"),
    ({"agent_options": [1]}, "--agent-options must be a dict, got [1]"),
    ({"model": 3}, "--model must be a string, got 3"),
    ({"agent": "ddpg", "agent_options": {"batch_size": 2.5}}, "bad --agent-option for ddpg: batch_size must be an integer, got 2.5"),
    ({"agent": "ddpg", "agent_options": {"noise_sigma": "high"}}, "noise_sigma must be a finite number, got 'high'"),
    ({"agent": "uniform", "agent_options": {"ratio": float("nan")}}, "ratio must be a finite number, got nan"),
])
def test_search_settings_out_of_range_or_of_the_wrong_type_are_refused(setting, message):
    with pytest.raises(AmcError) as raised:
        SearchConfig(**setting)
    assert message in str(raised.value)


def test_settings_in_range_are_kept():
    config = SearchConfig(seed=0, threads=1, warmup=0, agent="ddpg", agent_options={"batch_size": 32, "noise_sigma": 1})
    assert config.agent_options == {"batch_size": 32, "noise_sigma": 1}  # an int is a fine float


def test_the_search_defaults_are_the_environments():
    """SearchConfig writes its budget defaults out (importing amc.blocks for DROP_SHARE would load torch)."""
    from amc.blocks import DROP_SHARE
    from amc.budget import EnvConfig
    search, env = SearchConfig(), EnvConfig()
    assert search.drop_share == DROP_SHARE == env.drop_share
    for name in ("target", "channel_round", "reward", "drop_blocks"):
        assert getattr(search, name) == getattr(env, name), name


def test_the_default_lower_bound_follows_the_budget_up_to_its_cap():
    # at 20% MACs the knapsack fine-tuned ~1 point better at lbound 0.05 than at 0.1, and 0.2 cannot be met
    assert SearchConfig(model="resnet20", ratio=0.2).lbound == pytest.approx(0.05)
    assert SearchConfig(model="resnet20", ratio=0.5).lbound == pytest.approx(0.125)
    assert SearchConfig(model="resnet20", ratio=0.9).lbound == pytest.approx(0.2)  # the cap
    assert SearchConfig(model="resnet20", ratio=0.2, lbound=0.1).lbound == 0.1  # a given bound is kept
    assert SearchConfig(model="resnet20", ratio=0.2, reward="acc-macs").lbound == 0.2  # no budget to follow
    assert SearchConfig().lbound == 0.05 and SearchConfig(ratio=0.5).lbound == 0.05  # the digits CNN's own


def test_the_default_agent_is_the_knapsack_under_a_budget_and_ddpg_where_it_cannot_serve():
    assert SearchConfig().agent == "knapsack" and SearchConfig().episodes_to_run == 1
    assert SearchConfig(reward="acc-macs").agent == "ddpg"  # no budget to allocate
    assert SearchConfig(finalists=3).agent == "ddpg"  # finalists need more than one candidate
    assert SearchConfig(reward="acc-macs", agent="random").agent == "random"  # a named agent is kept
    # a run's config.json holds the agent it ran with, so a resume keeps it whatever the default becomes
    assert SearchConfig.from_dict(SearchConfig(agent="ddpg").to_dict()).agent == "ddpg"


def test_the_search_default_memory_bound_is_the_loaders():
    from amc.data.datasets import MAX_MEMORY_GB
    assert SearchConfig().max_memory_gb == MAX_MEMORY_GB


def test_amc_search_takes_its_options_from_the_settings():
    import typer.main

    from amc.cli import app
    from amc.config import default, search_options
    options = {p.name: p for p in typer.main.get_command(app).commands["search"].params}
    for f in search_options():
        assert f.name in options, f.name
        assert options[f.name].default == ([] if f.name == "agent_options" else default(f.name)), f.name
        assert f.metadata["help"] == options[f.name].help
    assert options["ratio"].opts == ["--keep-ratio", "--ratio"] and options["agent_options"].opts == ["--agent-option"]
    assert {"points_per_image", "eval_batch_size", "latency_batch"}.isdisjoint(options)  # the Python API's only


@pytest.mark.parametrize("setting,message", [
    ({"lr": float("nan")}, "--lr must be a finite number, got nan"),
    ({"lr": -0.1}, "--lr must be above 0, got -0.1"),
    ({"lr": 0.0}, "--lr must be above 0"),
    ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    ({"seed": -1}, "--seed must be at least 0"),
    ({"weight_decay": -1e-4}, "--weight-decay must be at least 0"),
    ({"momentum": float("inf")}, "--momentum must be a finite number"),
    ({"epochs": 1.5}, "--epochs must be an integer"),
])
def test_training_settings_out_of_range_are_refused_as_one_line_errors(setting, message):
    with pytest.raises(AmcError) as raised:  # also a ValueError, for callers that catch those
        TrainConfig(**setting)
    assert message in str(raised.value) and isinstance(raised.value, ValueError)


@pytest.mark.parametrize("text,message", [
    ("out = 3\n", "search.toml must be a path (a string), got 3"),
    ("out = [\"runs\"]\n", "got ['runs']"),
])
def test_a_settings_file_whose_out_is_not_a_path_is_refused(tmp_path, text, message):
    (tmp_path / "search.toml").write_text(text)
    with pytest.raises(AmcError) as raised:
        read_settings_file(tmp_path / "search.toml")
    assert message in str(raised.value)


def test_a_settings_file_that_is_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "search.toml")
    with pytest.raises(AmcError, match="it is a FIFO, not a regular file"):
        read_settings_file(tmp_path / "search.toml")
