"""peer.json: the one record peers.py keeps beside each (method, seed) run directory, read and written here only.

A row holds the method, seed and run directory, the accounted figures (held-out and test top-1, MACs,
parameters, search time) and what was measured later (latency, fine-tune); a peer that could not be run holds
its reason instead. A directory with a peer.json is finished: peers.py skips it, finetune_grid.py plans from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

PEER_FILE = "peer.json"


def read_row(run_dir: str | Path) -> dict | None:
    """The row of a finished (method, seed) directory, None where it is not finished."""
    path = Path(run_dir) / PEER_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_row(run_dir: str | Path, row: dict) -> None:
    from amc.atomic import write_json_atomic

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(run_dir) / PEER_FILE, row)


def rows_under(out: str | Path) -> Iterator[tuple[Path, dict]]:
    """(run directory, row) of every finished method and seed of one peers.py --out, by path."""
    for path in sorted(Path(out).glob(f"*/seed*/{PEER_FILE}")):
        yield path.parent, json.loads(path.read_text())
