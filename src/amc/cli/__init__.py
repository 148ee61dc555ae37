"""The `amc` command: parses arguments, calls the Python API, prints. Nothing else lives here.

One module per group of commands registers on the one Typer app (`amc.cli.app`)."""

from __future__ import annotations

import sys
import warnings

from rich.markup import escape

from amc.cli import inspect, search, tools, training  # noqa: F401  (they register their commands on the app)
from amc.cli.app import _debug, app
from amc.cli.progress import console
from amc.errors import AmcError, one_line

__all__ = ["app", "main"]


def main() -> None:
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, category, *a, **k: f"warning: {msg}\n"
    try:
        app()
    except (AmcError, OSError) as e:
        line = one_line(e)
        if _debug["on"] or line is None:
            raise
        # escaped: messages hold "[key, ...]" lists that rich would otherwise take for markup and drop
        console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; a search can be continued with --resume --out RUN_DIR")
        sys.exit(130)
