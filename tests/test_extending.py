"""Extending amc from outside the package: an agent is one class and one line in `amc.agents.AGENTS`, a latency
runtime one `Backend` and one line in `amc.latency.BACKENDS`; settings, the search and the measurement read the
same catalogues, so nothing else needs to know."""

from __future__ import annotations

import functools
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import amc
from amc.agents import AGENTS, Agent
from amc.config import SearchConfig
from amc.errors import AmcError
from amc.latency import BACKENDS, Backend, measure_latency


class ThreeQuarters(Agent):
    """Keeps three quarters of every layer (the environment still clips to the budget)."""

    name = "three-quarters"

    def __init__(self, obs_dim: int, lbound: float, seed: int, keep: float = 0.75):
        self.keep, self.episodes = keep, 0

    def begin_episode(self, episode: int) -> None:
        self.episodes = episode + 1

    def act(self, obs: np.ndarray) -> float:
        return self.keep

    def end_episode(self, transitions, reward: float) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {"keep": self.keep, "episodes": self.episodes}

    def load_state_dict(self, state: dict) -> None:
        self.keep, self.episodes = float(state["keep"]), int(state["episodes"])


@contextmanager
def _traced(model, x, threads):
    """A runtime of our own: the model traced by TorchScript."""
    torch.set_num_threads(threads)
    with torch.inference_mode():
        yield functools.partial(torch.jit.trace(model, x), x)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(AGENTS, "three-quarters", ThreeQuarters)
    monkeypatch.setitem(BACKENDS, "traced", Backend("traced", _traced))


def test_an_agent_added_to_the_catalogue_searches(registered, tmp_path):
    result = amc.search("digits_cnn", "digits", out=tmp_path / "run", agent="three-quarters", episodes=2,
                        ratio=0.9, lbound=0.2, calibration_images=100, agent_options={"keep": 0.8})
    first, second = (r["keep"] for r in result.episodes)
    assert first == second and first[0] == round(0.8 * result.policy.channels[0])  # its answer, as clipped
    assert result.summary["agent"] == "three-quarters" and result.summary["macs_ratio"] <= 0.9


def test_a_latency_backend_added_to_the_catalogue_measures_and_is_a_valid_setting(registered):
    model = amc.models.create("digits_cnn")
    result = measure_latency(model, (1, 8, 8), backend="traced", repeats=3, warmup=1, min_seconds=0)
    assert result.backend == "traced" and result.repeats >= 3 and result.median_ms > 0
    assert SearchConfig(target="latency", latency_backend="traced").latency_backend == "traced"


def test_what_is_not_in_a_catalogue_is_refused_by_its_name():
    with pytest.raises(AmcError, match="--agent must be one of ddpg, random, uniform, tpe, knapsack"):
        SearchConfig(agent="three-quarters")
    with pytest.raises(AmcError, match="--latency-backend must be one of torch, onnxruntime"):
        SearchConfig(latency_backend="traced")
