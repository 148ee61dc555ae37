"""Issue 31's table: each peers.py row (FastNAS and amc's allocations) before fine-tuning, and after the same
fine-tune by `finetune_grid.py`, one table per budget.

    python benchmarks/fastnas_report.py --peers runs/fastnas/r20-r0.5 runs/fastnas/r20-r0.3 \\
        --grids GRID_BUNDLE:GRID_OUT/results.jsonl [HEADROOM_BUNDLE:HEADROOM_OUT/results.jsonl] --out table.md

A row's fine-tunes are found by policy, not by name: any grid job with the same scorer setup and keep counts
(a model that travels as files, FastNAS's own, by its budget and method), so a policy fine-tuned by another
study with the same recipe (the headroom grid's fixed allocations at 20%) counts with all its seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import mean_std
from finetune_grid import _own_weights, _setup_spec
from grid_files import fine_tunes, job_key, read_jobs, read_records
from peer_methods import METHODS
from peer_rows import rows_under

ORDER = ("fastnas", "fastnas+bn", "fastnas-counts", "ddpg+bn", "shallower-more+bn", "knapsack+bn", "uniform+bn")
LABELS = {"ddpg+bn": "amc default (ddpg+bn: DDPG at the ramp, racing)",
          "shallower-more+bn": "ramp (shallower-more+bn)"}


def fine_tuned(grids: list[str]) -> tuple[dict[str, dict[int, float]], dict[tuple[str, str], str]]:
    """Test top-1 after fine-tuning by job key and fine-tune seed, over every grid; and the key of each
    (budget, method) row that travelled as files."""
    tests: dict[str, dict[int, float]] = {}
    own: dict[tuple[str, str], str] = {}
    for grid in grids:
        bundle, results = grid.split(":")
        done = fine_tunes(read_records([results]))
        for job in read_jobs(bundle):
            for seed in job["ft_seeds"]:
                if (job["id"], seed) in done:
                    tests.setdefault(job["key"], {})[seed] = done[(job["id"], seed)]["test_top1"]
            if "model_file" in job:
                for tag in job["tags"]:
                    own[(tag["budget"], tag["method"])] = job["key"]
    return tests, own


def table(peers_dir: Path, tests: dict, own: dict) -> list[str]:
    lines = ["| method | held-out top-1, no FT | test top-1, no FT | test top-1 after FT | FT seeds | MACs | params | "
             "speed-up, batch 1 (IQR) | search time |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = {row["method"]: (run_dir, row) for run_dir, row in rows_under(peers_dir) if "keep" in row}
    for method in [m for m in ORDER if m in rows] + sorted(set(rows) - set(ORDER)):
        run_dir, row = rows[method]
        if _own_weights(METHODS[method]):
            key = own.get((peers_dir.name, method))
        else:
            key = job_key(_setup_spec(method, run_dir), row["keep"])
        after = tests.get(key, {})
        lines.append(f"| {LABELS.get(method, method)} | {100 * row['heldout_top1']:.2f} | "
                     f"{100 * row['test_top1']:.2f} | **{mean_std(list(after.values()))}** | {len(after)} | "
                     f"{row['macs_ratio']:.3f} | {row['params_ratio']:.3f} | {_speedup(row.get('latency'))} | "
                     f"{_seconds(row.get('search_seconds'))} |")
    return lines


def _speedup(latency: dict | None) -> str:
    return "-" if latency is None else f"{latency['speedup']:.2f}x ({latency['speedup_iqr']:.2f})"


def _seconds(s: float | None) -> str:
    return "-" if s is None else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", nargs="+", required=True, help="peers.py --out directories, one per budget")
    parser.add_argument("--grids", nargs="+", required=True, help="BUNDLE:RESULTS pairs of finetune_grid.py runs")
    parser.add_argument("--out", help="markdown file to write (default: print only)")
    args = parser.parse_args(argv)
    tests, own = fine_tuned(args.grids)
    text = []
    for peers_dir in map(Path, args.peers):
        text += [f"### {peers_dir.name}", ""] + table(peers_dir, tests, own) + [""]
    print("\n".join(text))
    if args.out:
        Path(args.out).write_text("\n".join(text))


if __name__ == "__main__":
    main()
