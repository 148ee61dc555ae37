"""A finished search run as figures and one self-contained HTML page (`write_report`, `amc report`).

Reads only what the run directory holds (config.json, episodes.jsonl, policy.json, summary.json, the
exported model) and writes report_layers.png, report_search.png and report.html beside them; nothing is
re-evaluated, so a report takes seconds. matplotlib (the `report` extra) draws the figures.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amc.errors import AmcError
from amc.atomic import write_bytes_atomic, write_json_atomic

HTML_FILE = "report.html"
LAYERS_FIGURE = "report_layers.png"
SEARCH_FIGURE = "report_search.png"
LATENCY_FILE = "latency.json"


@dataclass
class Run:
    """The files of a finished search run, parsed."""

    path: Path
    config: dict           # config.json as written by the search
    summary: dict          # summary.json
    episodes: list[dict]   # episodes.jsonl, one record per episode
    keep: list[int]        # the best policy's kept channels (weights, fine-grained) per decision

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
    path = Path(run_dir)
    if not path.exists():
        raise AmcError(f"run directory {path} not found; pass the --out directory of `amc search`")
    if not path.is_dir():
        raise AmcError(f"{path} is a file; pass the run directory (the --out of `amc search`) that holds it")
    for name in ("config.json", "episodes.jsonl"):
        if not (path / name).exists():
            raise AmcError(f"{path} is not a search run (no {name}); pass the --out directory of `amc search`")
    if not (path / "summary.json").exists():
        raise AmcError(f"{path} holds an unfinished search (no summary.json); finish it with "
                       f"`amc search --resume --out {path}`, then report")
    config, summary = _read_json(path / "config.json"), _read_json(path / "summary.json")
    episodes = []
    for number, line in enumerate((path / "episodes.jsonl").read_text().splitlines(), 1):
        try:
            episodes.append(json.loads(line))
        except ValueError:
            raise AmcError(f"{path / 'episodes.jsonl'} is corrupt at line {number}; re-run the search") from None
    if not episodes:
        raise AmcError(f"{path / 'episodes.jsonl'} logs no episodes; re-run the search")
    decisions = config.get("decisions") or []
    keep = _best_keep(path, len(decisions))
    if keep is None:
        best = max(episodes, key=lambda r: r["reward"])
        keep = list(best["keep"])
    if len(keep) != len(decisions):
        raise AmcError(f"{path}: the policy has {len(keep)} decisions but config.json lists {len(decisions)}; "
                       "the run directory is inconsistent, re-run the search")
    return Run(path, config, summary, episodes, [int(k) for k in keep])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise AmcError(f"{path} is corrupt ({type(e).__name__}); re-run the search") from None


def _best_keep(path: Path, decisions: int) -> list[int] | None:
    """Keep counts of the exported policy: model.json's (what model.pt holds), else policy.json's."""
    for name, extract in (("model.json", lambda d: d["policy"]["keep"]), ("policy.json", lambda d: d["keep"])):
        try:
            keep = extract(json.loads((path / name).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if len(keep) == decisions:
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
        configured = min(100, int(search.get("episodes", len(run.episodes))) // 4)
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
        model = _original_architecture(run)
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


def _original_architecture(run: Run):
    """The searched model's architecture, randomly initialised (sizes and MACs do not depend on values)."""
    from amc import models
    info = run.config["model"]
    return models.create(info["name"], num_classes=info["num_classes"], **(info.get("kwargs") or {})).eval()


def _original_size(run: Run) -> tuple[int | None, str]:
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
        torch.save(_original_architecture(run).state_dict(), buffer)
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


def read_latency(run: Run) -> dict | None:
    """Latency of the original and the pruned model (ms), from summary.json (a latency-target search) or
    latency.json (`amc report --latency`); None if neither was measured."""
    source = run.summary.get("latency")
    origin = "summary.json"
    if not source and (run.path / LATENCY_FILE).exists():
        try:
            source, origin = json.loads((run.path / LATENCY_FILE).read_text()), LATENCY_FILE
        except ValueError:
            warnings.warn(f"{run.path / LATENCY_FILE} is corrupt; latency left out", stacklevel=2)
            return None
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


def measure_run_latency(run_dir: str | Path, *, backend: str = "torch", threads: int = 1, batch: int = 1) -> dict:
    """Time the original and the pruned model (median ms, alternated twice, the faster kept) and write
    latency.json into the run; returns what was written."""
    try:
        from amc.latency import measure_latency
    except ImportError:
        raise AmcError("latency measurement is not available in this version of amc; report without "
                       "--latency") from None
    from amc.export import load_pruned
    run = load_run(run_dir)
    input_shape = tuple(run.config["model"]["input_shape"])
    nets = {"original": _original_architecture(run), "pruned": load_pruned(run.path)}
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
    write_json_atomic(Path(run_dir) / LATENCY_FILE, record)
    return record


# ---- figures --------------------------------------------------------------------------------------

def _figure_class():
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend or state is touched
    except ImportError:
        raise AmcError("reports need matplotlib; install it with pip install 'amc-compress[report]'") from None
    return Figure


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _macs_unit(values) -> tuple[float, str]:
    peak = max([abs(v) for v in values if v is not None] or [1])
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if peak >= scale:
            return scale, unit
    return 1.0, ""


def layers_figure(run: Run, rows: list[LayerRow]) -> bytes:
    """Preserve ratio per decision (top) over the MACs of its layers before and after pruning (bottom)."""
    Figure = _figure_class()
    n = len(rows)
    width = min(max(8.0, 0.3 * n + 2.5), 24.0)
    fig = Figure(figsize=(width, 6.8))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1], "hspace": 0.08})
    x = np.arange(n)
    ratios = [r.ratio for r in rows]
    what = "density (kept weights / weights)" if run.fine_grained else "preserve ratio (kept / channels)"
    top.bar(x, ratios, width=0.75, color="tab:blue", label="best policy")
    lbound = run.search.get("lbound")
    if lbound is not None:
        top.axhline(lbound, color="grey", linestyle=":", linewidth=1, label=f"lower bound {lbound:g}")
    top.set_ylim(0, 1.08)
    top.set_ylabel(what)
    top.grid(axis="y", alpha=0.3)
    _legend_outside(top)
    s = run.summary
    top.set_title(f"{run.search.get('model', '?')}: best policy of {s.get('agent', '?')} "
                  f"(episode {s.get('best_episode', '?')}), {_target_name(run)} {100 * _target_ratio(run):.1f}% "
                  "of the original", fontsize=10)

    scale, unit = _macs_unit([r.macs_before for r in rows])
    bottom.bar(x, [r.macs_before / scale for r in rows], width=0.75, color="lightgrey", edgecolor="grey",
               linewidth=0.5, label="original")
    if all(r.macs_after is not None for r in rows):
        bottom.bar(x, [r.macs_after / scale for r in rows], width=0.45, color="tab:orange",
                   label="nonzero weights" if run.fine_grained else "pruned")
    bottom.set_ylabel(f"MACs ({unit})" + ("" if run.fine_grained else " of its layers"))
    bottom.grid(axis="y", alpha=0.3)
    _legend_outside(bottom)

    step = max(1, math.ceil(n / 100))  # past ~100 labels, name every few
    bottom.set_xticks(x[::step])
    bottom.set_xticklabels([r.name for r in rows][::step], rotation=90, fontsize=8 if n <= 60 else 6)
    bottom.set_xlim(-0.6, n - 0.4)
    bottom.set_xlabel("layer pruned by each decision (" + ("its weights" if run.fine_grained else
                                                           "its input channels, and its producer's outputs") + ")")
    return _png(fig)


def search_figure(run: Run, warmup: int) -> bytes:
    """Reward per episode with the best so far (top) and the cost of each episode's policy (bottom)."""
    Figure = _figure_class()
    from matplotlib.ticker import MaxNLocator
    records = [r for r in run.episodes if _finite(r.get("reward"))]
    episodes = np.array([r["episode"] for r in records])
    rewards = np.array([r["reward"] for r in records], dtype=float)
    reward_is_accuracy = run.search.get("reward", "acc") == "acc"
    fig = Figure(figsize=(10, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1], "hspace": 0.08})
    n = len(run.episodes)
    if warmup > 0:
        for ax in (top, bottom):
            ax.axvspan(-0.5, warmup - 0.5, color="tab:orange", alpha=0.12, linewidth=0,
                       label=f"warm-up ({warmup} episodes, no learning)" if ax is top else None)
    size = 14 if n <= 200 else 7
    in_warmup = episodes < warmup
    if len(records) == 1:
        pass  # the star below is the one episode
    elif in_warmup.any():
        top.scatter(episodes[in_warmup], rewards[in_warmup], s=size, color="tab:orange", alpha=0.7,
                    label="episode (warm-up)")
    if len(records) > 1 and (~in_warmup).any():
        top.scatter(episodes[~in_warmup], rewards[~in_warmup], s=size, color="tab:blue", alpha=0.7,
                    label="episode" if warmup == 0 else "episode (learning)")
    if len(rewards) > 1:
        top.step(episodes, np.maximum.accumulate(rewards), where="post", color="black", linewidth=1.5,
                 label="best so far")
    if len(rewards):
        b = int(np.argmax(rewards))
        top.scatter([episodes[b]], [rewards[b]], marker="*", s=160, color="tab:red", zorder=5,
                    label=f"{'best' if len(rewards) > 1 else 'the policy'}: "
                          f"{_pct(rewards[b]) if reward_is_accuracy else f'{rewards[b]:.4f}'} (episode {episodes[b]})")
    if reward_is_accuracy:
        top.set_ylabel("held-out top-1 of the candidate\n(no fine-tuning; the reward)")
        top.yaxis.set_major_formatter(_percent_formatter())
    else:
        top.set_ylabel(f"reward ({run.search.get('reward')}: -error x log cost)")
    baseline = run.summary.get("baseline", {}).get("heldout_top1")
    agent = run.search.get("agent", "?")
    title = f"{run.search.get('model', '?')} search, agent {agent}"
    if agent == "uniform":
        title += ": one deterministic episode"
    elif agent == "random":
        title += ": every episode random"
    elif warmup:
        anchor = (run.search.get("agent_options") or {}).get("anchor", "uniform")
        title += (": warm-up around the uniform policy" if anchor not in (None, "none")
                  else ": uniform-random warm-up")
    if baseline is not None:
        title += f"  (original model: {_pct(baseline)} held-out)"
    top.set_title(title, fontsize=10)
    top.grid(alpha=0.3)
    _legend_outside(top)

    for key, color, label in (("macs_ratio", "tab:purple", "MACs"), ("params_ratio", "tab:green", "params")):
        values = [(r["episode"], r[key]) for r in run.episodes if _finite(r.get(key))]
        if values:
            e, v = zip(*values)
            bottom.scatter(e, v, s=size * 0.6, color=color, alpha=0.6, zorder=3, label=f"{label} of the policy")
    budget = run.summary.get("budget_ratio")
    if budget is not None:
        bottom.axhline(budget, color="tab:red", linestyle="--", linewidth=1, zorder=2,
                       label=f"budget: {run.search.get('target', 'macs')} <= {budget:g}")
    bottom.set_ylabel("share of the original")
    bottom.set_xlabel("episode")
    bottom.grid(alpha=0.3)
    _legend_outside(bottom)
    bottom.set_ylim(0, 1.05)  # shares of the original
    if n == 1:
        bottom.set_xlim(-1, 1)
        bottom.set_xticks([0])
    else:
        bottom.set_xlim(-0.5, max(n - 0.5, 1))
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def _legend_outside(ax) -> None:
    """Legend right of the axes: it never hides a point or a bar."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8, frameon=False)


def _percent_formatter():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda v, _: f"{100 * v:.0f}%" if abs(100 * v - round(100 * v)) < 1e-9 else f"{100 * v:.1f}%")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _target_name(run: Run) -> str:
    return {"params": "params", "latency": "MACs"}.get(run.search.get("target", "macs"), "MACs")


def _target_ratio(run: Run) -> float:
    s = run.summary
    return s.get("params_ratio", 0.0) if run.search.get("target") == "params" else s.get("macs_ratio", 0.0)


# ---- HTML -----------------------------------------------------------------------------------------

def _pct(value) -> str:
    return f"{100 * value:.2f}%" if _finite(value) else "not recorded"


def _count(value, unit: str = "") -> str:
    if not _finite(value):
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.{2 if abs(value) < 100 * scale else 1}f} {suffix}{unit}"
    return f"{value:g} {unit}".strip()


def _bytes(value) -> str:
    if not _finite(value):
        return "unknown"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _ratio(after, before) -> str:
    if not (_finite(after) and _finite(before) and before):
        return ""
    return f" <span class=dim>({100 * after / before:.1f}%)</span>"


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(value) -> str:
    return html.escape(str(value))


def _results_table(run: Run) -> str:
    s, base = run.summary, run.summary.get("baseline", {})
    finetune = s.get("finetune") if isinstance(s.get("finetune"), dict) else None
    latency = read_latency(run)
    original_bytes, original_source = _original_size(run)
    pruned_bytes = (run.path / "model.pt").stat().st_size if (run.path / "model.pt").exists() else None
    headers = ["", "original", "pruned (no fine-tuning)"]
    if finetune:
        headers.append(f"pruned + fine-tuned ({_e(finetune.get('epochs', '?'))} epochs)")
    rows = [
        ["held-out top-1", _pct(base.get("heldout_top1")), _pct(s.get("best_val_top1"))],
        ["test top-1", _pct(base.get("test_top1")), _pct(s.get("test_top1"))],
        ["MACs", _count(base.get("macs")), _count(s.get("macs")) + _ratio(s.get("macs"), base.get("macs"))],
        ["params", _count(base.get("params")), _count(s.get("params")) + _ratio(s.get("params"), base.get("params"))],
    ]
    if latency:
        how = f"{_e(latency['backend'])}, {_e(latency['threads'])} thread(s), batch {_e(latency['batch'])}"
        rows.append([f"latency <span class=dim>({how}; {_e(latency['source'])})</span>",
                     f"{latency['original_ms']:.3f} ms", f"{latency['pruned_ms']:.3f} ms"
                     + _ratio(latency["pruned_ms"], latency["original_ms"])])
    else:
        rows.append(["latency", "not measured", "not measured <span class=dim>(amc report --latency)</span>"])
    rows.append([f"size on disk <span class=dim>(original: {_e(original_source)})</span>", _bytes(original_bytes),
                 _bytes(pruned_bytes) + " <span class=dim>model.pt</span>" + _ratio(pruned_bytes, original_bytes)])
    if s.get("sparse_bytes"):
        rows.append(["sparse form <span class=dim>(bitmask + nonzero values)</span>", "",
                     _bytes(s["sparse_bytes"]) + " <span class=dim>model_sparse.pt</span>"
                     + _ratio(s["sparse_bytes"], original_bytes)])
    if finetune:
        finetuned = run.path / "model_finetuned.pt"
        extra = [_pct(finetune.get("heldout_top1")), _pct(finetune.get("test_top1")), "same as pruned",
                 "same as pruned", "same as pruned" if latency else "not measured",
                 _bytes(finetuned.stat().st_size) if finetuned.exists() else "—"]
        extra += [""] * (len(rows) - len(extra))
        for row, cell in zip(rows, extra):
            row.append(cell)
    note = ("<p class=dim>The original's test top-1 is not recorded by the search (only its held-out top-1); "
            "evaluate it with <code>amc eval</code>.</p>" if base.get("test_top1") is None else "")
    if finetune:
        note += (f"<p class=dim>Fine-tuning: {_e(finetune.get('epochs'))} epochs, {_e(finetune.get('optimizer', '?'))} "
                 f"lr {_e(finetune.get('lr', '?'))}, precision {_e(finetune.get('precision', '?'))}"
                 + (f", distilled from the original (alpha {_e(finetune.get('distill_alpha'))})"
                    if finetune.get("distill") else "") + ".</p>")
    return _table(headers, rows, "results") + note


def _settings_table(run: Run, warmup: int) -> str:
    c, s = run.search, run.summary
    budget = (f"{c.get('target', 'macs')} &le; {c.get('ratio'):g} of the original"
              if c.get("reward", "acc") == "acc" else f"none (reward {_e(c.get('reward'))})")
    options = ", ".join(f"{_e(k)}={_e(v)}" for k, v in (c.get("agent_options") or {}).items()) or "defaults"
    items = [
        ("model", f"{_e(c.get('model'))} <span class=dim>(weights: {_e(c.get('weights') or 'bundled')})</span>"),
        ("data", _e(c.get("data")) + (f" <span class=dim>({_e(c['data_dir'])})</span>" if c.get("data_dir") else "")),
        ("budget", budget),
        ("method", (f"{_e(c.get('method', 'channel'))}, selection {_e(c.get('selection'))}, "
                    f"reconstruction {'on' if c.get('reconstruct') else 'off'}, lower bound {_e(c.get('lbound'))}, "
                    f"channel round {_e(c.get('channel_round'))}")),
        ("agent", f"{_e(c.get('agent'))} <span class=dim>(options: {options})</span>"),
        ("episodes", f"{len(run.episodes)}" + (f", warm-up {warmup}" if c.get("agent") == "ddpg" else "")
         + f"; best at episode {_e(s.get('best_episode'))}"),
        ("seed", _e(c.get("seed"))),
        ("scoring", f"{_e(c.get('precision', 'fp32'))} on "
                    + (f"the first {_e(c['heldout_limit'])} held-out images" if c.get("heldout_limit")
                       else "the held-out split") + "; reported top-1 in fp32 on full splits"),
        ("search time", f"{s.get('search_seconds', 0) / 60:.1f} min" if _finite(s.get("search_seconds")) else "—"),
        ("versions", ", ".join(f"{_e(k)} {_e(v)}" for k, v in (run.config.get("versions") or {}).items()
                               if k in ("amc", "torch", "torch_pruning", "python"))),
    ]
    return _table(["setting", "value"], [[k, v] for k, v in items], "settings")


def _layers_table(run: Run, rows: list[LayerRow]) -> str:
    unit = "weights" if run.fine_grained else "channels"
    headers = ["#", "layer", *([] if run.fine_grained else ["producer"]), unit, "kept", "ratio",
               "MACs before", "nonzero MACs after" if run.fine_grained else "MACs after"]
    body = []
    for r in rows:
        body.append([str(r.index), f"<code>{_e(r.name)}</code>",
                     *([] if run.fine_grained else [f"<code>{_e(r.producer or '')}</code>"]),
                     str(r.channels), str(r.kept), f"{r.ratio:.3f}", _count(r.macs_before),
                     _count(r.macs_after) + _ratio(r.macs_after, r.macs_before) if r.macs_after is not None else "—"])
    note = ("" if run.fine_grained else "<p class=dim>A decision keeps that many output channels of the producer "
            "and input channels of the layer; its MACs are those of the layers its channels take part in (a layer "
            "between two decisions counts for both, so the column does not sum to the total).</p>")
    return note + _table(headers, body, "layers")


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;
color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:0.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.92em}
th,td{border:1px solid #ddd;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#f4f4f4}table.layers td:nth-child(n+4),table.results td:nth-child(n+2){text-align:right}
tbody tr:nth-child(even){background:#fafafa}.dim{color:#777;font-size:0.9em}
img{max-width:100%;border:1px solid #eee}code{font-size:0.92em}.headline{font-size:1.05em}
"""


def render_html(run: Run, rows: list[LayerRow], warmup: int, figures: dict[str, bytes]) -> str:
    s, c = run.summary, run.search
    base = s.get("baseline", {})
    headline = (f"{_e(c.get('agent'))} found a policy at {100 * _target_ratio(run):.2f}% of the original "
                f"{_target_name(run)}" + (f" (budget {100 * s['budget_ratio']:g}%)" if s.get("budget_ratio") else "")
                + f": held-out top-1 {_pct(s.get('best_val_top1'))} against the original's "
                f"{_pct(base.get('heldout_top1'))}, test top-1 {_pct(s.get('test_top1'))}, before fine-tuning"
                + (f"; {_pct(s['finetune'].get('test_top1'))} test top-1 after {_e(s['finetune'].get('epochs'))} "
                   "epochs of fine-tuning" if isinstance(s.get("finetune"), dict) else "") + ".")
    images = {name: f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
              for name, png in figures.items()}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>AMC report: {_e(c.get('model'))} on {_e(c.get('data'))}</title>
<style>{_CSS}</style></head><body>
<h1>AMC report: {_e(c.get('model'))} on {_e(c.get('data'))}</h1>
<p class=dim>run directory <code>{_e(run.path)}</code></p>
<p class=headline>{headline}</p>
<h2>Before and after</h2>
{_results_table(run)}
<h2>Search</h2>
<p class=dim>Each point is one episode: the candidate's held-out score without fine-tuning (the reward).
Bottom: the MACs and parameters the policy kept, against the budget.</p>
{images[SEARCH_FIGURE]}
<h2>Per-layer policy</h2>
{images[LAYERS_FIGURE]}
{_layers_table(run, rows)}
<h2>Settings</h2>
{_settings_table(run, warmup)}
<p class=dim>Written by <code>amc report</code> from config.json, episodes.jsonl, summary.json and the exported model
of this run.</p>
</body></html>
"""


def write_report(run_dir: str | Path, *, latency: bool = False) -> Path:
    """Write report_layers.png, report_search.png and a self-contained report.html into a finished run
    directory; returns the HTML's path. With `latency=True` the original and the pruned model are timed
    first (torch, 1 thread, batch 1) into latency.json."""
    _figure_class()  # the missing extra fails before anything is done
    if latency:
        measure_run_latency(run_dir)
    run = load_run(run_dir)
    rows = layer_rows(run)
    warmup = warmup_episodes(run)
    figures = {LAYERS_FIGURE: layers_figure(run, rows), SEARCH_FIGURE: search_figure(run, warmup)}
    for name, png in figures.items():
        write_bytes_atomic(run.path / name, png)
    out = run.path / HTML_FILE
    write_bytes_atomic(out, render_html(run, rows, warmup, figures).encode("utf-8"))
    return out


__all__ = ["Run", "load_run", "measure_run_latency", "read_latency", "warmup_episodes", "write_report"]
