"""The report's self-contained HTML page (`render_html`) and `write_report`, which writes it with its figures.

Reads only what the run directory holds (config.json, episodes.jsonl, policy.json, summary.json, the
exported model) and writes report_layers.png, report_search.png and report.html beside them; nothing is
re-evaluated, so a report takes seconds.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from amc.baselines import BASELINE_NAMES, verdict
from amc.models.factory import trusting
from amc.report.figures import figure_class, layers_figure, search_figure
from amc.report.run import (LayerRow, Run, finite, layer_rows, load_run, original_size, pct, reproduce_command,
                            target_name, target_ratio, warmup_episodes)
from amc.report.timing import measure_run_latency, read_latency
from amc.runs import CONFIG_FILE, FINETUNED_FILE, LAYERS_FIGURE, MODEL_FILE, SEARCH_FIGURE, SPARSE_FILE, RunDir


def _count(value, unit: str = "") -> str:
    if not finite(value):
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.{2 if abs(value) < 100 * scale else 1}f} {suffix}{unit}"
    return f"{value:g} {unit}".strip()


def _bytes(value) -> str:
    if not finite(value):
        return "unknown"
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _ratio(after, before) -> str:
    if not (finite(after) and finite(before) and before):
        return ""
    return f" <span class=dim>({100 * after / before:.1f}%)</span>"


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(value) -> str:
    return html.escape(str(value))


def _results_table(run: Run) -> str:
    s, base = run.summary, run.summary.baseline or {}
    finetune = s.finetune
    latency = read_latency(run)
    original_bytes, original_source = original_size(run)
    pruned_bytes = run.files.size(MODEL_FILE)
    headers = ["", "original", "pruned (no fine-tuning)"]
    if finetune:
        headers.append(f"pruned + fine-tuned ({_e(finetune.get('epochs', '?'))} epochs)")
    rows = [
        ["held-out top-1", pct(base.get("heldout_top1")), pct(s.heldout_top1)],
        ["test top-1", pct(base.get("test_top1")), pct(s.test_top1)],
        ["MACs", _count(base.get("macs")), _count(s.macs) + _ratio(s.macs, base.get("macs"))],
        ["params", _count(base.get("params")), _count(s.params) + _ratio(s.params, base.get("params"))],
    ]
    if latency:
        how = f"{_e(latency['backend'])}, {_e(latency['threads'])} thread(s), batch {_e(latency['batch'])}"
        rows.append([f"latency <span class=dim>({how}; {_e(latency['source'])})</span>",
                     f"{latency['original_ms']:.3f} ms", f"{latency['pruned_ms']:.3f} ms"
                     + _ratio(latency["pruned_ms"], latency["original_ms"]) + _speedup(latency)])
    else:
        rows.append(["latency", "not measured", "not measured <span class=dim>(amc report --latency)</span>"])
    rows.append([f"size on disk <span class=dim>(original: {_e(original_source)})</span>", _bytes(original_bytes),
                 _bytes(pruned_bytes) + f" <span class=dim>{MODEL_FILE}</span>" + _ratio(pruned_bytes, original_bytes)])
    if s.sparse_bytes:
        rows.append(["sparse form <span class=dim>(bitmask + nonzero values)</span>", "",
                     _bytes(s.sparse_bytes) + f" <span class=dim>{SPARSE_FILE}</span>"
                     + _ratio(s.sparse_bytes, original_bytes)])
    if finetune:
        finetuned_bytes = run.files.size(FINETUNED_FILE)
        extra = [pct(finetune.get("heldout_top1")), pct(finetune.get("test_top1")), "same as pruned",
                 "same as pruned", "same as pruned" if latency else "not measured",
                 _bytes(finetuned_bytes) if finetuned_bytes is not None else "—"]
        extra += [""] * (len(rows) - len(extra))
        for row, cell in zip(rows, extra):
            row.append(cell)
    note = ("<p class=dim>The original's test top-1 is not recorded by the search (only its held-out top-1); "
            "evaluate it with <code>amc eval</code>.</p>" if base.get("test_top1") is None else "")
    if finetune:
        note += (f"<p class=dim>Fine-tuning: {_e(finetune.get('epochs'))} epochs, {_e(finetune.get('optimizer', '?'))} "
                 f"lr {_e(finetune.get('lr', '?'))}, precision {_e(finetune.get('precision', '?'))}"
                 + (f", distilled from the original (alpha {_e(finetune.get('distill_alpha'))})"
                    if finetune.get("distill") else "")
                 + (", from the policy pruned again without least squares" if finetune.get("start") == "unreconstructed"
                    else "") + ".</p>")
    return _table(headers, rows, "results") + note


def _speedup(latency: dict) -> str:
    if not (latency["pruned_ms"] > 0 and latency["original_ms"] > 0):
        return ""
    return f" <b>{latency['original_ms'] / latency['pruned_ms']:.2f}&times; faster</b>"


def _comparison(run: Run) -> str:
    """The searched policy beside the fixed policies at the same budget, scored alike (summary.json)."""
    s = run.summary
    baselines = s.baselines or {}
    if not baselines:
        why = ("the search had no budget (an accuracy-guaranteed reward)" if s.budget_ratio is None
               else "the run was made before amc scored baselines")
        return f"<p class=dim>Not recorded: {why}.</p>"
    unit = target_name(run)
    key = "params_ratio" if unit == "params" else "macs_ratio"
    rows = [[f"{_e(BASELINE_NAMES[n])}", f"{100 * b.get(key, float('nan')):.1f}%", pct(b.get("heldout_top1")),
             pct(b.get("test_top1")), f"<span class=dim>{_e(b.get('scored', ''))}</span>"]
            for n, b in baselines.items() if n in BASELINE_NAMES]
    rows.append([f"<b>searched</b> ({_e(s.agent)}, episode {_e(s.best_episode)})",
                 f"{100 * target_ratio(run):.1f}%", pct(s.heldout_top1), f"<b>{pct(s.test_top1)}</b>",
                 "<span class=dim>the exported policy</span>"])
    table = _table(["policy", f"{unit} of the original", "held-out top-1", "test top-1", "scored"], rows,
                   "results")
    worth = _e(verdict(s.to_dict()))
    return (f"<p class=headline>{worth}</p>{table}<p class=dim>Every policy meets the same budget and is "
            "scored the same way: pruned by the search's method, BatchNorm recalibrated, no fine-tuning, fp32 on the "
            "full splits. The held-out split chose the searched policy among many, so its held-out score is "
            "optimistic; the test split is the fair comparison.</p>")


def _reproduce(run: Run) -> str:
    command, api_only = reproduce_command(run)
    note = (f"<p class=dim>Also set through the Python API only: <code>{_e(', '.join(api_only))}</code>.</p>"
            if api_only else "")
    path = Path(run.path).resolve()
    exact = f"amc search --config {RunDir(path) / CONFIG_FILE} --out {path}-rerun"
    return (f"<p class=dim>Repeats this search (its budget, searcher and seed, and the settings that differ from "
            f"the defaults):</p><pre><code>{_e(command)}</code></pre>{note}<p class=dim>or, every setting read from "
            f"the run itself:</p><pre><code>{_e(exact)}</code></pre>")


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
         + f"; best at episode {_e(s.best_episode)}"),
        ("seed", _e(c.get("seed"))),
        ("scoring", f"{_e(c.get('precision', 'fp32'))} on "
                    + (f"the first {_e(c['heldout_limit'])} held-out images" if c.get("heldout_limit")
                       else "the held-out split") + "; reported top-1 in fp32 on full splits"),
        ("search time", _duration(s.search_seconds) if finite(s.search_seconds) else "—"),
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
    base, worth = s.baseline or {}, verdict(s.to_dict())
    headline = (f"{_e(c.get('agent'))} found a policy at {100 * target_ratio(run):.2f}% of the original "
                f"{target_name(run)}" + (f" (budget {100 * s.budget_ratio:g}%)" if s.budget_ratio else "")
                + f": held-out top-1 {pct(s.heldout_top1)} against the original's "
                f"{pct(base.get('heldout_top1'))}, test top-1 {pct(s.test_top1)}, before fine-tuning"
                + (f"; {pct(s.finetune.get('test_top1'))} test top-1 after {_e(s.finetune.get('epochs'))} "
                   "epochs of fine-tuning" if s.finetune is not None else "") + "."
                + (f" {_e(worth)}." if worth else ""))
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
<h2>Was the search worth it?</h2>
{_comparison(run)}
<h2>Search</h2>
<p class=dim>Each point is one episode: the candidate's held-out score without fine-tuning (the reward).
Hollow points were raced out: scoring stopped once they could not plausibly beat the best, so their score is an
estimate from part of the split. Bottom: the MACs and parameters the policy kept, against the budget.</p>
{images[SEARCH_FIGURE]}
<h2>Per-layer policy</h2>
{images[LAYERS_FIGURE]}
{_layers_table(run, rows)}
<h2>Settings</h2>
{_settings_table(run, warmup)}
{_reproduce(run)}
<p class=dim>Written by <code>amc report</code> from config.json, episodes.jsonl, summary.json and the exported model
of this run.</p>
</body></html>
"""


def write_report(run_dir: str | Path, *, latency: bool = False, trust_model_code: bool = False) -> Path:
    """Write report_layers.png, report_search.png and a self-contained report.html into a finished run
    directory; returns the HTML's path. With `latency=True` the original and the pruned model are timed
    first into latency.json, on the backend, threads and batch the search was set to (`--latency-backend`). A
    model factory the run names is code: it is imported only with `trust_model_code=True`."""
    figure_class()  # the missing extra fails before anything is done
    with trusting(trust_model_code):
        return _write_report(run_dir, latency)


def _write_report(run_dir: str | Path, latency: bool) -> Path:
    if latency:
        measure_run_latency(run_dir)
    run = load_run(run_dir)
    rows = layer_rows(run)
    warmup = warmup_episodes(run)
    figures = {LAYERS_FIGURE: layers_figure(run, rows), SEARCH_FIGURE: search_figure(run, warmup)}
    return run.files.write_report(render_html(run, rows, warmup, figures), figures)


__all__ = ["render_html", "write_report"]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
