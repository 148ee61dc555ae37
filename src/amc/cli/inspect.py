"""`amc show RUN` and `amc runs DIR`: what runs hold, as tables for people or one JSON object."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from amc.cli.app import app
from amc.cli.options import JSON_HELP


def _stdout() -> Console:
    """The result itself, on stdout; piped, at a width that keeps a table's rows whole (rich would assume 80).
    Made when a command prints, not at import: a closed stdout is then reported, not a crash of every command."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


@app.command("show")
def show_command(
    run: Path = typer.Argument(..., help="Run directory of `amc search` or `amc prune`."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A run's settings, budget, best policy, baselines and files."""
    from amc.run_index import describe_run

    d = describe_run(run)
    if as_json:
        print(json.dumps(d))
        return
    out = _stdout()
    out.print(f"[bold]{escape(d['run'])}[/bold]: {escape(d['status'])}")
    settings = Table("setting", "value", title="settings (the main ones, and those not at their default)",
                     title_justify="left", box=None)
    for key, value in d["changed"].items():
        settings.add_row(key, escape(json.dumps(value)))
    out.print(settings)
    if d["budget"]:
        budget = d["budget"]
        value = f" ({budget['value']:.4g})" if isinstance(budget.get("value"), (int, float)) else ""
        out.print(f"budget: {budget.get('target')} <= {budget.get('ratio')} of the original{value}")
    if d["best"]:
        b = d["best"]
        parts = [f"held-out top-1 {_pct(b.get('heldout_top1'))}", f"test top-1 {_pct(b.get('test_top1'))}"]
        parts += [f"{k} {b[k]:.3f}" for k in ("macs_ratio", "params_ratio") if b.get(k) is not None]
        out.print(f"best policy (episode {b.get('episode')}): " + ", ".join(parts)
                  + (f" [dim]({b['scored_only']})[/dim]" if "scored_only" in b else ""))
    if d["policy"]:
        p = d["policy"]
        ratios = " ".join(f"{layer['ratio']:.2f}" for layer in p["layers"])
        out.print(f"kept share per decision ({p['decisions']}): {ratios}")
    for name, baseline in d["baselines"].items():
        if isinstance(baseline, dict):
            figures = ", ".join(f"{k.replace('_top1', '')} {_pct(v)}" for k, v in baseline.items()
                                if k.endswith("top1") and isinstance(v, (int, float)))
            out.print(f"baseline {escape(name)}: {figures}")
    if d["finetune"]:
        f = d["finetune"]
        start = ", from the policy pruned without least squares" if f.get("start") == "unreconstructed" else ""
        out.print(f"fine-tuned ({f.get('epochs')} epochs{start}): test top-1 {_pct(f.get('test_top1'))}")
    if d["episodes"] is not None:
        out.print(f"episodes logged: {d['episodes']}" + (f", {d['seconds']:.1f} s" if d["seconds"] else ""))
    files = Table("file", "bytes", title="files", title_justify="left", box=None)
    for f in d["files"]:
        files.add_row(escape(f["name"]), "-" if f["bytes"] is None else f"{f['bytes']:,}")
    out.print(files)


@app.command("runs")
def runs_command(
    directory: Path = typer.Argument(Path("runs"), help="Directory holding runs (searched recursively)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A table of the runs under a directory: model, target, budget, agent, best held-out, test, time."""
    from amc.run_index import list_runs

    rows = list_runs(directory)
    if as_json:
        print(json.dumps({"directory": str(directory), "runs": rows}))
        return
    out = _stdout()
    table = Table("run", "model", "target", "budget", "agent", "episodes", "best held-out", "test", "fine-tuned",
                  "time", "status", title=f"runs under {escape(str(directory))}", title_justify="left")
    for r in rows:
        if "model" not in r:
            table.add_row(escape(r["run"]), *[""] * 9, escape(r["status"]))
            continue
        budget = f"{r['ratio']:g}" if r["reward"] == "acc" and r["ratio"] is not None else r["reward"]
        episodes = "-" if r["episodes"] is None else f"{r['episodes']}/{r['episodes_planned']}"
        time = f"{r['seconds']:.1f} s" if r["seconds"] else ""
        table.add_row(escape(r["run"]), escape(str(r["model"])), str(r["target"]), str(budget), str(r["agent"]),
                      episodes, _pct(r["best_heldout_top1"]), _pct(r["test_top1"]),
                      _pct(r["finetuned_test_top1"]), time, escape(r["status"]))
    out.print(table if rows else f"no runs under {escape(str(directory))}")


def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"
