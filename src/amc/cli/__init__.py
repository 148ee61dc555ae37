"""The `amc` command: parses arguments, calls the Python API, prints. Nothing else lives here.

One module per group of commands registers on the one Typer app (`amc.cli.app`)."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import warnings

from rich.markup import escape

from amc.cli import inspect, search, tools, training  # noqa: F401  (they register their commands on the app)
from amc.cli.app import Terminated, _debug, app
from amc.cli.progress import console
from amc.errors import AmcError, one_line

__all__ = ["app", "main"]

INTERRUPTED = 130  # Ctrl-C's exit code (128 + SIGINT); SIGTERM's is Terminated.exit_code


def main() -> None:
    _hold_standard_streams()
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, category, *a, **k: f"warning: {msg}\n"
    previous = _handle_sigterm(_terminate)
    try:
        app()
    except (AmcError, OSError) as e:
        line = one_line(e)
        if _debug["on"] or line is None:
            raise
        # escaped: messages hold "[key, ...]" lists that rich would otherwise take for markup and drop
        console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt as e:
        console.print("interrupted; a search can be continued with --resume --out RUN_DIR")
        sys.exit(getattr(e, "exit_code", INTERRUPTED))
    finally:
        _handle_sigterm(previous)


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def _handle_sigterm(handler):
    """Install `handler` for SIGTERM and return the one it replaces; None where nothing was installed (a thread
    other than the main one cannot handle signals)."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:  # started to ignore it (as a daemon may be): keep that
        return None
    return signal.signal(signal.SIGTERM, handler)


class _ClosedOutput(io.TextIOBase):
    """Standard output where it was closed (`amc models >&-`): the first write is a one-line error, not a
    traceback; a command that prints nothing there runs as usual."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise AmcError("standard output is closed, so amc cannot print its result; leave it open, or send it to a "
                       "file (> FILE) or to /dev/null")


def _hold_standard_streams() -> None:
    """A closed descriptor 0, 1 or 2 is held on /dev/null, so that no file amc opens takes its number (a checkpoint
    would receive what is printed); a closed stdout then fails at its first write, a closed stderr is silent."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one, the lower ones are open
            if held != fd:
                os.dup2(held, fd)
                os.close(held)
    if sys.stdout is None:
        sys.stdout = _ClosedOutput()
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - held for the process's life
