"""A pruning policy: per-decision keep counts for one model, stored as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amc.atomic import write_json_atomic
from amc.errors import AmcError
from amc.graph import LayerGraph
from amc.safe_open import read_regular_bytes


@dataclass
class Policy:
    model: str
    consumers: list[str]          # decision order: the consumer layer of each decision
    channels: list[int]           # channels before pruning
    keep: list[int]               # channels kept
    metrics: dict = field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        return [k / c for k, c in zip(self.keep, self.channels)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = [round(r, 6) for r in self.ratios]
        return d

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        """Read a policy.json; every problem with the file is a one-line AmcError."""
        path = Path(path)
        try:
            raw = json.loads(read_regular_bytes(path, "policy file", "pass the policy.json of a search run"))
            policy = cls(str(raw["model"]), [str(c) for c in raw["consumers"]], _counts(raw, "channels"),
                         _counts(raw, "keep"), dict(raw.get("metrics", {})))
        except FileNotFoundError:
            raise AmcError(f"policy file not found: {path}; check the path") from None
        except OSError as e:
            raise AmcError(f"cannot read policy file {path} ({e.strerror}); pass the policy.json of a search "
                           "run") from None
        except (ValueError, KeyError, TypeError, OverflowError, UnicodeDecodeError) as e:
            raise AmcError(f"policy file {path} is corrupt ({type(e).__name__}: {_first_line(e)}); use the "
                           "policy.json written by `amc search`") from None
        if not (len(policy.consumers) == len(policy.channels) == len(policy.keep)):
            raise AmcError(f"policy file {path} is corrupt (consumers, channels and keep differ in length); "
                           "use the policy.json written by `amc search`")
        return policy

    def check_matches(self, graph: LayerGraph, model_name: str) -> None:
        """Refuse a policy written for another model, or for other prunable layers of this one."""
        if self.model != model_name:
            raise AmcError(f"the policy was made for model {self.model!r}, not {model_name!r}; pass "
                           f"--model {self.model} or a policy from a search on {model_name}")
        consumers = [d.consumer for d in graph.decisions]
        channels = [d.channels for d in graph.decisions]
        if self.consumers != consumers or self.channels != channels:
            mine, theirs = list(zip(self.consumers, self.channels)), list(zip(consumers, channels))
            first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
            raise AmcError(f"the policy's prunable layers differ from {model_name}'s ({len(self.consumers)} "
                           f"decisions against {len(consumers)}, first difference at decision {first}); use "
                           "the search's --group-coupled and --method settings, or a policy from this model")
        # 0 is a dropped block, possible only where the decision is a block's branch
        bad = [d.consumer for k, d in zip(self.keep, graph.decisions) if not (0 if d.block else 1) <= k <= d.channels]
        if bad:
            raise AmcError(f"the policy keeps an impossible number of channels at {', '.join(bad[:3])}; it is "
                           "corrupt: use the policy.json written by `amc search`")


def _counts(raw: dict, key: str) -> list[int]:
    """The channel counts under `key`: whole numbers only (int() would silently turn a 2.5 into 2)."""
    counts = raw[key]
    if not isinstance(counts, list):
        raise TypeError(f"{key} is a {type(counts).__name__}, not a list of channel counts")
    for count in counts:
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"{key} holds {count!r}, not a whole number of channels")
    return counts


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0][:80] if str(error).strip() else "empty"


def policy_from_record(record: dict, graph: LayerGraph, model_name: str) -> Policy:
    """The policy of an episode's log record (its keep counts and the figures it was scored with)."""
    return Policy(model_name, [d.consumer for d in graph.decisions], [d.channels for d in graph.decisions],
                  list(record["keep"]), {k: record[k] for k in ("accuracy", "reward", "macs", "params", "macs_ratio",
                                                                 "params_ratio", "episode") if k in record})
