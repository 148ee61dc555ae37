"""A finished search run, read through `RunDir` into a `Run`, and the numbers a report derives from it.

Nothing is re-evaluated: the per-layer MACs after pruning come from the model's architecture (randomly
initialised; sizes and MACs do not depend on values) and the run's kept counts.
"""

from __future__ import annotations

import io
import json
import math
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amc.config import default_warmup
from amc.errors import AmcError
from amc.runs import CONFIG_FILE, EPISODES_FILE, RunDir, RunSummary


@dataclass
class Run:
    """The files of a finished search run, parsed."""

    path: Path
    config: dict           # config.json as written by the search
    summary: RunSummary    # summary.json
    episodes: list[dict]   # episodes.jsonl, one record per episode
    keep: list[int]        # the best policy's kept channels (weights, fine-grained) per decision

    @property
    def files(self) -> RunDir:
        return RunDir(self.path)

    @property
    def search(self) -> dict:
        return self.config.get("search", {})

    @property
    def decisions(self) -> list[dict]:
        return self.config.get("decisions", [])

    @property
    def fine_grained(self) -> bool:
        return self.search.get("method") == "fine-grained"


def load_run(run_dir: str | Path) -> Run:
    """Parse a run directory; a one-line AmcError names what is missing or corrupt and the fix."""
    files = RunDir(run_dir)
    path = files.path
    if not path.exists():
        raise AmcError(f"run directory {path} not found; pass the --out directory of `amc search`")
    if not path.is_dir():
        raise AmcError(f"{path} is a file; pass the run directory (the --out of `amc search`) that holds it")
    for name in (CONFIG_FILE, EPISODES_FILE):
        if not files.has(name):
            raise AmcError(f"{path} is not a search run (no {name}); pass the --out directory of `amc search`")
    files.check_finished("report on")  # a search still going, stopped or half-exported: its command named
    config, summary = files.read_config("reported"), files.read_summary() or RunSummary()
    episodes = files.read_episodes()
    if not episodes:
        raise AmcError(f"{files / EPISODES_FILE} logs no episodes; re-run the search")
    decisions = config.get("decisions") or []
    keep = _best_keep(files, len(decisions))
    if keep is None:
        best = max(episodes, key=lambda r: r["reward"])
        keep = list(best["keep"])
    if len(keep) != len(decisions):
        raise AmcError(f"{path}: the policy has {len(keep)} decisions but config.json lists {len(decisions)}; "
                       "the run directory is inconsistent, re-run the search")
    return Run(path, config, summary, episodes, [int(k) for k in keep])


def _best_keep(files: RunDir, decisions: int) -> list[int] | None:
    """Keep counts of the exported policy: model.json's (what model.pt holds), else policy.json's."""
    for keep in (files.read_exported_keep(), files.read_policy_keep()):
        if keep is not None and len(keep) == decisions:
            return keep
    return None


def warmup_episodes(run: Run) -> int:
    """DDPG warm-up episodes of a run (0 for other agents).

    The first episode after warm-up is the first whose log carries the agent's losses; a run that ended
    inside its warm-up falls back to the configured value, decided as the search does: agent option
    `warmup_episodes`, else --warmup, else min(100, episodes // 4).
    """
    search = run.search
    if search.get("agent") != "ddpg":
        return 0
    learned = [r["episode"] for r in run.episodes if "critic_loss" in (r.get("agent") or {})]
    if learned:
        return int(min(learned))
    options = search.get("agent_options") or {}
    if options.get("warmup_episodes") is not None:
        configured = options["warmup_episodes"]
    elif search.get("warmup") is not None:
        configured = search["warmup"]
    else:
        configured = default_warmup(int(search.get("episodes", len(run.episodes))))
    return min(int(configured), len(run.episodes))


# ---- derived numbers ------------------------------------------------------------------------------

@dataclass
class LayerRow:
    index: int
    name: str                 # the consumer layer (policy.json's name for the decision)
    producer: str | None
    channels: int             # channels (weights, fine-grained) before pruning
    kept: int
    macs_before: int
    macs_after: int | None    # None where the model cannot be rebuilt here

    @property
    def ratio(self) -> float:
        return self.kept / self.channels


def layer_rows(run: Run) -> list[LayerRow]:
    """Per decision: what it pruned, and the MACs of the layers its channels take part in, before and after.

    A decision's MACs are those of its producer and consumer (and anything between); a layer between two
    decisions counts for both, as in config.json's "decisions".
    """
    after = _decision_macs_after(run)
    return [LayerRow(i, d["consumer"], d.get("producer"), int(d["channels"]), k, int(d["macs"]),
                     after[i] if after else None)
            for i, (d, k) in enumerate(zip(run.decisions, run.keep))]


def _decision_macs_after(run: Run) -> list[int] | None:
    if run.fine_grained:  # nonzero-weight MACs are linear in the kept weights of each layer
        return [round(d["macs"] * k / d["channels"]) for d, k in zip(run.decisions, run.keep)]
    try:
        from amc.graph import LayerGraph
        model = original_architecture(run)
        graph = LayerGraph(model, tuple(run.config["model"]["input_shape"]),
                           group_coupled=bool(run.search.get("group_coupled", False)))
    except Exception as e:  # noqa: BLE001 - the table just loses a column; say why
        warnings.warn(f"per-layer MACs after pruning left out: the model cannot be rebuilt here ({e})",
                      stacklevel=3)
        return None
    if [(d.consumer, d.channels) for d in graph.decisions] != [(d["consumer"], d["channels"]) for d in run.decisions]:
        warnings.warn("per-layer MACs after pruning left out: this version of amc finds other prunable layers "
                      "than the run did", stacklevel=3)
        return None
    keep = np.asarray(run.keep, dtype=np.float64)
    total = graph.macs(keep)
    out = []
    for i in range(len(keep)):
        without = keep.copy()
        without[i] = 0
        out.append(total - graph.macs(without))
    return out


def original_architecture(run: Run):
    """The searched model's architecture, randomly initialised (sizes and MACs do not depend on values)."""
    from amc import models
    # zoo, torchvision, timm or the user's own factory (imported only if trusted: `amc.models.factory.trusting`)
    return models.rebuild(*run.files.original_record("reported")).eval()


def original_size(run: Run) -> tuple[int | None, str]:
    """Bytes of the original weights: the searched checkpoint if it is found, else its state dict serialized."""
    from amc import models
    weights = run.search.get("weights")
    if weights:
        found = _find_file(Path(weights), run.path)
        if found is not None:
            return found.stat().st_size, f"checkpoint {found.name}"
    else:
        bundled = models.bundled_weights(run.search.get("model", ""))
        if bundled is not None:
            return bundled.stat().st_size, f"bundled weights {bundled.name}"
    try:
        import torch
        buffer = io.BytesIO()
        torch.save(original_architecture(run).state_dict(), buffer)
        return len(buffer.getvalue()), "original state dict, serialized like model.pt"
    except Exception as e:  # noqa: BLE001
        return None, f"unknown ({e})"


def _find_file(path: Path, run_dir: Path) -> Path | None:
    """`path` as written by the search: relative to where it ran, which is here or a parent of the run."""
    if path.is_absolute():
        return path if path.is_file() else None
    for base in (Path.cwd(), *run_dir.resolve().parents):
        if (base / path).is_file():
            return base / path
    return None


def fully_scored(run: Run) -> list[bool]:
    """Per episode record: whether its score is over the whole held-out split. False where racing stopped it
    early (its score is an estimate from a prefix of the split); a repeated policy (0 images: scored before)
    takes the kind of its first score, which the search reused."""
    full = max((r.get("scored_images") or 0 for r in run.episodes), default=0)  # the first is never raced
    first: dict[tuple, bool] = {}
    kinds = []
    for r in run.episodes:
        images, keep = r.get("scored_images"), tuple(r.get("keep") or ())
        whole = True if images is None else first.get(keep, True) if images == 0 else images >= full
        first.setdefault(keep, whole)
        kinds.append(whole)
    return kinds


ALWAYS_SHOWN = ("model", "target", "ratio", "lbound", "agent", "episodes", "seed")


def reproduce_command(run: Run) -> tuple[str, list[str]]:
    """The `amc search` line that repeats the run (the budget, searcher and seed, and every setting that differs
    from today's defaults, into a new --out beside it), and the settings only the Python API takes (`name=value`), if any differ."""
    from amc.config import DEFAULT_MODEL, SearchConfig, search_options
    # today's defaults for this run's model (the budget's defaults depend on it)
    defaults = SearchConfig(model=run.search.get("model", DEFAULT_MODEL)).to_dict()
    words, api_only = ["amc", "search"], []
    options = {f.name for f in search_options()}  # the others only the Python API and settings files take
    for name, value in run.search.items():
        # the budget, the searcher and the seed always: a later release's defaults must not change what repeats
        if name not in defaults or value == defaults[name] and name not in ALWAYS_SHOWN:
            continue
        option = "--" + name.replace("_", "-")
        if name not in options:
            api_only.append(f"{name}={value!r}")
        elif name == "agent_options":
            words += [w for k, v in value.items()
                      for w in ("--agent-option", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
        elif isinstance(value, bool):
            words.append(option if value else f"--no-{option[2:]}")
        else:
            words += [option, str(value)]
    words += ["--out", f"{run.path}-rerun"]
    return shlex.join(words), api_only


def target_name(run: Run) -> str:
    return {"params": "params", "latency": "MACs"}.get(run.search.get("target", "macs"), "MACs")


def target_ratio(run: Run) -> float:
    s = run.summary
    ratio = s.params_ratio if run.search.get("target") == "params" else s.macs_ratio
    return 0.0 if ratio is None else ratio


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def pct(value) -> str:
    return f"{100 * value:.2f}%" if finite(value) else "not recorded"


__all__ = ["LayerRow", "Run", "finite", "fully_scored", "layer_rows", "load_run", "original_architecture",
           "original_size", "pct", "reproduce_command", "target_name", "target_ratio", "warmup_episodes"]
