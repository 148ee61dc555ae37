"""The budget on its own: no environment, no scoring. What an agent's answers turn into, what a refit makes,
and what DDPG reads of it without reaching into an environment."""

from __future__ import annotations

import numpy as np
import pytest

from amc import models
from amc.agents import make_agent
from amc.budget import Budget, EnvConfig
from amc.env import CompressionEnv
from amc.graph import LayerGraph


def _graph(name: str = "resnet20") -> LayerGraph:
    model = models.create(name).eval()
    return LayerGraph(model, models.model_info(model).input_shape)


@pytest.fixture(scope="module")
def graph():
    return _graph()


@pytest.mark.parametrize("config", [EnvConfig(ratio=0.3, lbound=0.1), EnvConfig(ratio=0.5, channel_round=4),
                                    EnvConfig(ratio=0.3, lbound=0.2, drop_blocks=True)])
def test_play_is_what_the_environment_executes_for_the_same_answers(graph, config):
    budget = Budget(graph, config)
    env = CompressionEnv(budget, lambda keep: 0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        ratios = rng.uniform(0.0, 1.0, len(budget.channels))
        env.reset()
        for ratio in ratios:
            *_, info = env.step(np.array([ratio], dtype=np.float32))
        assert budget.play(ratios) == info["keep_counts"]
        assert budget.meets(info["keep_counts"])


def test_a_refitted_budget_is_a_new_one_and_the_old_keeps_its_costs(graph):
    def latency(scale):
        return lambda keep: 0.2 + scale * graph.macs(keep) / graph.total_macs

    old = Budget(graph, EnvConfig(target="latency", ratio=0.5), latency(1.0))
    new = old.refitted(latency(2.0))
    assert new is not old and old.total_cost == pytest.approx(1.2) and new.total_cost == pytest.approx(2.2)
    assert old.limit == pytest.approx(0.6) and new.limit == pytest.approx(1.1)
    keep = old.uniform_counts(old.uniform_ratio())
    assert old.meets(keep) and old.cost(keep) == pytest.approx(0.2 + graph.macs(keep) / graph.total_macs)

    env = CompressionEnv(old, lambda keep: 0.5)
    env.use_budget(new)
    assert env.budget is new
    with pytest.raises(ValueError, match="same graph"):
        env.use_budget(Budget(_graph("resnet20"), EnvConfig(target="latency", ratio=0.5), latency(1.0)))


def test_ddpg_reads_the_counts_executed_so_far_from_its_observations_not_from_the_environment(graph):
    budget = Budget(graph, EnvConfig(ratio=0.2, lbound=0.1))
    env = CompressionEnv(budget, lambda keep: 0.5)
    agent = make_agent("ddpg", budget, 0, actions="share", warmup_episodes=0, noise_sigma=0.3)
    for episode in range(3):
        agent.begin_episode(episode)
        obs, _ = env.reset()
        done = False
        while not done:
            expected = budget.fair_ratio(env.t, env.keep)  # the fair share given what the env executed
            action = agent.act(obs)
            assert agent._fairs[-1][-1] == expected
            obs, _, done, _, _ = env.step(np.array([action], dtype=np.float32))
        agent._fairs.popleft()  # as end_episode would
