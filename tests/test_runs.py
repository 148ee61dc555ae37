"""What amc writes: a run directory is amc's only if amc made it, one process writes it at a time, and files come
out with the mode the user's umask gives. Every refusal here happens before any work, so the tests are fast."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import amc
from amc.atomic import write_bytes_atomic
from amc.errors import AmcError
from amc.runs import LOCK_FILE, RUN_MARKER, RunDir

HOLD_LOCK = """
import sys
from amc.runs import RunDir
RunDir(sys.argv[1]).lock()
print("locked", flush=True)
sys.stdin.read()  # held until the test kills this process
"""


def _amc_run(path: Path) -> Path:
    """A finished run as amc leaves it: its marker first, then its files."""
    run = RunDir(path)
    run.create()
    run.unlock()
    (path / "config.json").write_text("{}")
    (path / "model.pt").write_bytes(b"weights")
    return path


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _search(out, **options):
    return amc.search("digits_cnn", "digits", out=out, agent="uniform", calibration_images=50, **options)


def test_a_new_run_starts_with_amcs_marker(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create()
    run.unlock()
    assert (tmp_path / "run" / RUN_MARKER).is_file()


def test_overwrite_replaces_a_run_amc_created(tmp_path):
    path = _amc_run(tmp_path / "run")
    run = RunDir(path)
    run.check_new(overwrite=True)
    run.create(overwrite=True)
    run.unlock()
    assert sorted(p.name for p in path.iterdir()) == sorted([RUN_MARKER, LOCK_FILE])


@pytest.mark.parametrize("where", ["current directory", "parent of it"])
def test_overwrite_never_replaces_the_current_directory_or_one_above(tmp_path, monkeypatch, where):
    cwd = _amc_run(tmp_path / "work")  # even a run: the user is standing in it
    inside = cwd / "deeper"
    inside.mkdir()
    monkeypatch.chdir(inside if where == "parent of it" else cwd)
    before = _files(tmp_path)
    with pytest.raises(AmcError, match="current directory or one above it"):
        _search(".." if where == "parent of it" else ".", overwrite=True)
    assert _files(tmp_path) == before


def test_overwrite_never_replaces_a_directory_amc_did_not_create(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(AmcError, match=f"not a run amc created \\(no {RUN_MARKER}\\)"):
        _search(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_overwrite_never_replaces_a_run_holding_other_files(tmp_path):
    path = _amc_run(tmp_path / "run")
    (path / "notes.txt").write_text("my notes")
    before = _files(path)
    with pytest.raises(AmcError, match="holds files amc did not write \\(notes.txt\\)"):
        _search(path, overwrite=True)
    assert _files(path) == before


def test_overwrite_never_follows_a_symbolic_link(tmp_path):
    target = _amc_run(tmp_path / "run")
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    before = _files(target)
    with pytest.raises(AmcError, match="symbolic link"):
        _search(tmp_path / "link", overwrite=True)
    assert _files(target) == before


def test_prune_never_overwrites_its_own_policy(tmp_path):
    path = _amc_run(tmp_path / "run")
    policy = {"model": "digits_cnn", "consumers": ["features.1.0", "features.3.0", "features.4.0", "classifier"],
              "channels": [32, 64, 64, 128], "keep": [16, 32, 32, 64]}
    (path / "policy.json").write_text(json.dumps(policy))
    before = _files(path)
    with pytest.raises(AmcError, match="would delete .*policy.json, an input of this command"):
        amc.apply_policy(path / "policy.json", out=path, overwrite=True, calibration_images=50)
    assert _files(path) == before


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    path = _amc_run(tmp_path / "run")
    holder = RunDir(path)
    holder.lock()
    try:
        before = _files(path)
        with pytest.raises(AmcError, match=f"in use by another amc process \\(pid {os.getpid()}\\)"):
            _search(path, overwrite=True)
        # a new search into a fresh directory it creates: refused the same way if the lock is taken first
        with pytest.raises(AmcError, match=f"pid {os.getpid()}"):
            RunDir(path).lock()
        assert {k: v for k, v in _files(path).items() if k != LOCK_FILE} == \
            {k: v for k, v in before.items() if k != LOCK_FILE}
    finally:
        holder.unlock()
    RunDir(path).lock()  # released: the next writer gets it


def test_the_lock_of_a_killed_process_never_blocks_the_next_one(tmp_path):
    path = _amc_run(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "locked"  # waits for the state, not for a time
    with pytest.raises(AmcError, match=f"pid {process.pid}"):
        RunDir(path).lock()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (path / LOCK_FILE).exists()  # the stale file stays; the OS released its lock with the process
    run = RunDir(path)
    run.lock()
    assert (path / LOCK_FILE).read_text().strip() == str(os.getpid())
    run.unlock()


def test_an_onnx_export_never_writes_over_a_file_of_a_run(tmp_path):
    pytest.importorskip("onnx", reason="the optional extra `onnx`")
    from torch import nn

    from amc.onnx_export import export_onnx
    path = _amc_run(tmp_path / "run")
    before = _files(path)
    with pytest.raises(AmcError, match="model.pt is a file of the amc run"):
        export_onnx(nn.Linear(4, 2), path / "model.pt", (4,))
    assert _files(path) == before
    export_onnx(nn.Linear(4, 2), path / "model.onnx", (4,))  # a new file beside the run's own is fine


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_keep_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "new.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == mode


def test_atomic_writes_keep_an_existing_files_mode(tmp_path):
    path = tmp_path / "shared.json"
    path.write_text("old")
    path.chmod(0o664)
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o664


def test_finetune_and_report_never_write_into_a_run_another_process_is_writing(tmp_path):
    from amc.finetune import finetune
    from amc.train import TrainConfig
    path = _amc_run(tmp_path / "run")
    (path / "config.json").write_text('{"search": {}}')
    holder = RunDir(path)
    holder.lock()
    try:
        before = _files(path)
        with pytest.raises(AmcError, match=f"in use by another amc process \\(pid {os.getpid()}\\)"):
            finetune(path, TrainConfig(epochs=1))
        with pytest.raises(AmcError, match="in use by another amc process"):
            RunDir(path).write_report("<html></html>", {})
        assert {k: v for k, v in _files(path).items() if k != LOCK_FILE} == \
            {k: v for k, v in before.items() if k != LOCK_FILE}
    finally:
        holder.unlock()


def test_a_lock_already_held_stays_held_after_a_nested_write(tmp_path):
    path = _amc_run(tmp_path / "run")
    run = RunDir(path)
    run.lock()
    try:
        run.write_timings({"ms": 1.0})  # takes the lock this process holds already, and must not drop it
        with pytest.raises(AmcError, match="in use"):
            RunDir(path).lock()
    finally:
        run.unlock()


# ---- every run file a command reads, fed random bytes and random JSON (Hypothesis) ---------------------------

KEYS = ["search", "data_fingerprint", "weights_sha256", "decisions", "baseline", "model", "info", "name",
        "num_classes", "kwargs", "offset_ms", "scale", "macs", "macs_ratio", "finetune", "episode", "reward",
        "accuracy", "keep", "seed", "episodes", "ratio", "agent_options"]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5), max_leaves=10)
SETTINGS = ["seed", "episodes", "ratio", "lbound", "threads", "warmup", "agent", "agent_options", "racing", "model"]


def _readers():
    """file -> how commands read it (each through RunDir, or the one class that owns it)."""
    from amc.policy import Policy
    return {"config.json": lambda run: (run.read_config(), run.settings(), run.search_config()),
            "summary.json": RunDir.read_summary, "model.json": RunDir.read_model_meta,
            "latency_calibration.json": RunDir.read_latency_calibration, "latency.json": RunDir.read_timings,
            "episodes.jsonl": lambda run: (run.read_episodes(),  # resuming after every logged episode
                                           run.restore_episodes((run / "episodes.jsonl").read_bytes().count(b"\n"))),
            "policy.json": lambda run: Policy.load(run / "policy.json"), "state.pt": RunDir.load_state}


def _read_refuses_or_returns(name: str, content: bytes) -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(tmp)
        (run / "state.pt").write_bytes(b"x")  # a resumable run, whatever config.json holds
        (run / name).write_bytes(content)
        try:
            _readers()[name](run)
        except AmcError as e:
            assert "\n" not in str(e) and name in str(e)
        assert (run / name).read_bytes() == content  # never a changed input


@settings(max_examples=40, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(_readers())), content=st.binary(max_size=64))
def test_a_run_file_of_random_bytes_is_refused_in_one_line(name, content):
    _read_refuses_or_returns(name, content)


# a valid record of each file, which the test below damages one key (or one setting) at a time
TEMPLATES = {
    "config.json": {"search": {}, "data_fingerprint": {}, "weights_sha256": None, "decisions": [], "baseline": {},
                    "model": {"name": "digits_cnn", "num_classes": 10}},
    "summary.json": {"model": "digits_cnn", "macs": 1, "macs_ratio": 0.5, "best_episode": 0, "baseline": {}},
    "model.json": {"info": {"name": "digits_cnn", "num_classes": 10, "kwargs": {}}},
    "latency_calibration.json": {"offset_ms": 0.1, "scale": 1.0, "info": {}},
    "latency.json": {"original_ms": 1.0},
    "episodes.jsonl": {"episode": 0, "reward": 0.9, "accuracy": 0.9, "keep": [1, 2], "scored_images": 10},
    "policy.json": {"model": "digits_cnn", "consumers": ["a"], "channels": [4], "keep": [2]},
    "state.pt": {"episode": 1, "agent": {}, "best": "", "rng": None},
}


def _damaged(name: str, index: int, value, mode: str):
    record = json.loads(json.dumps(TEMPLATES[name]))
    key = sorted(record)[index % len(record)]
    if mode == "random":
        return value
    if mode == "delete":
        record.pop(key)
    elif mode == "setting" and name == "config.json":
        record["search"][SETTINGS[index % len(SETTINGS)]] = value
    else:
        record[key] = value
    return record


@settings(max_examples=400, deadline=None, derandomize=True)  # CI sees the same examples every run
@example(name="policy.json", index=2, value=[float("inf")], mode="replace", lines=1)  # keep: int(inf) overflows
@example(name="config.json", index=6, value="", mode="setting", lines=1)  # an empty --agent, found by this test
@example(name="state.pt", index=2, value=-1, mode="replace", lines=1)                 # episode -1
@example(name="config.json", index=0, value=-1, mode="setting", lines=1)              # seed -1
@example(name="latency_calibration.json", index=2, value=0, mode="replace", lines=1)  # scale 0
@example(name="episodes.jsonl", index=3, value="high", mode="replace", lines=2)       # reward "high"
@given(name=st.sampled_from(sorted(_readers())), index=st.integers(0, 100), value=JSON,
       mode=st.sampled_from(["random", "replace", "delete", "setting"]), lines=st.integers(1, 3))
def test_a_run_file_of_damaged_json_is_read_or_refused_in_one_line(name, index, value, mode, lines):
    record = _damaged(name, index, value, mode)
    if name == "state.pt":
        import io

        import torch
        buffer = io.BytesIO()
        torch.save(record, buffer)
        content = buffer.getvalue()
    else:
        content = ((json.dumps(record) + "\n") * (lines if name == "episodes.jsonl" else 1)).encode()
    _read_refuses_or_returns(name, content)


def test_search_and_prune_summaries_name_the_held_out_score_alike():
    """One `RunSummary` for a search and a prune: the held-out top-1 is `heldout_top1` in both, an earlier search's
    `best_val_top1` is read as it, what this amc does not know is kept, and a field that does not apply is left
    out of the file."""
    from amc.runs import RunSummary

    search = {"model": "digits_cnn", "agent": "ddpg", "episodes": 3, "heldout_top1": 0.9, "test_top1": 0.8,
              "macs": 10, "export": {"model.pt": "0" * 64}, "from_a_newer_amc": [1]}
    assert RunSummary.from_dict(search).to_dict() == search
    assert RunSummary.from_dict({"model": "digits_cnn", "best_val_top1": 0.9}).heldout_top1 == 0.9
    pruned = RunSummary(model="digits_cnn", policy_source="run/policy.json", heldout_top1=0.7)
    assert pruned.to_dict() == {"model": "digits_cnn", "policy_source": "run/policy.json", "heldout_top1": 0.7}
