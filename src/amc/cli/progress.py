"""Progress on the terminal for long commands: a live rich bar where stderr is a terminal, plain lines with
an ETA elsewhere (logs, CI). Used by `amc.cli` only."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long


class LiveBar:
    """A rich progress bar when stderr is a terminal (`self.bar`), nothing otherwise."""

    bar: Progress | None = None

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)


class EpisodeProgress(LiveBar):
    """A live bar on a terminal; a plain line every ~5% of the run elsewhere (logs, CI)."""

    def __init__(self, total: int, resource: str = "macs"):
        self.total, self.resource = total, resource  # the share shown per episode: "macs" or "params"
        self.live = console.is_terminal
        self.every = max(1, total // 20)
        self.bar = Progress(TextColumn("[bold]episode {task.completed}/{task.total}"), BarColumn(),
                            TextColumn("reward {task.fields[reward]:.4f}  best {task.fields[best]:.4f}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console) if self.live else None
        self.task = self.bar.add_task("search", total=total, reward=0.0, best=0.0) if self.bar else None


    def __call__(self, record: dict) -> None:
        from amc.callbacks import eta_seconds
        if self.bar:
            self.bar.update(self.task, completed=record["episode"] + 1, total=record["episodes"],
                            reward=record["reward"], best=record["best_reward"])
        elif (record["episode"] + 1) % self.every == 0 or record["remaining"] == 0:
            console.print(f"episode {record['episode'] + 1}/{record['episodes']}  reward {record['reward']:.4f}  "
                          f"best {record['best_reward']:.4f}  {self.resource} {record[self.resource + '_ratio']:.3f}  "
                          f"eta {eta_seconds(record):.0f}s", highlight=False)


class StepProgress(LiveBar):
    """Training progress: a live bar with ETA on a terminal; elsewhere (logs) a line every 1% of the steps
    and one per epoch, both with ETA, so a long CPU epoch is not a silent hour."""

    def __init__(self):
        self.bar = Progress(TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console) if console.is_terminal else None
        self.task = self.bar.add_task("train", total=None) if self.bar else None
        self.t0 = time.perf_counter()
        self.first_step: int | None = None

    def step(self, step: int, total: int) -> None:
        if self.bar:
            self.bar.update(self.task, completed=step, total=total)
            return
        if self.first_step is None:
            self.first_step = step - 1  # a resumed run starts mid-way: rate from what this process did
        if step % max(1, total // 100) == 0 and step > self.first_step:
            rate = (time.perf_counter() - self.t0) / (step - self.first_step)
            console.print(f"step {step}/{total}  {rate:.2f}s/step  eta {rate * (total - step):.0f}s", highlight=False)

    def epoch(self, r: dict) -> None:
        elapsed = time.perf_counter() - self.t0
        done = r["epoch"] - r.get("first_epoch", 0)
        eta = elapsed / max(1, done) * (r["epochs"] - r["epoch"])
        console.print(f"epoch {r['epoch']}/{r['epochs']}  loss {r['train_loss']:.4f}  train {r['train_top1']:.4f}  "
                      f"held-out {r['heldout_top1']:.4f}  {r['seconds']:.0f}s  eta {eta:.0f}s", highlight=False)


