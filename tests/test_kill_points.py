"""Every kill point leaves a state the next command understands, as a property rather than by examples.

Each whole-file write of amc ends in one rename (`amc.atomic._rename`); a process killed (kill -9, power loss)
stops just before one of them. For a search, a prune and a fine-tune in turn, the harness kills the command at
each of its renames, asks `describe_run` (behind `amc show`) where the run stands, runs the command it suggests
(or, where it says nothing was done, the same command again), and compares the end with an uninterrupted run:
the same episodes, policy, exported tensors and records, nothing lost.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
import torch
from typer.testing import CliRunner

import amc
import amc.atomic
from amc.cli import app
from amc.data import load_dataset
from amc.errors import AmcError
from amc.finetune import finetune
from amc.run_index import describe_run
from amc.train import TrainConfig

SEARCH = dict(agent="ddpg", episodes=3, warmup=1, seed=0, calibration_images=100)  # a state saved per episode
FINETUNE = TrainConfig(epochs=2, batch_size=256)
TIMING = ("seconds", "timing", "search_seconds", "agent_seconds", "seconds_this_session")


class Killed(BaseException):
    """The process dies at a rename: no `except Exception` handler runs, as none would after a kill -9."""


@contextmanager
def killed_at_rename(index: int | None):
    """Run the block with amc's renames counted; the `index`-th one (0-based) kills it. Yields the names renamed."""
    real, names = amc.atomic._rename, []

    def rename(source, target):
        names.append(Path(target).name)
        if len(names) - 1 == index:
            raise Killed(Path(target).name)
        real(source, target)

    with mock.patch.object(amc.atomic, "_rename", rename):
        try:
            yield names
        except Killed:
            pass


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _search(run: Path, digits, **options):
    return amc.search("digits_cnn", digits, out=run, **{**SEARCH, **options})


def _cli(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)


def _records(run: Path) -> dict:
    """What a run holds that must not depend on being killed and continued: episodes, policy, summary, tensors
    (timings left out)."""
    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k not in TIMING}
        if isinstance(value, list):
            return [untimed(v) for v in value]
        return value

    episodes = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()] \
        if (run / "episodes.jsonl").exists() else None
    summary = json.loads((run / "summary.json").read_text())
    tensors = {name: torch.load(run / name, weights_only=True) for name in ("model.pt", "model_finetuned.pt")
               if (run / name).exists()}
    return {"episodes": untimed(episodes), "policy": json.loads((run / "policy.json").read_text()),
            "summary": untimed({k: v for k, v in summary.items() if k != "export"}),
            "tensors": {name: {k: v.tolist() for k, v in t.items()} for name, t in tensors.items()}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits) -> tuple[Path, list[str]]:
    """An uninterrupted search, and the files it renamed into place, in order."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    with killed_at_rename(None) as names:
        _search(run, digits)
    return run, names


def test_a_search_killed_at_any_rename_is_taken_on_by_what_show_suggests(finished, digits, tmp_path):
    reference, renames = finished
    assert renames[-3:] == ["model.pt", "model.json", "summary.json"]  # the export; summary.json last
    for index, name in enumerate(renames):
        run = tmp_path / f"killed-{index}"
        with killed_at_rename(index):
            _search(run, digits)
        if not (run / "config.json").exists():
            with pytest.raises(AmcError, match="not a search run"):
                describe_run(run)
            _search(run, digits)  # nothing of a run yet: the same command again takes the directory over
        else:
            shown = describe_run(run)
            assert shown["status"] != "finished", (index, name)  # summary.json is the last rename
            assert shown["next"] == ["search", "--resume", "--out", str(run)], (index, name, shown["status"])
            _cli(shown["next"])
        assert describe_run(run)["status"] == "finished"
        assert _records(run) == _records(reference), (index, name)


def test_a_resumed_export_killed_half_way_is_never_shown_as_finished(digits, tmp_path):
    """A finished run resumed with more episodes re-exports: killed between model.pt and model.json, it holds a
    new model.pt beside the old summary.json, which must not be presented as the run's result."""
    reference, more, run = tmp_path / "reference", tmp_path / "more", tmp_path / "killed"
    _search(reference, digits, agent="random")  # seed 0: episode 3 of a resume to 4 beats the first three
    shutil.copytree(reference, more)
    with killed_at_rename(None) as renames:
        _search(more, digits, agent="random", episodes=4, resume=True)
    assert (more / "model.pt").read_bytes() != (reference / "model.pt").read_bytes()
    shutil.copytree(reference, run)
    with killed_at_rename(renames.index("model.json")):
        _search(run, digits, agent="random", episodes=4, resume=True)
    shown = describe_run(run)
    assert shown["status"].startswith("export interrupted: resume with"), shown["status"]
    assert shown["best"]["scored_only"]  # the log's best, not the old summary's figures
    with pytest.raises(AmcError, match="holds an unfinished export: it is export interrupted"):
        amc.load_pruned(run)
    with pytest.raises(AmcError, match="cannot fine-tune .*: it is export interrupted: resume with"):
        finetune(run, FINETUNE)
    _cli(shown["next"])
    assert _records(run) == _records(more)


def test_a_prune_killed_at_any_rename_is_redone_as_its_status_says(finished, tmp_path):
    reference, _ = finished
    with killed_at_rename(None) as renames:
        amc.apply_policy(reference, out=tmp_path / "pruned")
    whole = _records(tmp_path / "pruned")
    for index, name in enumerate(renames):
        out = tmp_path / f"killed-{index}"
        with killed_at_rename(index):
            amc.apply_policy(reference, out=out)
        if (out / "config.json").exists():
            status = describe_run(out)["status"]
            assert status.startswith("prune interrupted") and "--overwrite" in status, (index, name, status)
            with pytest.raises(AmcError, match="pass --overwrite to replace it or choose another --out"):
                amc.apply_policy(reference, out=out)  # never --resume, which prune does not have
            amc.apply_policy(reference, out=out, overwrite=True)
        else:
            amc.apply_policy(reference, out=out)  # only the marker and the lock: taken over as it is
        assert describe_run(out)["status"] == "pruned by a saved policy"
        assert _records(out) == {**whole, "episodes": None}, (index, name)


def test_a_finetune_killed_at_any_rename_goes_on_without_losing_a_record(finished, tmp_path):
    reference, _ = finished
    tuned = tmp_path / "tuned"
    shutil.copytree(reference, tuned)
    with killed_at_rename(None) as renames:
        finetune(tuned, FINETUNE)
    assert renames == ["finetune.pt", "finetune.pt", "model_finetuned.pt", "summary.json"]
    for index, name in enumerate(renames):
        run = tmp_path / f"killed-{index}"
        shutil.copytree(reference, run)
        with killed_at_rename(index):
            finetune(run, FINETUNE)
        shown = describe_run(run)
        if shown["next"] is None:  # killed before its first checkpoint: nothing was done, the same command again
            assert shown["status"] == "finished" and shown["finetune"] is None, (index, name)
            finetune(run, FINETUNE)
        else:
            assert shown["next"] == ["finetune", str(run), "--resume"], (index, name, shown["status"])
            _cli(shown["next"])
        assert describe_run(run)["status"] == "finished"
        assert _records(run) == _records(tuned), (index, name)
