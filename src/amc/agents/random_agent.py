"""The random baseline: uniform preserve ratios in [lbound, 1], clipped by the environment like any agent."""

from __future__ import annotations

import numpy as np

from amc.agents.base import Agent, Transition


class RandomAgent(Agent):
    """Draws every preserve ratio uniformly from [lbound, 1] with its own seeded Generator; learns nothing."""

    name = "random"
    episodes_title = "every episode random"

    def __init__(self, obs_dim: int, lbound: float, seed: int):
        if not 0 <= lbound <= 1:
            raise ValueError(f"lbound must be in [0, 1], got {lbound}")
        self.lbound = float(lbound)
        self.rng = np.random.default_rng(seed)

    def begin_episode(self, episode: int) -> None:
        pass

    def act(self, obs: np.ndarray) -> float:
        return float(self.rng.uniform(self.lbound, 1.0))

    def end_episode(self, transitions: list[Transition], reward: float) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {"lbound": self.lbound, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.lbound = float(state["lbound"])
        self.rng.bit_generator.state = state["rng"]
