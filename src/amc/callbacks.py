"""The side jobs of a search, one per class, each with one per-episode hook (stable-baselines3's callbacks).

The loop in `amc.search` plays and learns from episodes; after each, `CallbackList.on_episode(record)` runs
these in order: keep the best policy, check a latency budget on the real network, log the episode, save the
resumable state, then TensorBoard and progress. `on_end(summary)` closes them. `Phases` tells the phases of
the whole search (setup, episodes, final scoring) and the time left, to a callback and the "amc.search" logger.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from amc.env import CompressionEnv
from amc.errors import AmcError
from amc.latency.guard import LatencyGuard
from amc.policy import policy_from_record
from amc.runs import TENSORBOARD_DIR, RunDir


class Callback:
    """What runs around each episode of a search. A user's own callbacks (`amc.search(callbacks=[...])`) run after
    amc's, so the episode they see is already logged and saved."""

    def on_episode(self, record: dict) -> bool | None:
        """Called once per finished episode, in episode order, after the agent learned from it. Return True to
        stop the search after this episode: the best policy so far is exported as usual, and summary.json says
        who stopped it (`--resume` would go on to the planned episodes)."""

    def on_end(self, summary: dict) -> None:
        """Called once after the export, with the run's summary."""


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback | None]):
        self.callbacks = [c for c in callbacks if c is not None]

    def on_episode(self, record: dict) -> list[str]:
        """Every callback sees the episode; returns the names of those that asked to stop."""
        return [type(c).__name__ for c in self.callbacks if c.on_episode(record)]

    def on_end(self, summary: dict) -> None:
        for callback in self.callbacks:
            callback.on_end(summary)


class BestPolicy(Callback):
    """The highest-reward episode so far, saved to policy.json whenever it changes. A best that a refitted
    latency budget left over the budget (`over_budget`) gives way to any later episode."""

    def __init__(self, run: RunDir, graph, model_name: str, record: dict | None = None):
        self.run, self.graph, self.model_name, self.record = run, graph, model_name, record

    def on_episode(self, record: dict) -> None:
        if self.record is None or self.record.get("over_budget") or record["reward"] > self.record["reward"]:
            self.replace(record)

    def replace(self, record: dict) -> None:
        self.record = record
        self.run.write_policy(policy_from_record(record, self.graph, self.model_name))


class LatencyCheck(Callback):
    """Every few episodes, measure the best policy on the real network (`LatencyGuard`); when the guard refits
    the latency table, refresh the environment's budget and choose the best again among what meets it."""

    def __init__(self, guard: LatencyGuard, env: CompressionEnv, best: BestPolicy, log: list[dict], run: RunDir):
        self.guard, self.env, self.best, self.log, self.run = guard, env, best, log, run

    def on_episode(self, record: dict) -> None:
        if not self.guard.due(record["episode"], self.best.record):
            return
        entry = self.guard.check(self.best.record)
        self.run.write_latency_calibration(self.guard.latency.calibration())
        if not entry["refit"]:
            return
        self.env.refresh_costs()  # the budget moved with the refitted latency model
        chosen = self.guard.best_within([*self.log, record])  # the log holds the episodes before this one
        if chosen is None:
            self.best.record["over_budget"] = True  # kept (and saved) only until an episode meets the budget
        elif chosen is not self.best.record:
            self.best.replace(chosen)


class EpisodeLog(Callback):
    """One line per episode in episodes.jsonl (with the best reward so far), and the in-memory log."""

    def __init__(self, run: RunDir, best: BestPolicy, log: list[dict]):
        self.run, self.best, self.log = run, best, log

    def on_episode(self, record: dict) -> None:
        record["best_reward"] = self.best.record["reward"]
        self.log.append(record)
        self.run.append_episode(record)


class SaveState(Callback):
    """state.pt after every episode (atomically): a killed search resumes after its last finished episode."""

    def __init__(self, run: RunDir, agent, best: BestPolicy):
        self.run, self.agent, self.best = run, agent, best

    def on_episode(self, record: dict) -> None:
        self.run.save_state(self.agent.state_dict(), record["episode"] + 1, self.best.record)


class TensorBoard(Callback):
    """Optional (`--tensorboard`): every episode's figures under RUN_DIR/tensorboard; episodes.jsonl stays
    the record. Refuses before any work when the package is missing."""

    def __init__(self, run: RunDir, start_episode: int):
        writer = summary_writer()
        # purge_step: a resumed run drops what an interrupted one wrote past its saved state
        self.writer = writer(log_dir=str(run / TENSORBOARD_DIR), purge_step=start_episode or None)

    def on_episode(self, record: dict) -> None:
        step = record["episode"]
        for key in ("reward", "accuracy", "best_reward", "macs_ratio", "params_ratio", "seconds", "scored_images"):
            if key in record:
                self.writer.add_scalar(f"episode/{key}", record[key], step)
        for group in ("timing", "agent"):
            for key, value in record.get(group, {}).items():
                self.writer.add_scalar(f"{group}/{key}", value, step)

    def on_end(self, summary: dict) -> None:
        lines = [f"| {key} | {summary[key]} |" for key in ("best_episode", "best_val_top1", "test_top1", "macs_ratio",
                                                          "params_ratio", "episodes") if key in summary]
        self.writer.add_text("summary", "| figure | value |\n| --- | --- |\n" + "\n".join(lines))
        self.writer.close()


def summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AmcError("--tensorboard needs the tensorboard package: pip install 'amc-compress[tensorboard]' "
                       "(or drop --tensorboard)") from None
    return SummaryWriter


logger = logging.getLogger("amc.search")  # phases and progress at INFO: silent unless a user enables logging

PHASES = {  # the phases of a search in order, and what progress calls them
    "loading": "loading model and data",
    "features": "sampling features",
    "latency": "measuring the latency table",
    "original": "scoring the original",
    "agent": "preparing the agent",
    "episodes": "episodes",
    "finalists": "finalist fine-tunes",
    "final": "final scoring and export",
    "done": "done",
}
AFTER_EPISODES = ("finalists", "final")


class Phases:
    """The phases of a search as they start, each one reported to `on_phase(event)` and to the "amc.search"
    logger at INFO, with the seconds so far and the seconds left (`eta`).

    The time left is the episodes left at the pace of those played in this process (everything between two
    episodes included; from the third on, the first is left out: it scores the anchor in full and pays one-off
    costs, and at 60 episodes it alone put the ETA 50% over after 10% of them), plus `final_seconds`: the search's estimate of what follows the episodes (the final
    scoring and export, the finalist stage), made from the original's scoring measured during setup. It is
    None until the first episode has finished. `clock` is replaceable for tests.
    """

    def __init__(self, on_phase: Callable[[dict], None] | None = None, clock: Callable[[], float] = time.perf_counter):
        self.on_phase, self.clock = on_phase, clock
        self.started = self.since = clock()
        self.current: str | None = None
        self.seconds: dict[str, float] = {}   # each finished phase's duration
        self.episodes = 0                     # episodes to play in this process
        self.played = 0                       # ... played so far
        self.final_seconds = 0.0              # estimate of the phases after the episodes
        self._first_done: float | None = None  # when the first episode of this process ended
        self._episodes_ended: float | None = None

    def start(self, phase: str, **details) -> None:
        now = self.clock()
        if self.current is not None:
            self.seconds[self.current] = now - self.since
        if phase in AFTER_EPISODES and self._episodes_ended is None:
            self._episodes_ended = now
        self.current, self.since = phase, now
        event = {"phase": phase, "label": PHASES[phase], "elapsed": self.elapsed(), "eta": self.eta(), **details}
        if phase == "done":
            logger.info("amc search: done in %.0f s", event["elapsed"])
        else:
            logger.info("amc search: %s (%.0f s so far%s)", PHASES[phase], event["elapsed"], _left(event["eta"]))
        if self.on_phase:
            self.on_phase(event)

    def episode_done(self) -> None:
        self.played += 1
        if self.played == 1:
            self._first_done = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def eta(self) -> float | None:
        """Seconds left in the search; None while it cannot be told yet (before the first episode ends)."""
        now = self.clock()
        if self.current == "done":
            return 0.0
        if self._episodes_ended is not None:
            return max(0.0, self.final_seconds - (now - self._episodes_ended))
        if self.current != "episodes" or not self.played:
            return None
        if self.played >= 3:  # the first episode (the anchor scored in full, one-off costs) is not the pace
            pace = (now - self._first_done) / (self.played - 1)
        else:
            pace = (now - self.since) / self.played
        return pace * max(0, self.episodes - self.played) + self.final_seconds


def _left(eta: float | None) -> str:
    return "" if eta is None else f", about {eta:.0f} s left"


class Progress(Callback):
    """After every episode: `progress(record)` with the episode's record plus the run's progress (episodes,
    done, remaining, elapsed: seconds since the search started, eta: seconds left in the whole search, final
    scoring included), and a line on the "amc.search" logger every ~5% of the episodes."""

    def __init__(self, progress: Callable[[dict], None] | None, phases: Phases, episodes: int, start_episode: int):
        self.progress, self.phases, self.episodes, self.start_episode = progress, phases, episodes, start_episode
        self.every = max(1, (episodes - start_episode) // 20)

    def on_episode(self, record: dict) -> None:
        self.phases.episode_done()
        episode, done = record["episode"], record["episode"] + 1 - self.start_episode
        report = {**record, "episodes": self.episodes, "elapsed": self.phases.elapsed(), "done": done,
                  "remaining": self.episodes - episode - 1, "eta": self.phases.eta()}
        if done % self.every == 0 or not report["remaining"]:
            logger.info("amc search: episode %d/%d, reward %.4f, best %.4f (%.0f s so far%s)", episode + 1,
                        self.episodes, record["reward"], record.get("best_reward", record["reward"]),
                        report["elapsed"], _left(report["eta"]))
        if self.progress:
            self.progress(report)


__all__ = ["PHASES", "BestPolicy", "Callback", "CallbackList", "EpisodeLog", "LatencyCheck", "Phases", "Progress",
           "SaveState", "TensorBoard", "summary_writer"]
