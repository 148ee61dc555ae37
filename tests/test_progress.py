"""A search names every phase (to a callback, the "amc" logger and the CLI) and estimates the time left with
the final scoring counted. Times come from a simulated clock wherever a figure is checked."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest

import amc
from amc.callbacks import Phases, Progress
from amc.cli import progress as cli_progress
from amc.data import load_dataset
from amc.finalists import halving_scorings
from amc.search import SearchConfig, final_seconds

SETUP = ["loading", "features", "original", "agent"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(**kw):
    return SearchConfig(**{**dict(agent="ddpg", episodes=4, warmup=1, calibration_images=300, seed=0, ratio=0.5, lbound=0.2), **kw})


def test_phase_events_arrive_in_order_through_the_api_and_every_episode_carries_the_time_left(tmp_path, digits):
    events = []
    loaded = {"images": 1797, "bytes": digits.nbytes, "seconds": 0.5, "cached": False}  # as an imagefolder says
    result = amc.search(config=_config(), data=dataclasses.replace(digits, load_stats=loaded), out=tmp_path / "run",
                        on_phase=lambda e: events.append(("phase", e)), progress=lambda r: events.append(("episode", r)))
    phases = [e["phase"] for kind, e in events if kind == "phase"]
    assert phases == [*SETUP, "episodes", "final", "done"]
    assert [e.get("loaded") for _, e in events if e.get("phase") == "features"] == [loaded]
    assert result.summary["data_bytes"] == digits.nbytes == 1797 * 64
    kinds = [kind if kind == "episode" else e["phase"] for kind, e in events]
    assert kinds == [*SETUP, "episodes", "episode", "episode", "episode", "episode", "final", "done"]
    for kind, e in events:
        if kind == "phase":
            assert e["label"] == amc.callbacks.PHASES[e["phase"]] and e["elapsed"] >= 0
            # the time left is unknown before an episode has finished, and known from then on
            assert (e["eta"] is None) == (e["phase"] in [*SETUP, "episodes"])
        else:
            assert e["eta"] >= 0 and e["done"] == e["episode"] + 1 and e["remaining"] == 3 - e["episode"]
    elapsed = [e["elapsed"] for _, e in events]
    assert elapsed == sorted(elapsed)


def test_the_knapsacks_candidates_are_reported_inside_the_agent_phase(tmp_path, digits, caplog):
    events = []
    with caplog.at_level(logging.INFO, logger="amc"):
        amc.search(config=_config(agent="knapsack", ratio=0.05, lbound=0.05), data=digits, out=tmp_path / "run",
                   on_phase=events.append)
    steps = [e for e in events if "step" in e]
    assert steps and all(e["phase"] == "agent" for e in steps)
    first = [e for e in steps if e["what"] == "knapsack: candidates scored"]
    assert [e["step"] for e in first] == list(range(1, first[0]["steps"] + 1))  # every candidate, in order
    assert first[-1]["left"] == 0 and all(e["left"] >= 0 for e in steps)
    # at 5% the one-pass allocation scores under uniform: a refinement round follows, reported as its own steps
    assert any(e["what"].startswith("knapsack refinement 1") for e in steps)
    assert [e["phase"] for e in events if "step" not in e] == [*SETUP, "episodes", "final", "done"]
    logged = [r.getMessage() for r in caplog.records if "candidates scored" in r.getMessage()]
    assert 1 <= len([m for m in logged if "knapsack: candidates" in m]) <= 11  # every tenth, not every one


def test_the_finalist_stage_and_a_latency_table_are_phases_of_their_own(tmp_path, digits, simulated_timer, caplog):
    events = []
    with caplog.at_level(logging.INFO, logger="amc"):
        result = amc.search(config=_config(finalists=3, finalist_steps=2, target="latency"), data=digits,
                            out=tmp_path / "run", on_phase=events.append)
    assert [e["phase"] for e in events if "step" not in e] == ["loading", "features", "latency", "original", "agent",
                                                               "episodes", "finalists", "final", "done"]
    # the short fine-tunes (minutes each at scale) are followed one by one: three candidates, then the better two
    candidates = result.summary["finalists"]["candidates"]
    assert len(candidates) == 3
    steps = [e for e in events if "step" in e]
    assert {e["phase"] for e in steps} == {"finalists"}
    assert [(e["step"], e["steps"]) for e in steps] == [(i, 5) for i in range(1, 6)]
    assert steps[-1]["left"] == 0 and all(e["what"] == "short fine-tunes scored" for e in steps)
    scored = [r.getMessage() for r in caplog.records if "short fine-tune steps" in r.getMessage()]
    assert len(scored) == 5 and scored[0].startswith(f"amc search: finalist 1/3 (episode {candidates[0]['episode']})")
    assert sum(len(c["finalist_scores"]) for c in candidates) == 5


def test_successive_halving_scores_every_survivor_once_a_round():
    assert [halving_scorings(n) for n in (1, 2, 3, 4, 5, 8)] == [0, 2, 5, 6, 10, 14]


def test_phases_are_logged_at_info_on_the_amc_logger(tmp_path, digits, caplog):
    with caplog.at_level(logging.INFO, logger="amc"):
        amc.search(config=_config(), data=digits, out=tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("amc")]
    starts = [line for line in lines if "so far" in line and "episode " not in line]
    labels = [amc.callbacks.PHASES[p] for p in [*SETUP, "episodes", "final"]]
    assert [line.split(": ", 1)[1].split(" (")[0] for line in starts] == labels
    assert any(line.startswith("amc search: episode 4/4, reward") and "s left)" in line for line in lines)
    assert lines[-1].startswith("amc search: done in")


def test_the_api_prints_nothing_by_default(tmp_path):
    code = ("import amc; amc.search(episodes=2, warmup=1, calibration_images=200, out=%r)" % str(tmp_path / "run"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(episode: int) -> dict:
    return {"episode": episode, "reward": 0.9, "best_reward": 0.9, "macs_ratio": 0.5}


def test_the_time_left_counts_the_episodes_at_their_pace_and_the_final_scoring(capsys, monkeypatch):
    # a plain (piped) console, captured; `_file`, not the `file` property, so that undoing it restores None (the
    # console then follows sys.stderr again) rather than pinning this test's capture stream, closed after it
    monkeypatch.setattr(cli_progress.console, "_file", sys.stderr)
    clock = Clock()
    printer = cli_progress.EpisodeProgress(10)
    assert not printer.live
    phases = Phases(printer.phase, clock=clock)
    for phase, seconds in [("loading", 5), ("features", 60), ("original", 10), ("agent", 1)]:
        phases.start(phase)
        clock.now += seconds
    phases.expect_after_episodes(50.0)  # estimated from the original's scoring (final_seconds below)
    progress = Progress(printer, phases, episodes=10, start_episode=0)
    phases.start("episodes", episodes=10, start=0)
    clock.now += 3
    progress.on_episode(_record(0))
    assert phases.eta() == pytest.approx(9 * 3 + 50)  # nine more at 3 s, then the final scoring
    clock.now += 5  # a slower episode moves the pace: 8 s over two
    progress.on_episode(_record(1))
    assert phases.eta() == pytest.approx(8 * 4 + 50)
    clock.now += 4
    progress.on_episode(_record(2))  # from the third on, the first (slow: the anchor in full) is not the pace
    assert phases.eta() == pytest.approx(7 * (5 + 4) / 2 + 50)
    for episode in range(3, 10):
        clock.now += 4
        progress.on_episode(_record(episode))
    assert phases.eta() == pytest.approx(50)
    phases.start("final")
    clock.now += 20
    assert phases.eta() == pytest.approx(30)  # counting down through the final scoring
    clock.now += 40
    assert phases.eta() == 0.0  # an overrun is not a negative time
    phases.start("done")
    lines = capsys.readouterr().err.splitlines()
    assert lines[:5] == ["loading model and data  elapsed 0s", "sampling features  elapsed 5s",
                         "scoring the original  elapsed 65s", "preparing the agent  elapsed 75s",
                         "episodes: 10 to play  elapsed 76s"]
    assert lines[5] == "episode 1/10  reward 0.9000  best 0.9000  macs 0.500  elapsed 79s  eta 77s"
    assert lines[6] == "episode 2/10  reward 0.9000  best 0.9000  macs 0.500  elapsed 84s  eta 82s"
    assert lines[-3] == "episode 10/10  reward 0.9000  best 0.9000  macs 0.500  elapsed 116s  eta 50s"
    assert lines[-2:] == ["final scoring and export  elapsed 116s  eta 50s", "done in 176s"]


def test_the_final_scoring_is_estimated_from_the_originals_pace():
    dataset = SimpleNamespace(heldout=[0] * 1000, test=[0] * 2000)
    setup = SimpleNamespace(dataset=dataset, scorer=SimpleNamespace(evaluator=SimpleNamespace(size=500)),
                            graph=SimpleNamespace(decisions=[0, 1, 2]))
    # 2 s for 1000 held-out images: the exported network and the uniform and ramp baselines on held-out and
    # test, the original on test; without a budget no baseline is scored
    # (the pruned ones at 0.3 + 0.7 x 0.5 = 0.65 of the original's pace)
    assert final_seconds(setup, _config(ratio=0.5), 2.0) == pytest.approx(0.002 * (3 * 3000 * 0.65 + 2000))
    assert final_seconds(setup, _config(reward="acc-macs"), 2.0) == pytest.approx(0.002 * (3000 + 2000))
    with_finalists = final_seconds(setup, _config(ratio=0.5, finalists=4, finalist_steps=10), 2.0)
    # 2 x 4 x 10 steps of 128 images, ~3 forward passes each, and ~2 x 4 candidates scored on 500 images
    assert with_finalists - final_seconds(setup, _config(ratio=0.5), 2.0) == pytest.approx(
        0.002 * (3 * 80 * 128 + 8 * 500))


def test_the_terminal_bar_is_named_after_the_current_phase_and_its_clock_runs_through_the_final_scoring(
        monkeypatch):
    import io

    from rich.console import Console
    monkeypatch.setattr(cli_progress, "console", Console(file=io.StringIO(), force_terminal=True, width=120))
    clock = Clock()
    with cli_progress.EpisodeProgress(2) as printer:
        assert printer.live
        task = printer.bar.tasks[0]
        phases = Phases(printer.phase, clock=clock)
        phases.start("original")
        assert task.description == "scoring the original" and task.total is None  # pulsing, no ETA yet
        assert "-:--:--" in _rendered(printer)
        phases.start("episodes", episodes=2, start=0)
        progress = Progress(printer, phases, episodes=2, start_episode=0)
        for episode in range(2):
            clock.now += 3
            progress.on_episode(_record(episode))
        assert task.description == "episode 2/2" and task.fields["eta"] == pytest.approx(0.0)
        phases.start("final")
        assert task.description == "final scoring and export" and task.stop_time is None  # the clock runs on
        assert "0:00:00" in _rendered(printer)  # the final scoring's estimate (0 s here) as the time left
        phases.start("done")
        assert task.description == "done" and task.stop_time is not None


def _rendered(printer) -> str:
    console = cli_progress.console
    with console.capture() as capture:
        console.print(printer.bar.get_renderable())
    return capture.get()
