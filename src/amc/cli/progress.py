"""Progress on the terminal for long commands: a live rich bar where stderr is a terminal, plain lines with
an ETA elsewhere (logs, CI). Used by `amc.cli` only."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long
STEP_LINES_EVERY = 15.0  # seconds between a log's lines about steps inside a phase


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


class EtaColumn(ProgressColumn):
    """The search's own estimate of the time left (setup and final scoring counted), counting down between
    updates; `-:--:--` while it cannot be told yet."""

    def render(self, task) -> Text:
        eta, at = task.fields.get("eta"), task.fields.get("eta_at")
        if eta is None:
            return Text("-:--:--", style="progress.remaining")
        left = max(0, int(eta - (time.monotonic() - at)))
        return Text(f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}", style="progress.remaining")


class ElapsedColumn(ProgressColumn):
    """Time since the search started, running until it is done (rich's own stops once the bar is full, while
    the final scoring still runs)."""

    def render(self, task) -> Text:
        seconds = int(task.elapsed or 0)
        return Text(f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}", style="progress.elapsed")


class EpisodeProgress(LiveBar):
    """A search's progress: on a terminal a live bar named after the current phase (loading, sampling features,
    scoring the original, episode n/N, final scoring, ...); elsewhere (logs, CI) a plain line when each phase
    starts and every ~5% of the episodes, each with the seconds so far and left. `phase(event)` and
    `__call__(record)` are `amc.search`'s `on_phase` and `progress`."""

    def __init__(self, total: int, resource: str = "macs"):
        self.total, self.resource = total, resource  # the share shown per episode: "macs" or "params"
        self.live = console.is_terminal
        self.every = max(1, total // 20)
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                            ElapsedColumn(), EtaColumn(), console=console) if self.live else None
        self.task = self.bar.add_task("starting", total=None, detail="", eta=None, eta_at=0.0) if self.bar else None
        self.printed = time.monotonic()  # when the last line about steps inside a phase was printed

    def phase(self, event: dict) -> None:
        if "step" in event:  # progress inside a phase: the knapsack's candidates, the finalists' fine-tunes
            detail = f"{event['what']} {event['step']}/{event['steps']}"
            if self.bar:
                self.bar.update(self.task, detail=detail, eta=event["eta"], eta_at=time.monotonic())
            # in a log: each pass's end, and every tenth of it when it has been a while (a big network's pass
            # takes minutes; a small one's lines would only crowd the log)
            elif event["step"] == event["steps"] or (event["step"] % max(1, event["steps"] // 10) == 0
                                                     and time.monotonic() - self.printed >= STEP_LINES_EVERY):
                self.printed = time.monotonic()
                left = f"  ~{event['left']:.0f}s left in these" if event["step"] < event["steps"] else ""
                console.print(f"{event['label']}: {detail}  elapsed {event['elapsed']:.0f}s{left}", highlight=False)
            return
        if event.get("loaded"):  # imagefolder: how long decoding took and the memory the images take
            from amc.callbacks import describe_loading  # here: `amc --help` loads no torch
            console.print(describe_loading(event["loaded"]), highlight=False)
        label = event["label"]
        if event["phase"] == "episodes":
            self.total = event["episodes"]
            self.every = max(1, (event["episodes"] - event["start"]) // 20)
            label = f"episode {event['start']}/{event['episodes']}"
        if self.bar:
            extent = {"completed": event["start"], "total": self.total} if event["phase"] == "episodes" else {}
            self.bar.update(self.task, description=label, eta=event["eta"], eta_at=time.monotonic(), detail="",
                            **extent)
            if event["phase"] == "done":
                self.bar.stop_task(self.task)
        elif event["phase"] == "done":
            console.print(f"done in {event['elapsed']:.0f}s", highlight=False)
        else:
            if event["phase"] == "episodes":
                label = f"episodes: {event['episodes'] - event['start']} to play"
            console.print(f"{label}  elapsed {event['elapsed']:.0f}s{_eta(event['eta'])}", highlight=False)

    def __call__(self, record: dict) -> None:
        if self.bar:
            self.bar.update(self.task, description=f"episode {record['episode'] + 1}/{record['episodes']}",
                            completed=record["episode"] + 1, total=record["episodes"], eta=record["eta"],
                            eta_at=time.monotonic(), detail=f"reward {record['reward']:.4f}  best "
                                                            f"{record['best_reward']:.4f}")
        elif record["done"] % self.every == 0 or record["remaining"] == 0:
            console.print(f"episode {record['episode'] + 1}/{record['episodes']}  reward {record['reward']:.4f}  "
                          f"best {record['best_reward']:.4f}  {self.resource} {record[self.resource + '_ratio']:.3f}  "
                          f"elapsed {record['elapsed']:.0f}s{_eta(record['eta'])}", highlight=False)


def _eta(seconds: float | None) -> str:
    return "" if seconds is None else f"  eta {seconds:.0f}s"


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


