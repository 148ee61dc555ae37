"""The interface every searcher implements; the search loop drives agents only through it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

# what an observation holds, in order, each scaled to [0, 1]: the paper's 11-feature layer embedding
OBS_FEATURES = ("index", "type", "in_channels", "out_channels", "kernel", "stride", "feature_map",
                "layer_macs", "reduced_macs", "rest_macs", "prev_action")


@dataclass
class Transition:
    """One step of an episode, i.e. one prunable layer."""

    obs: np.ndarray        # float32 [obs_dim]: the state of layer t, features in [0, 1]
    action: float          # preserve ratio actually executed (after the environment's clipping), in [0, 1]
    next_obs: np.ndarray   # state of layer t + 1 (for the last layer: equal to obs, with done=True)
    done: bool


class Agent(ABC):
    """Proposes a preserve ratio per layer and learns from finished episodes."""

    name: str = "agent"
    episodes_title: str = ""  # how its episodes come about, for a report's title ("every episode random")

    @abstractmethod
    def begin_episode(self, episode: int) -> None:
        """Called before each episode; `episode` counts from 0."""

    @abstractmethod
    def act(self, obs: np.ndarray) -> float:
        """Proposed preserve ratio in [lbound, 1] for the layer whose state is `obs` (float32 [obs_dim]).

        The environment may clip it further to keep the budget reachable; it reports the executed ratio,
        which is what goes into the `Transition`.
        """

    @abstractmethod
    def end_episode(self, transitions: list[Transition], reward: float) -> dict[str, float]:
        """Learn from a finished episode; returns statistics for the log."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to resume exactly: tensors, arrays and JSON-able values only."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()` (as returned by `torch.load(..., weights_only=True)`)."""
