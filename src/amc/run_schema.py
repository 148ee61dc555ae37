"""What each file of a run directory must look like where `RunDir` reads it, and the one check of it.

A file that parses but has another shape (a list where an object belongs, a string for a number, a missing
key) is refused with one line naming the file and what is wrong, never a traceback deep inside the command
that read it. Only `amc.runs` uses these; no other module parses run files.
"""

from __future__ import annotations

from pathlib import Path

from amc.errors import AmcError

# {key: accepted types}; a key not listed is not checked, a listed key may be missing unless the reader requires it
NUMBER, NONE = (int, float), type(None)
INFO_SHAPE = {"name": str, "num_classes": int, "kwargs": (dict, NONE)}
CONFIG_SHAPE = {"search": dict, "versions": dict, "model": dict, "data_fingerprint": (dict, NONE),
                "weights_sha256": (str, NONE), "decisions": list, "skipped_layers": dict, "baseline": dict,
                "budget": dict, "device": str}
# `amc.run_records.RunSummary`'s fields, and "best_val_top1", a search's held-out top-1 as earlier versions named it
SUMMARY_SHAPE = {"model": str, "agent": str, "episodes": int, "best_episode": (int, NONE), "macs": NUMBER,
                 "params": NUMBER, "macs_ratio": NUMBER, "params_ratio": NUMBER, "best_val_top1": NUMBER,
                 "heldout_top1": NUMBER, "test_top1": NUMBER, "test_top5": (*NUMBER, NONE), "best_reward": NUMBER,
                 "best_search_score": NUMBER, "budget_ratio": (*NUMBER, NONE), "search_seconds": NUMBER,
                 "agent_seconds": NUMBER, "policy_source": (str, NONE), "target": str, "method": str,
                 "sparse_macs": NUMBER,
                 "dense_bytes": int, "sparse_bytes": int, "baseline": dict, "finetune": dict, "latency": dict,
                 "finalists": dict, "baselines": dict, "searched_minus_best_baseline": dict, "export": dict,
                 "stopped_early": dict, "data_bytes": int}
META_SHAPE = {"info": dict, "policy": dict, "dropped_blocks": list}
CALIBRATION_SHAPE = {"offset_ms": NUMBER, "scale": NUMBER, "info": dict}
EPISODE_SHAPE = {"episode": int, "reward": NUMBER, "accuracy": NUMBER, "keep": list, "scored_images": int}
STATE_SHAPE = {"episode": int, "agent": dict, "best": str, "rng": (dict, NONE)}


def check_shape(path: Path, data, shape: dict, fix: str, required: tuple[str, ...] = ()) -> dict:
    """`data` (read from `path`) if it is a JSON object holding the `required` keys and the keys of `shape` of
    the listed types; else a one-line AmcError naming the file, what is wrong, and `fix`."""
    def wrong(what: str) -> AmcError:
        return AmcError(f"{path} has the wrong structure ({what}); {fix}")

    if not isinstance(data, dict):
        raise wrong(f"{_json_name(type(data))} where an object belongs")
    for key in required:
        if key not in data:
            raise wrong(f"no {key!r}")
    for key, types in shape.items():
        value = data.get(key)
        if key in data and (not isinstance(value, types) or isinstance(value, bool) and bool not in _tuple(types)):
            raise wrong(f"{key!r} is {_json_name(type(value))}, not {' or '.join(map(_json_name, _tuple(types)))}")
    return data


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _json_name(kind: type) -> str:
    """A type as JSON names it (what a user sees in the file)."""
    return {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "true/false", NONE: "null"}.get(kind, kind.__name__)


__all__ = ["CALIBRATION_SHAPE", "CONFIG_SHAPE", "EPISODE_SHAPE", "INFO_SHAPE", "META_SHAPE", "STATE_SHAPE",
           "SUMMARY_SHAPE", "check_shape"]
