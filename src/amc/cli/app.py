"""The Typer application the command modules register on, and the global --debug flag."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="AMC: AutoML for Model Compression. Search per-layer channel pruning policies with DDPG "
                       "under a hard MACs/params budget, export the pruned model, train and evaluate models.")
_debug = {"on": False}


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    _debug["on"] = debug
