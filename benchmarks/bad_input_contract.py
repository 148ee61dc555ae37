"""Which bad inputs a given version of amc refuses cleanly: the cases of tests/bad_inputs.py, run through the
command line of the amc source tree named by --src (so an earlier commit can be measured beside this one).

A case is clean when the command exits with 2 and one `error:` line holding the case's expected words (the words
name the problem and the right fix), prints no traceback, leaves the directory as it was (or a resumable run, as
the case says), runs no code the input smuggled in, and answers within --timeout seconds (a FIFO that hangs
counts as "hangs"). Usage, from the repository root:

    git worktree add /tmp/amc-before HEAD~1
    python benchmarks/bad_input_contract.py --src /tmp/amc-before/src --groups "A run directory is data" --json
    python benchmarks/bad_input_contract.py --src src --groups "A run directory is data"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bad_inputs import CLI, GROUPS, HOOK_DIR, PAYLOAD_MARKER, Case, prepare, snapshot  # noqa: E402


def verdict(case: Case, scratch: Path, src: Path, timeout: float) -> str:
    """'clean', or what broke the contract first."""
    before = snapshot(scratch)
    env = {**os.environ, "OMP_NUM_THREADS": "1", **case.env,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(scratch / HOOK_DIR) if case.env else "", str(src)]))}
    try:
        r = subprocess.run([*CLI, *case.args], cwd=scratch, capture_output=True, text=True, env=env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "hangs"
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    if (scratch / PAYLOAD_MARKER).exists():
        return "ran the input's code"
    if "Traceback" in r.stderr:
        return "traceback"
    if r.returncode != 2:
        return f"exit {r.returncode}"
    if len(errors) != 1:
        return f"{len(errors)} error lines"
    if not all(words in errors[0] for words in case.expect):
        return "other message"
    if case.leaves == "nothing" and snapshot(scratch) != before:
        return "wrote files"
    return "clean"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="the `src` directory of the amc tree to measure")
    p.add_argument("--groups", nargs="*", help="group titles of tests/bad_inputs.py to run (default: all)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--json", action="store_true", help="one JSON object per case on stdout")
    args = p.parse_args(argv)
    src = Path(args.src).resolve()
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory() as root:
        for title, cases in GROUPS.items():
            if args.groups and not any(title.startswith(g) for g in args.groups):
                continue
            for i, case in enumerate(c for c in cases if not c.api):
                scratch = Path(root) / f"{len(counts)}-{i}"
                prepare(case, scratch)
                outcome = verdict(case, scratch, src, args.timeout)
                counts[(title, outcome == "clean")] += 1
                print(json.dumps({"group": title, "case": case.name, "verdict": outcome}) if args.json
                      else f"{outcome:>22}  {title}: {case.name}", flush=True)
    for title in dict.fromkeys(t for t, _ in counts):
        clean, total = counts[(title, True)], counts[(title, True)] + counts[(title, False)]
        print(f"{title}: {clean} of {total} clean", file=sys.stderr)


if __name__ == "__main__":
    main()
