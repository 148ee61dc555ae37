"""A pruning policy: per-decision keep counts for one model, stored as JSON."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amc.errors import AmcError
from amc.graph import LayerGraph


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
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            policy = cls(str(raw["model"]), [str(c) for c in raw["consumers"]], [int(c) for c in raw["channels"]],
                         [int(k) for k in raw["keep"]], dict(raw.get("metrics", {})))
        except FileNotFoundError:
            raise AmcError(f"policy file not found: {path}; check the path") from None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise AmcError(f"policy file {path} is corrupt ({type(e).__name__}); "
                           "use the policy.json written by `amc search`") from None
        if not (len(policy.consumers) == len(policy.channels) == len(policy.keep)):
            raise AmcError(f"policy file {path} is corrupt (lists of different lengths)")
        return policy

    def check_matches(self, graph: LayerGraph, model_name: str) -> None:
        """Refuse a policy written for another model."""
        consumers = [d.consumer for d in graph.decisions]
        channels = [d.channels for d in graph.decisions]
        if self.consumers != consumers or self.channels != channels:
            raise AmcError(f"policy was made for model {self.model!r} with other prunable layers than "
                           f"{model_name!r}; use a policy from a search on this model")
        bad = [c for k, c in zip(self.keep, self.channels) if not 1 <= k <= c]
        if bad:
            raise AmcError("policy keeps an impossible number of channels; it is corrupt")


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
