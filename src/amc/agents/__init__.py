"""Searchers behind one interface (`Agent`): DDPG as in the AMC paper, the random and uniform baselines, and
Optuna's TPE (optional extra `tpe`)."""

from __future__ import annotations

from amc.agents.base import Agent, Transition
from amc.agents.ddpg import DDPGAgent, DDPGConfig
from amc.agents.random_agent import RandomAgent
from amc.agents.tpe import TPEAgent
from amc.agents.uniform import UniformAgent

AGENTS: dict[str, type[Agent]] = {"ddpg": DDPGAgent, "random": RandomAgent, "uniform": UniformAgent,
                                  "tpe": TPEAgent}


def make_agent(name: str, obs_dim: int, lbound: float, seed: int, **config) -> Agent:
    """Build an agent by name; `config` goes to its constructor (e.g. DDPGConfig fields, or `ratio`)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
    return AGENTS[name](obs_dim, lbound, seed, **config)


__all__ = ["AGENTS", "Agent", "DDPGAgent", "DDPGConfig", "RandomAgent", "TPEAgent", "Transition", "UniformAgent", "make_agent"]
