"""The uniform baseline: the same preserve ratio for every layer (found by bisection to meet the budget)."""

from __future__ import annotations

import numpy as np

from amc.agents.base import Agent, Transition


class UniformAgent(Agent):
    """Answers `ratio` at every step; the search computes it with `CompressionEnv.uniform_ratio()`."""

    name = "uniform"
    episodes_title = "one deterministic episode"

    def __init__(self, obs_dim: int, lbound: float, seed: int, ratio: float = 1.0):
        self.ratio = float(np.clip(ratio, lbound, 1.0))

    def begin_episode(self, episode: int) -> None:
        pass

    def act(self, obs: np.ndarray) -> float:
        return self.ratio

    def end_episode(self, transitions: list[Transition], reward: float) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {"ratio": self.ratio}

    def load_state_dict(self, state: dict) -> None:
        self.ratio = float(state["ratio"])
