"""Each bad input of tests/bad_inputs.py, driven through `amc` as a user would: exit code 2, exactly one
`error:` line naming the problem and the fix, no traceback, nothing half-written; and docs/errors.md still
shows the message each one prints."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from bad_inputs import CASES, PAYLOAD_MARKER, Case, prepare, run_case, snapshot

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
FULL_DISK_HOOK_WORKS = Path("/proc/self/fd").is_dir()  # the hook names the file being saved from /proc


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    """case name -> (scratch directory, its snapshot before the run, Outcome). Most cases run through the CLI's
    main() in this process (a fresh interpreter spends most of its time importing torch); those that need their
    own environment run as subprocesses meanwhile."""
    root = tmp_path_factory.mktemp("bad_inputs")

    def run(numbered: tuple[int, Case]):
        i, case = numbered
        scratch = root / f"case{i:02d}"
        prepare(case, scratch)
        before = snapshot(scratch)
        return case.name, (scratch, before, run_case(case, scratch))

    numbered = [(i, c) for i, c in enumerate(CASES) if FULL_DISK_HOOK_WORKS or not c.env]
    with ThreadPoolExecutor(2) as pool:  # fresh interpreters, a few at a time, while this process runs the rest
        fresh = pool.map(run, [n for n in numbered if not n[1].api and n[1].in_fresh_process])
        results = dict(run(n) for n in numbered if n[1].api or not n[1].in_fresh_process)  # main thread, in turn
        results.update(fresh)
    return results


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_line_and_leaves_nothing_half_done(case: Case, outcomes):
    if case.name not in outcomes:
        pytest.skip("the full-disk simulation needs /proc (Linux)")
    scratch, before, outcome = outcomes[case.name]
    assert outcome.returncode == 2, outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, outcome.stderr
    for words in case.expect:
        assert words in outcome.message, f"{words!r} not in {outcome.message!r}"
    assert not (scratch / PAYLOAD_MARKER).exists()  # no pickled code ran
    if case.leaves == "nothing":
        assert snapshot(scratch) == before
    else:  # a run stopped by a failed save: whole files only, and the state a resume starts from
        run = scratch / "run"
        assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
        state = torch.load(run / "state.pt", map_location="cpu", weights_only=True)
        assert 1 <= state["episode"] <= len((run / "episodes.jsonl").read_text().splitlines())


@pytest.mark.skipif(not FULL_DISK_HOOK_WORKS, reason="the full-disk simulation needs /proc (Linux)")
def test_a_search_stopped_by_a_full_disk_resumes_to_the_end(outcomes):
    case = next(c for c in CASES if c.leaves == "state")
    scratch, _, _ = outcomes[case.name]
    r = subprocess.run([sys.executable, "-m", "amc.cli", "search", "--resume", "--out", "run"], cwd=scratch,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    log = [json.loads(line) for line in (scratch / "run" / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in log] == list(range(6))
    assert (scratch / "run" / "model.pt").exists()


def test_debug_shows_the_traceback(tmp_path):
    case = CASES[0]
    prepare(case, tmp_path)
    outcome = run_case(case, tmp_path, extra_args=("--debug",))
    assert outcome.returncode != 0 and "Traceback" in outcome.stderr and "CheckpointError" in outcome.stderr


def test_docs_show_the_message_each_case_prints_now(outcomes):
    doc = DOC.read_text()
    stale = [name for name, (_, _, outcome) in outcomes.items() if f"error: {outcome.message}\n" not in doc]
    assert not stale, f"docs/errors.md is out of date for {stale}; run python scripts/make_errors_doc.py"
