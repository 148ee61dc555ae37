"""What watches a search, one class per job, each with one per-episode hook (stable-baselines3's callbacks).

The loop in `amc.search` plays and learns from episodes and records each one (`amc.search_state`: the best
policy, the latency checks, the run's files); then `CallbackList.on_episode(record)` shows it to every
callback: TensorBoard, progress, and the user's own. They only read what the loop recorded, so their order
does not matter; any of them may stop the search. `on_end(summary)` closes them. `Phases` tells the phases of
the whole search (setup, episodes, final scoring) and the time left, to a callback and the "amc.search" logger.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from amc.errors import AmcError
from amc.runs import TENSORBOARD_DIR, RunDir


class Callback:
    """What runs after each episode of a search (`amc.search(callbacks=[...])` for a user's own): the episode it
    sees is already logged and saved, its record holds the best reward so far (`best_reward`)."""

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
        lines = [f"| {key} | {summary[key]} |" for key in ("best_episode", "heldout_top1", "test_top1", "macs_ratio",
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
    costs, and at 60 episodes it alone put the ETA 50% over after 10% of them), plus `final_seconds`: the
    search's estimate of what follows the episodes (the final scoring and export, the finalist stage), made from
    the original's scoring measured during setup (`expect_after_episodes`). It is None until the first episode
    has finished. The "episodes" phase starts with `episodes=` (the planned end) and `start=` (the first one
    played here); the "features" phase, which follows the loading, with `loaded=` (the dataset's `load_stats`:
    how long decoding its images took and the memory they take, logged by `describe_loading`; None where the
    data needed no decoding). A long phase may report progress inside it (`step`): the same phase again with
    `step`, `steps`, `what` and `left`. `clock` is replaceable for tests.
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
        self._steps_from = self.started  # when the steps being reported began: the phase's start or the last steps' end

    def start(self, phase: str, **details) -> None:
        now = self.clock()
        if self.current is not None:
            self.seconds[self.current] = now - self.since
        if phase in AFTER_EPISODES and self._episodes_ended is None:
            self._episodes_ended = now
        self.current, self.since = phase, now
        self._steps_from = now
        if phase == "episodes":
            self.episodes = details["episodes"] - details.get("start", 0)
        event = {"phase": phase, "label": PHASES[phase], "elapsed": self.elapsed(), "eta": self.eta(), **details}
        if details.get("loaded"):
            logger.info("amc search: %s", describe_loading(details["loaded"]))
        if phase == "done":
            logger.info("amc search: done in %.0f s", event["elapsed"])
        else:
            logger.info("amc search: %s (%.0f s so far%s)", PHASES[phase], event["elapsed"], _left(event["eta"]))
        if self.on_phase:
            self.on_phase(event)

    def step(self, done: int, total: int, what: str) -> None:
        """Progress inside the current phase (the knapsack's candidates or the finalists' short fine-tunes, minutes
        on a large network): reported to `on_phase` as the phase again with `step`, `steps`, `what` and `left`, the
        seconds left in these steps at their pace so far; logged at every tenth of them."""
        now = self.clock()
        left = (now - self._steps_from) / done * (total - done)
        event = {"phase": self.current, "label": PHASES[self.current], "elapsed": self.elapsed(), "eta": self.eta(),
                 "step": done, "steps": total, "what": what, "left": left}
        if done == total or done % max(1, total // 10) == 0:
            logger.info("amc search: %s: %s %d/%d (%.0f s so far, ~%.0f s left in these)", PHASES[self.current],
                        what, done, total, event["elapsed"], left)
        if done == total:
            self._steps_from = now  # the next steps of this phase start here
        if self.on_phase:
            self.on_phase(event)

    def expect_after_episodes(self, seconds: float) -> None:
        """The search's estimate of the seconds the phases after the episodes take (the final scoring, export
        and finalist stage)."""
        self.final_seconds = seconds

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


def describe_loading(stats: dict) -> str:
    """A dataset's `load_stats` as one line: how many images, decoded or read from amc's cache in how many
    seconds, and the memory they take."""
    how = "read from the cache" if stats["cached"] else "decoded"
    size = f"{stats['bytes'] / 2**30:.2f} GiB" if stats["bytes"] >= 2**30 else f"{stats['bytes'] / 2**20:.1f} MiB"
    return f"data: {stats['images']:,} images {how} in {stats['seconds']:.1f} s, {size} in memory"


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


__all__ = ["PHASES", "Callback", "CallbackList", "Phases", "Progress", "TensorBoard", "describe_loading",
           "summary_writer"]
