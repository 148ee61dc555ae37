"""Opening a file amc reads or writes without hanging, and without following a link where that matters.

Opening a FIFO waits for a writer, and reading a device such as /dev/zero never ends, so a file amc reads must be
a regular file. It is opened without blocking and checked on its descriptor (no gap between the check and the
read); anything else is a one-line `NotAFileError` naming what the path is. A user's input (a --config file, a
checkpoint, a dataset file, a policy) may be a symbolic link: a link to a checkpoint is the checkpoint. A run's
own files are opened with `follow_links=False`: a run may come from someone else, and a link in it must not
make amc read or write a file elsewhere.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from amc.errors import AmcError

REGULAR = "a regular file"
RUN_FILE = "run file"
RUN_FILE_FIX = ("amc neither follows links nor opens special files in a run: put back the file amc wrote, or "
                "remove it")


class NotAFileError(AmcError):
    """A path where amc reads or writes a file holds a link (where none may be), a directory, a FIFO, a socket
    or a device."""

    def __init__(self, path: str | Path, kind: str, what: str, fix: str, verb: str = "read"):
        super().__init__(f"cannot {verb} {what} {path}: it is {kind}, not a regular file; {fix}")
        self.path, self.kind = Path(path), kind


def file_kind(path: str | Path, follow_links: bool = True) -> str | None:
    """What `path` is: "a regular file", "a symbolic link" (only when not following links), "a directory",
    "a FIFO", "a socket" or "a device"; None where nothing is (a missing path, a dangling link followed, a path
    the system refuses)."""
    try:
        return kind_of((os.stat if follow_links else os.lstat)(path).st_mode)
    except (OSError, ValueError):
        return None


def kind_of(mode: int) -> str:
    """The kind of file an `st_mode` describes, as the messages name it."""
    for test, kind in ((stat.S_ISREG, REGULAR), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a device"


def check_regular_file(path: str | Path, what: str, fix: str) -> None:
    """Refuse, as `NotAFileError`, a `path` that exists and is not a regular file (`what` names it in the message,
    `fix` says what to pass instead); a missing path passes, for the caller's own "not found"."""
    kind = file_kind(path)
    if kind not in (None, REGULAR):
        raise NotAFileError(path, kind, what, fix)


def open_descriptor(path: str | Path, flags: int, what: str, fix: str, *, follow_links: bool = True,
                    mode: int = 0o666) -> int:
    """`os.open(path, flags, mode)` of a regular file, returned in blocking mode: the open itself never waits on
    a FIFO, and anything but a regular file (or, with `follow_links=False`, a symbolic link) is a
    `NotAFileError`. Other failures raise the usual OSError (FileNotFoundError, PermissionError, ...)."""
    verb = "write" if flags & (os.O_WRONLY | os.O_RDWR) else "read"
    no_follow = 0 if follow_links else os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | no_follow | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        refused = {errno.ENXIO: "a FIFO", errno.EISDIR: "a directory"}  # ENXIO: a FIFO opened to write, no reader
        if not follow_links:
            refused[errno.ELOOP] = "a symbolic link"  # what O_NOFOLLOW answers for a link
        if e.errno in refused:
            raise NotAFileError(path, refused[e.errno], what, fix, verb) from None
        raise
    try:
        kind = kind_of(os.fstat(fd).st_mode)
        if kind != REGULAR:
            raise NotAFileError(path, kind, what, fix, verb)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | Path, what: str, fix: str, *, follow_links: bool = True) -> BinaryIO:
    """`path` opened for binary reading (see `open_descriptor`)."""
    return os.fdopen(open_descriptor(path, os.O_RDONLY, what, fix, follow_links=follow_links), "rb")


def read_regular_bytes(path: str | Path, what: str, fix: str, *, follow_links: bool = True) -> bytes:
    """The whole content of regular file `path` (see `open_descriptor`)."""
    with open_regular(path, what, fix, follow_links=follow_links) as f:
        return f.read()


def read_run_file(path: str | Path) -> bytes:
    """The content of one of a run's own files, never through a link."""
    return read_regular_bytes(path, RUN_FILE, RUN_FILE_FIX, follow_links=False)


__all__ = ["REGULAR", "RUN_FILE", "RUN_FILE_FIX", "NotAFileError", "check_regular_file", "file_kind", "kind_of",
           "open_descriptor", "open_regular", "read_regular_bytes", "read_run_file"]
