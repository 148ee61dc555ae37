"""A mistake the inputs alone reveal is reported before the first expensive step of a search: no calibration
features sampled, nothing scored, no latency measured, no run directory left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import amc
from amc import models
from amc.data import load_dataset
from amc.errors import AmcError, BudgetError, ConfigError
from amc.search import SearchConfig


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def nothing_expensive(monkeypatch):
    """Fail the test if a search samples features, scores anything or measures a latency."""
    import amc.evaluate
    import amc.latency.measure
    import amc.pipeline

    def expensive(*args, **kwargs):
        raise AssertionError("an expensive step ran before the mistake was reported")

    monkeypatch.setattr(amc.pipeline, "build_scorer", expensive)
    for name in ("top1", "accuracy", "race"):
        monkeypatch.setattr(amc.evaluate.Evaluator, name, expensive)
    monkeypatch.setattr(amc.latency.measure, "runner", expensive)


def _search(tmp_path, data, random_init=False, **settings):
    base = dict(episodes=4, warmup=1, calibration_images=300, seed=0, lbound=0.2)
    return amc.search(config=SearchConfig(**{**base, **settings}), data=data, out=tmp_path / "run",
                      random_init=random_init)


def test_an_unreachable_budget_names_the_smallest_ratio_and_a_lower_bound_that_meet_it(tmp_path, digits,
                                                                                      nothing_expensive):
    with pytest.raises(BudgetError) as e:
        _search(tmp_path, digits, ratio=0.01)
    message = str(e.value)
    assert "\n" not in message
    # digits_cnn at lbound 0.2 keeps 4.4% of its MACs at the least; at lbound 0.093 it reaches 1%
    assert "use --ratio >= 0.044 or --lbound <= 0.093" in message
    assert not (tmp_path / "run").exists()


def test_the_suggested_lower_bound_meets_the_budget_and_a_budget_beyond_any_bound_says_so(digits):
    from amc.env import Budget, CompressionEnv, EnvConfig, check_budget
    from amc.graph import LayerGraph

    model = models.create("digits_cnn")
    graph = LayerGraph(model, models.model_info(model).input_shape)
    check_budget(graph, EnvConfig(ratio=0.01, lbound=0.093))  # the suggestion above is feasible
    with pytest.raises(BudgetError):
        check_budget(graph, EnvConfig(ratio=0.01, lbound=0.1))  # ... and the next step up is not
    with pytest.raises(BudgetError, match="no --lbound can meet 0.0001: even one channel"):
        check_budget(graph, EnvConfig(ratio=0.0001))
    env = CompressionEnv(Budget(graph, EnvConfig(ratio=0.5)), lambda keep: 0.5)
    assert env.budget.min_ratio() < 0.5  # a feasible budget is not refused


@pytest.mark.parametrize("agent,options,message", [
    ("ddpg", {"sigma": 0.3}, "unknown setting sigma; it takes hidden, actor_lr,"),
    ("ddpg", {"noise_sigma_min": 0.9}, "noise_sigma_min <= noise_sigma"),
    ("ddpg", {"anchor": "wide"}, "unknown anchor 'wide'"),
    ("uniform", {"sigma": 0.3}, "unknown setting sigma; it takes ratio"),
    ("random", {"sigma": 0.3}, "unknown setting sigma; it takes none"),
    ("knapsack", {"option": 4}, "it takes ratios, sensitivity_images, options, rounds"),
])
def test_agent_options_are_checked_against_the_agents_settings_as_the_config_is_made(agent, options, message):
    with pytest.raises(ConfigError, match=f"bad --agent-option for {agent}: ") as e:
        SearchConfig(agent=agent, agent_options=options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_ddpg_anchor_of_the_wrong_length_is_refused_before_scoring(tmp_path, digits, nothing_expensive):
    with pytest.raises(AmcError, match="anchor lists 2 ratios but the model has 4 decisions"):
        _search(tmp_path, digits, agent="ddpg", agent_options={"anchor": [0.5, 0.5]})
    assert not (tmp_path / "run").exists()


def test_data_of_another_shape_than_the_model_is_refused_before_scoring(tmp_path, digits, nothing_expensive):
    with pytest.raises(AmcError, match=r"model resnet20 expects inputs \(3, 32, 32\) but dataset digits has"):
        _search(tmp_path, digits, model="resnet20", random_init=True)
    assert not (tmp_path / "run").exists()


def test_weights_of_another_architecture_are_refused_before_scoring(tmp_path, digits, nothing_expensive):
    other = models.create("digits_cnn", num_classes=4)  # same layers, another classifier
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(AmcError, match="does not match model digits_cnn"):
        _search(tmp_path, digits, weights=str(tmp_path / "other.pt"))
    assert not (tmp_path / "run").exists()


def test_a_latency_backend_that_is_not_installed_is_refused_before_measuring_or_scoring(tmp_path, digits,
                                                                                        monkeypatch,
                                                                                        nothing_expensive):
    import amc.onnx_export

    def missing():
        raise AmcError("ONNX export and the onnxruntime backend need onnxruntime: pip install 'amc-compress[onnx]'")

    monkeypatch.setattr(amc.onnx_export, "require_onnx", missing)
    with pytest.raises(AmcError, match=r"pip install 'amc-compress\[onnx\]'"):
        _search(tmp_path, digits, target="latency", latency_backend="onnxruntime")
    assert not (tmp_path / "run").exists()


def test_a_missing_extra_is_refused_before_scoring(tmp_path, digits, monkeypatch, nothing_expensive):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(AmcError, match="tensorboard"):
        _search(tmp_path, digits, tensorboard=True)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AmcError, match="--workers needs Ray"):
        _search(tmp_path, digits, workers=2)
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(AmcError, match=r"--agent tpe needs optuna"):
        _search(tmp_path, digits, agent="tpe")


def test_the_cli_lists_the_valid_agent_settings_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "amc.cli", "search", "--agent", "ddpg", "--agent-option", "sigma=0.3",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown setting sigma" in errors[0] and "noise_sigma_min" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_the_api_refuses_an_untrained_network_by_name_unless_asked(tmp_path, digits, nothing_expensive):
    with pytest.raises(AmcError, match="no weights for plain20.*--random-init"):
        _search(tmp_path, digits, model="plain20")  # no weights given, none bundled
    assert not (tmp_path / "run").exists()
