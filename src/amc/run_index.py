"""What run directories hold, summarised for people and scripts: `describe_run` (behind `amc show`) and
`list_runs` (behind `amc runs`). Everything is read through `RunDir`; nothing is written."""

from __future__ import annotations

import os
from pathlib import Path

from amc.config import DEFAULTS, episodes_to_run
from amc.errors import AmcError
from amc.runs import CONFIG_FILE, FINISHED, LOCK_FILE, POLICY_FILE, RunDir, RunStatus, RunSummary

SHOWN_ALWAYS = ("model", "weights", "data", "data_dir", "target", "ratio", "reward", "agent", "episodes", "seed")
HIDDEN_FILES = (LOCK_FILE,)  # the lock of the process writing the run: not the run's content


def describe_run(path: str | Path) -> dict:
    """A run at a glance: {"run", "status", "next" (the arguments of the amc command that takes the run on, or
    None), "settings" (all), "changed" (the settings shown to people: the main ones and every one that differs
    from the defaults), "budget", "best", "policy", "baselines", "finetune", "latency", "episodes", "seconds",
    "files"}. Accuracies are fractions in [0, 1]; "best" comes from the log while the export is unfinished."""
    run = RunDir(path)
    record = run.read_config("shown", "re-run the search")
    settings, saved = record["search"], run.read_summary()
    log = _episodes(run)
    defaults = DEFAULTS.to_dict()
    status = _status(run)
    exported = saved is not None and status.state in FINISHED
    # unfinished: what summary.json says is an earlier export's, or half of one; only a fine-tune's record stands
    summary = saved if exported else RunSummary(finetune=saved.finetune if saved is not None else None)
    return {
        "run": str(run.path), "status": status.text, "next": status.next,
        "settings": settings,
        "changed": {k: v for k, v in settings.items() if k in SHOWN_ALWAYS or k in defaults and v != defaults[k]},
        "budget": record.get("budget") or ({"target": settings.get("target"), "ratio": settings.get("ratio")}
                                           if settings.get("reward", "acc") == "acc" else None),
        "best": _best(summary if exported else None, log),
        "policy": _policy(run),
        "baselines": _baselines(record, summary),
        "finetune": {k: v for k, v in summary.finetune.items() if k != "history"} if summary.finetune is not None
        else None,
        "latency": summary.latency,
        "episodes": None if log is None or "policy_source" in record else len(log),
        "seconds": summary.search_seconds if summary.search_seconds is not None
        else None if not log else round(sum(r.get("seconds", 0) for r in log), 2),
        "files": [{"name": p.name, "bytes": _bytes(p)} for p in sorted(run.path.iterdir())
                  if p.name not in HIDDEN_FILES],
    }


def find_runs(root: str | Path) -> list[Path]:
    """Every run directory (one holding config.json) under `root`, `root` included, sorted; a run's own
    subdirectories (tensorboard, iterate's stages are runs of their own) are searched too."""
    root = Path(root)
    if not root.is_dir():
        raise AmcError(f"{root} is not a directory; pass the directory holding your runs (e.g. runs)")
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        if CONFIG_FILE in files:
            found.append(Path(directory))
    return sorted(found)


def list_runs(root: str | Path) -> list[dict]:
    """One row per run under `root`: {"run" (relative to root), "model", "target", "ratio", "reward", "agent",
    "episodes", "episodes_planned", "best_heldout_top1", "test_top1", "finetuned_test_top1", "seconds",
    "status"}; a run that cannot be read is a row with its reason as the status."""
    rows = []
    for path in find_runs(root):
        name = str(path.relative_to(root)) if path != Path(root) else "."
        try:
            d = describe_run(path)
        except (AmcError, OSError) as e:  # one run that cannot be read is a row saying why, not a failed listing
            rows.append({"run": name, "status": f"unreadable: {e}"})
            continue
        s, best = d["settings"], d["best"] or {}
        rows.append({"run": name, "model": s.get("model"), "target": s.get("target"), "ratio": s.get("ratio"),
                     "reward": s.get("reward"), "agent": s.get("agent"), "episodes": d["episodes"],
                     "episodes_planned": episodes_to_run(s.get("agent"), s.get("episodes")),
                     "best_heldout_top1": best.get("heldout_top1"),
                     "test_top1": best.get("test_top1"),
                     "finetuned_test_top1": (d["finetune"] or {}).get("test_top1"), "seconds": d["seconds"],
                     "status": d["status"]})
    return rows


def _episodes(run: RunDir) -> list[dict] | None:
    try:
        return run.read_episodes()
    except AmcError:
        return None  # a corrupt log: the status says so


def _status(run: RunDir) -> RunStatus:
    try:
        return run.status()
    except AmcError as e:  # a file of the run that cannot be read: the status says which
        return RunStatus("unreadable", f"unreadable: {e}", None)


def _best(summary: RunSummary | None, log: list[dict] | None) -> dict | None:
    """The exported policy's figures (summary.json), or the best logged episode's of a run still going."""
    if summary is not None:
        figures = {"test_top1": summary.test_top1, "test_top5": summary.test_top5, "macs": summary.macs,
                   "macs_ratio": summary.macs_ratio, "params": summary.params, "params_ratio": summary.params_ratio}
        return {"episode": summary.best_episode, "heldout_top1": summary.heldout_top1,
                **{k: v for k, v in figures.items() if v is not None}}
    if not log:
        return None
    best = max(log, key=lambda r: r["reward"])
    return {"episode": best.get("episode"), "heldout_top1": best["accuracy"], "macs": best.get("macs"),
            "params": best.get("params"), "scored_only": "search score, not yet exported"}


def _policy(run: RunDir) -> dict | None:
    if not run.has(POLICY_FILE):
        return None
    try:
        policy = run.read_policy()
    except AmcError:
        return None
    ratios = policy.ratios
    return {"decisions": len(ratios), "min_ratio": min(ratios, default=None), "max_ratio": max(ratios, default=None),
            "layers": [{"layer": c, "channels": n, "keep": k, "ratio": round(r, 4)}
                       for c, n, k, r in zip(policy.consumers, policy.channels, policy.keep, ratios)]}


def _baselines(record: dict, summary: RunSummary) -> dict:
    """The original model's figures, and any policy the run compared its search with (summary "baselines")."""
    baselines = {"original": summary.baseline or record.get("baseline")}
    extra = summary.baselines
    if isinstance(extra, dict):
        baselines.update(extra)
    return {k: v for k, v in baselines.items() if v}


def _bytes(path: Path) -> int | None:
    """Bytes of a run's file (a directory: of the files in it); None for what has no size of its own to show (a
    link, dangling or not, a FIFO)."""
    if path.is_symlink():
        return None
    if path.is_dir():
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.lstat().st_size if path.is_file() else None


__all__ = ["describe_run", "find_runs", "list_runs"]
