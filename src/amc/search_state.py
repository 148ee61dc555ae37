"""What a search knows after each episode, kept by the loop itself before any callback sees the episode.

`SearchState.add(record)` takes a finished episode: it becomes the best policy if its reward is higher (a
best that a refitted latency budget left over the budget gives way to any later episode); under a latency
budget the best is measured on the real network every few episodes (`LatencyGuard`) and, when the latency
table is refitted, the environment searches on the refitted budget and the best is chosen again among what
meets it. The episode's files are then written in one fixed order: policy.json when the best changed, the
latency calibration when checked, the episode's line, and state.pt last (the point a killed search resumes
from). Callbacks only read what this leaves, so their order does not matter.
"""

from __future__ import annotations

from amc.env import CompressionEnv
from amc.latency.guard import LatencyGuard
from amc.policy import policy_from_record
from amc.runs import RunDir


class SearchState:
    """The log of episodes (`log`), the best so far (`best`, a log record) and the run's files that record them.
    `agent` is saved with each episode; `guard` and `env` are given under a latency budget."""

    def __init__(self, run: RunDir, graph, model_name: str, agent, log: list[dict], best: dict | None,
                 guard: LatencyGuard | None = None, env: CompressionEnv | None = None):
        self.run, self.graph, self.model_name, self.agent = run, graph, model_name, agent
        self.log, self.best, self.guard, self.env = log, best, guard, env

    def add(self, record: dict) -> None:
        """Take a finished episode (its record gains `best_reward`, the best reward so far) and save it."""
        best = self.best
        if best is None or best.get("over_budget") or record["reward"] > best["reward"]:
            best = record
        if self.guard is not None and self.guard.due(record["episode"], best):
            best = self._check_latency(best, record)
        if best is not self.best:
            self.best = best
            self.run.write_policy(policy_from_record(best, self.graph, self.model_name))
        record["best_reward"] = self.best["reward"]
        self.log.append(record)
        self.run.append_episode(record)
        self.run.save_state(self.agent.state_dict(), record["episode"] + 1, self.best)

    def _check_latency(self, best: dict, record: dict) -> dict:
        """Measure `best` on the real network; after a refit, search on the refitted budget and choose again."""
        entry = self.guard.check(best)
        self.run.write_latency_calibration(self.guard.latency.calibration())
        if not entry["refit"]:
            return best
        self.env.use_budget(self.guard.budget)
        chosen = self.guard.best_within([*self.log, record])  # the log holds the episodes before this one
        if chosen is None:
            best["over_budget"] = True  # kept (and saved) only until an episode meets the budget
            return best
        return chosen


__all__ = ["SearchState"]
