"""The compression environment: a Gymnasium wrapper that walks a budget's decisions and scores the result.

One episode walks the prunable decisions of a `LayerGraph` in order. At step t the agent sees the
paper's 11-feature embedding of layer t and answers a preserve ratio; the budget (`amc.budget.Budget`)
rounds it to a whole (optionally multiple-of-k) channel count and clips it so that the budget stays reachable
(resource-constrained mode), then the episode moves on. After the last decision the candidate is scored and
the reward returned. Costs come from the graph's exact cost model, so the budget holds for the exported,
physically pruned network, not for an estimate of it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import gymnasium as gym
import numpy as np

from amc.agents.base import OBS_FEATURES
from amc.budget import DROP_BELOW, REWARDS, TARGETS, Budget, EnvConfig, allowed_counts, check_budget



class CompressionEnv(gym.Env):
    """Gymnasium environment over the decisions of `budget.graph`, under `budget`.

    `evaluate(keep_counts)` scores a finished candidate (held-out top-1 of the pruned model, in [0, 1]): a number,
    or a record `float()` reads the accuracy from (`amc.scoring.Score`, which the last step's info passes on as
    "score"); it is called once per episode, after the last step.
    Observation: float32 [11] in [0, 1] (see OBS_FEATURES). Action: float32 [1], preserve ratio in [0, 1]
    (values under `lbound` are raised to it). With `drop_blocks`, an action under DROP_BELOW * lbound at the
    decision of a droppable residual block keeps 0 channels, which removes the block, while its stage has
    drops left (`drop_share`); otherwise it is raised to lbound like any other.
    """

    metadata = {"render_modes": []}

    def __init__(self, budget: Budget, evaluate: Callable[[list[int]], Any]):
        super().__init__()
        self.budget = budget
        self.evaluate = evaluate
        self.graph, self.config, self.decisions = budget.graph, budget.config, budget.graph.decisions
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(OBS_FEATURES),), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), dtype=np.float32)
        self._static = self._static_features()
        self.decision_macs = np.asarray(self.graph.decision_macs(), dtype=np.float64)
        self.total_macs = float(self.graph.total_macs)
        self.t = 0
        self.keep = budget.channels.copy()
        self.prev_action = 0.0
        self._deferred = False

    def use_budget(self, budget: Budget) -> None:
        """Clip by `budget` from now on (the same graph under a refitted latency model, `Budget.refitted`)."""
        if budget.graph is not self.graph or budget.config != self.config:
            raise ValueError("a new budget must be over the same graph and settings")
        self.budget = budget

    @contextlib.contextmanager
    def deferred_scoring(self) -> Iterator[None]:
        """Within it, a finished episode is not scored: its accuracy and reward are NaN, for the caller to score
        elsewhere (Ray actors) and to reward with `reward(accuracy, macs, params)`."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False

    # ---- observation ------------------------------------------------------------------------------
    def _static_features(self) -> np.ndarray:
        rows = []
        for d in self.decisions:
            c = d.layer
            rows.append([d.index, 0.0 if c.kind == "conv" else 1.0, c.in_channels, c.out_channels,
                         c.kernel_size, c.stride, c.in_hw[0] * c.in_hw[1]])
        feats = np.asarray(rows, dtype=np.float64)
        scale = feats.max(axis=0)
        scale[scale == 0] = 1.0
        return feats / scale

    def _observation(self) -> np.ndarray:
        t = min(self.t, len(self.decisions) - 1)
        kept = self.keep.copy()
        kept[t:] = self.budget.channels[t:]
        reduced = (self.total_macs - self.graph.macs(kept)) / self.total_macs
        rest = self.decision_macs[t + 1:].sum() / self.total_macs
        layer = self.decision_macs[t] / self.decision_macs.max()
        obs = np.concatenate([self._static[t], [layer, reduced, min(rest, 1.0), self.prev_action]])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    # ---- gymnasium API ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.keep = self.budget.channels.copy()
        self.prev_action = 0.0
        return self._observation(), {"decision": self.decisions[0].consumer}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.t >= len(self.decisions):
            raise RuntimeError("episode is over; call reset()")
        raw = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        t, budget = self.t, self.budget
        count = budget.decide(t, raw, self.keep)
        self.keep[t] = count
        executed = count / int(budget.channels[t])
        self.prev_action = executed
        self.t += 1
        info = {"decision": self.decisions[t].consumer, "keep": count, "action": executed}
        if self.t < len(self.decisions):
            return self._observation(), 0.0, False, False, info
        keep = [int(c) for c in self.keep]
        cost = budget.cost(keep)
        if self.config.constrained and cost > budget.limit + 1e-6:
            raise AssertionError(f"budget violated: {cost} > {budget.limit} (a bug in clipping)")
        score = None if self._deferred else self.evaluate(keep)
        accuracy = float("nan") if score is None else float(score)
        info.update(budget.summarize(keep), accuracy=accuracy, score=score)  # the scorer's own record, as returned
        reward = self.reward(accuracy, info["macs"], info["params"])
        return self._observation(), reward, True, False, info

    def reward(self, accuracy: float, macs: float, params: float) -> float:
        """R_err (as accuracy = 1 - error) or the accuracy-guaranteed -error * log(cost)."""
        error = 1.0 - accuracy
        if self.config.reward == "acc":
            return accuracy
        cost = macs if self.config.reward == "acc-macs" else params
        return -error * math.log(cost)


__all__ = ["DROP_BELOW", "OBS_FEATURES", "REWARDS", "TARGETS", "Budget", "CompressionEnv", "EnvConfig",
           "allowed_counts", "check_budget"]
