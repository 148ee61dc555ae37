"""Writing files so that a crash, a kill or a full disk never leaves half of one, and never through a link.

Every file amc writes goes through here: whole files are replaced at once (a temporary file beside the
target, fsync, rename), log lines are appended, and a full disk or a missing permission becomes a one-line
`SaveError` that says what is intact. Nothing is written through a symbolic link or onto a directory, FIFO
or device (`amc.safe_open` opens what amc reads): a run directory may come from someone else.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from amc.errors import SaveError
from amc.safe_open import REGULAR, RUN_FILE, RUN_FILE_FIX, NotAFileError, file_kind, open_descriptor

_rename = os.replace  # every whole-file write ends here: the one step a kill falls before or after (tests patch it)
# disk full, quota exceeded, no permission, read-only file system: the user's to fix, not a bug
SAVE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace `path` by `data` all at once (see `write_file_atomic`)."""
    write_file_atomic(path, lambda f: f.write(data))


def write_file_atomic(path: str | Path, fill: Callable[[BinaryIO], object]) -> None:
    """Replace `path` by what `fill(f)` writes into `f` all at once: a temporary file beside it, fsync, then
    a rename. `fill` streams, so a file larger than memory allows never exists as one bytes object.

    Whatever happens (disk full, Ctrl-C, a kill), `path` holds either its old or its new content. A full
    disk or a missing permission becomes a one-line `SaveError` saying that the old content is intact.
    """
    path = Path(path)
    _check_replaceable(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, _mode_for(path))  # mkstemp's 0600 would hide every run file from the user's group
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        _rename(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if e.errno not in SAVE_ERRNOS:
            raise
        reason = e.strerror or errno.errorcode.get(e.errno, str(e.errno))
        kept = f"the previous {path.name} is intact" if path.exists() else f"no partial {path.name} was left"
        raise SaveError(f"cannot save {path} ({reason}); {kept}; free disk space or choose a writable "
                        "location, then run again", str(path), reason) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The mode `open()` would give `path`: its current one if it exists, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask both sets and returns, racing other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def append_line(path: str | Path, line: str) -> None:
    """Append one log line; a full disk is a SaveError (a partial last line is dropped on resume)."""
    path = Path(path)
    try:
        fd = open_descriptor(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, RUN_FILE, RUN_FILE_FIX,
                             follow_links=False)
        with os.fdopen(fd, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        if e.errno not in SAVE_ERRNOS:
            raise
        raise SaveError(f"cannot save {path} ({e.strerror})", str(path), e.strerror) from None


def _check_replaceable(path: Path) -> None:
    """Refuse to replace anything but a regular file (or nothing): a rename would replace a link itself, but a
    link, directory, FIFO or device where a file belongs is not amc's to remove."""
    kind = file_kind(path, follow_links=False)
    if kind not in (None, REGULAR):
        raise NotAFileError(path, kind, "file", "amc writes only regular files: move it away or choose another path",
                            "write")


__all__ = ["SAVE_ERRNOS", "append_line", "write_bytes_atomic", "write_file_atomic", "write_json_atomic"]
