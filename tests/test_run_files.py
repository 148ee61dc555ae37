"""A run directory may come from someone else: amc never writes through a link or onto something it did not make,
never waits on a FIFO it finds there, and `--overwrite` removes exactly what amc wrote, at any depth."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from amc.atomic import append_line, write_bytes_atomic
from amc.errors import AmcError
from amc.run_index import describe_run, list_runs
from amc.runs import LOCK_FILE, RUN_MARKER, RunDir
from amc.safe_open import NotAFileError, read_run_file


def _run(path: Path, **files: str) -> Path:
    """A run as amc leaves one: marker, lock, `files`."""
    run = RunDir(path)
    run.create()
    run.unlock()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


@pytest.mark.parametrize("make", ["symlink", "fifo", "directory"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path, make):
    run = _run(tmp_path / "run", **{"config.json": '{"search": {}}'})
    target = tmp_path / "precious.txt"
    target.write_text("the user's")
    (run / LOCK_FILE).unlink()
    {"symlink": lambda p: p.symlink_to(target), "fifo": os.mkfifo, "directory": os.mkdir}[make](run / LOCK_FILE)
    kind = {"symlink": "a symbolic link", "fifo": "a FIFO", "directory": "a directory"}[make]
    with pytest.raises(NotAFileError, match=f"cannot use run file .*{LOCK_FILE}: it is {kind}, not a regular file"):
        RunDir(run).lock()
    with pytest.raises(NotAFileError):
        RunDir(run).write_timings({"backend": "torch"})  # what `amc report --latency` writes
    assert target.read_text() == "the user's"


def test_a_run_file_on_a_link_is_refused_before_anything_is_written(tmp_path):
    run = _run(tmp_path / "run", **{"config.json": '{"search": {}}'})
    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    (run / "episodes.jsonl").symlink_to(outside)
    with pytest.raises(NotAFileError, match="episodes.jsonl: it is a symbolic link"):
        RunDir(run).lock()
    with pytest.raises(NotAFileError, match="episodes.jsonl: it is a symbolic link"):
        append_line(run / "episodes.jsonl", "{}")
    assert outside.read_text() == ""


def test_whole_file_writes_replace_only_regular_files(tmp_path):
    (tmp_path / "a_dir").mkdir()
    os.mkfifo(tmp_path / "a_fifo")
    (tmp_path / "a_link").symlink_to(tmp_path / "elsewhere")
    for name, kind in (("a_dir", "a directory"), ("a_fifo", "a FIFO"), ("a_link", "a symbolic link")):
        with pytest.raises(NotAFileError, match=kind):
            write_bytes_atomic(tmp_path / name, b"x")
    assert not (tmp_path / "elsewhere").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_reading_a_fifo_or_a_device_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotAFileError, match="a FIFO"):
        read_run_file(tmp_path / "fifo")  # open() would wait for a writer forever
    with pytest.raises(NotAFileError, match="a device"):
        read_run_file(Path(os.devnull))


def test_show_and_runs_refuse_a_fifo_config_without_hanging(tmp_path):
    run = _run(tmp_path / "runs" / "a")
    os.mkfifo(run / "config.json")
    with pytest.raises(AmcError, match="config.json: it is a FIFO"):
        describe_run(run)
    rows = list_runs(tmp_path / "runs")
    assert rows[0]["status"].startswith("unreadable") and "FIFO" in rows[0]["status"]


@pytest.mark.parametrize("foreign", ["tensorboard/notes.txt", ".x.tmp", "config.json/inner.txt", ".amc-lock.tmp"])
def test_overwrite_refuses_a_file_amc_did_not_write_at_any_depth(tmp_path, foreign):
    run = _run(tmp_path / "run", **{"config.json": "{}", "episodes.jsonl": ""})
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"events")
    if foreign.startswith("config.json/"):
        (run / "config.json").unlink()
    path = run / foreign
    path.parent.mkdir(exist_ok=True)
    path.write_text("the user's")
    with pytest.raises(AmcError, match="holds files amc did not write"):
        RunDir(run).check_new(overwrite=True)
    assert path.read_text() == "the user's"


def test_overwrite_removes_what_amc_wrote_including_its_own_temporary_files(tmp_path):
    run = _run(tmp_path / "run", **{"config.json": "{}", ".state.pt.ab12cd_9.tmp": "half a state"})
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"events")
    target = RunDir(run)
    target.check_new(overwrite=True)
    target.create(overwrite=True)
    target.unlock()
    assert sorted(p.name for p in run.iterdir()) == sorted([LOCK_FILE, RUN_MARKER])


def test_a_directory_left_by_a_creation_killed_before_config_is_a_new_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("123\n")
    (run / f".{RUN_MARKER}.abcd1234.tmp").write_text("")
    RunDir(run).check_new(overwrite=False)  # no refusal: nothing of a run was written yet
    (run / "config.json").write_text(json.dumps({"search": {}}))
    with pytest.raises(AmcError, match="pass --resume to continue it"):
        RunDir(run).check_new(overwrite=False)
    with pytest.raises(AmcError, match=r"already exists; pass --overwrite to replace it or choose another --out"):
        RunDir(run).check_new(overwrite=False, resumable=False)  # amc prune has no --resume


def test_a_dangling_link_in_a_run_does_not_break_the_listing(tmp_path):
    run = _run(tmp_path / "runs" / "a", **{"config.json": json.dumps({"search": {"episodes": 3}})})
    (run / "notes").symlink_to(tmp_path / "gone")
    (tmp_path / "runs" / "stray").symlink_to(tmp_path / "also-gone")
    shown = describe_run(run)
    assert {"name": "notes", "bytes": None} in shown["files"]
    assert [r["run"] for r in list_runs(tmp_path / "runs")] == ["a"]
