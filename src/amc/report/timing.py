"""The optional latency of a report: the original and the pruned model timed (`amc report --latency`) into
latency.json, or a latency-target search's own measurement from summary.json."""

from __future__ import annotations

import warnings
from pathlib import Path

from amc.errors import AmcError
from amc.latency import measure_latency
from amc.report.run import Run, load_run, original_architecture
from amc.runs import SUMMARY_FILE, TIMINGS_FILE, RunDir


def read_latency(run: Run) -> dict | None:
    """Latency of the original and the pruned model (ms), from summary.json (a latency-target search) or
    latency.json (`amc report --latency`); None if neither was measured."""
    source = run.summary.latency
    origin = SUMMARY_FILE
    if not source:
        try:
            timings = run.files.read_timings()
        except AmcError:
            warnings.warn(f"{run.files / TIMINGS_FILE} is corrupt; latency left out", stacklevel=2)
            return None
        if timings is not None:
            source, origin = timings, TIMINGS_FILE
    if not isinstance(source, dict):
        return None

    def ms(kind: str) -> float | None:
        value = source.get(f"{kind}_ms")
        if value is None and isinstance(source.get(kind), dict):
            value = source[kind].get("median_ms")
        return float(value) if value is not None else None

    original, pruned = ms("original"), ms("pruned")
    if original is None or pruned is None:
        return None
    return {"original_ms": original, "pruned_ms": pruned, "backend": source.get("backend", "?"),
            "threads": source.get("threads", "?"), "batch": source.get("batch", "?"), "source": origin}


def measure_run_latency(run_dir: str | Path, *, backend: str | None = None, threads: int | None = None,
                        batch: int | None = None) -> dict:
    """Time the original and the pruned model (median ms, alternated twice, the faster kept) and write
    latency.json into the run; returns what was written. Backend, threads and batch default to the run's own
    latency settings (`--latency-backend`, `--latency-threads`), the runtime the user targets."""
    from amc.export import load_pruned
    run = load_run(run_dir)
    backend = backend or run.search.get("latency_backend", "torch")
    threads = threads or run.search.get("latency_threads", 1)
    batch = batch or run.search.get("latency_batch", 1)
    input_shape = tuple(run.config["model"]["input_shape"])
    nets = {"original": original_architecture(run), "pruned": load_pruned(run.path)}
    results: dict[str, list] = {"original": [], "pruned": []}
    for _ in range(2):  # alternate, so a slow spell of the machine hits both
        for kind, net in nets.items():
            results[kind].append(measure_latency(net, input_shape, backend=backend, batch=batch, threads=threads,
                                                 warmup=5, repeats=30, min_seconds=0.3))
    best = {kind: min(rs, key=lambda r: r.median_ms) for kind, rs in results.items()}
    record = {"backend": backend, "threads": threads, "batch": batch,
              "original_ms": best["original"].median_ms, "pruned_ms": best["pruned"].median_ms,
              "measured_ratio": best["pruned"].median_ms / best["original"].median_ms,
              "original": best["original"].to_dict(), "pruned": best["pruned"].to_dict(),
              "measured_by": "amc report --latency (original: random weights of the same architecture)"}
    RunDir(run_dir).write_timings(record)
    return record


__all__ = ["measure_run_latency", "read_latency"]
