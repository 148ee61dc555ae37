"""Where amc keeps what it can rebuild (measured latency tables, downloaded datasets, decoded ImageFolder images):
the directory named by the environment variable AMC_CACHE_DIR, else ~/.cache/amc under the home directory ($HOME)."""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from amc.errors import AmcError, SaveError

CACHE_ENV = "AMC_CACHE_DIR"
MOVE_IT = f"set {CACHE_ENV} to a writable directory (the cache defaults to ~/.cache/amc, under $HOME)"


class CacheDirError(AmcError):
    """The cache directory cannot be found, created or written; the message names AMC_CACHE_DIR, which moves it."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot use amc's cache directory {path} ({reason}); {MOVE_IT}")
        self.path, self.reason = Path(path), reason


def cache_dir(kind: str) -> Path:
    """The cache's subdirectory `kind` ("latency", "data", "imagefolder"), not created."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / kind
    try:
        return Path.home() / ".cache" / "amc" / kind
    except RuntimeError:  # no $HOME and no entry in the password database
        raise CacheDirError(f"~/.cache/amc/{kind}", "no home directory: $HOME is not set") from None


def make_cache_dir(kind: str) -> Path:
    """`cache_dir(kind)`, created if need be; a `CacheDirError` where it cannot be a writable directory."""
    path = cache_dir(kind)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise CacheDirError(path, e.strerror or type(e).__name__) from None
    return path


def keep(kind: str, name: str, write: Callable[[Path], None], lost: str) -> None:
    """Write file `name` into the cache's subdirectory `kind` with `write(path)`. A cache that cannot be written
    costs a later run time, never this one: the failure is a warning, `lost` (what is not kept, e.g. "the latency
    table is not kept for the next search") with the path, the reason and the setting that moves the cache."""
    path: Path | str = f"{CACHE_ENV}/{kind}/{name}"
    try:
        path = make_cache_dir(kind) / name
        write(path)
        return
    except CacheDirError as e:
        path, reason = e.path / name, e.reason
    except SaveError as e:
        reason = e.reason
    except OSError as e:
        reason = e.strerror or type(e).__name__
    except AmcError as e:  # something other than a file where the cache belongs
        reason = str(e)
    warnings.warn(f"{lost}: cannot write {path} ({reason}); {MOVE_IT}", stacklevel=4)


__all__ = ["CACHE_ENV", "CacheDirError", "MOVE_IT", "cache_dir", "keep", "make_cache_dir"]
