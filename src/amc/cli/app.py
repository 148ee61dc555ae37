"""The Typer application the command modules register on, the global --debug flag, and `Terminated`."""

from __future__ import annotations

import typer
from typer.core import TyperCommand


class ChoicesCommand(TyperCommand):
    """A command whose options may take a function as metavar, returning the names they choose from
    (`--agent ddpg|random|...`); it is called when the command's help is shown, because the catalogues that hold
    the names load torch, which `amc --help` does not need."""

    def format_help(self, ctx, formatter) -> None:
        for param in self.params:
            if callable(param.metavar):
                param.metavar = "|".join(param.metavar())
        super().format_help(ctx, formatter)


class _App(typer.Typer):
    """Every command is a `ChoicesCommand`."""

    def command(self, *args, cls: type[TyperCommand] = ChoicesCommand, **kwargs):
        return super().command(*args, cls=cls, **kwargs)


app = _App(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
           help="AMC: AutoML for Model Compression. Search per-layer channel pruning policies with DDPG "
                "under a hard MACs/params budget, export the pruned model, train and evaluate models.")
_debug = {"on": False}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that a command stops as on Ctrl-C (the same cleanup and message),
    exiting with the shell's code for SIGTERM."""

    exit_code = 143  # 128 + SIGTERM; Ctrl-C's is 130


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    _debug["on"] = debug


def on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
