"""User-facing errors: each carries a one-line message naming the problem and the fix.

The CLI prints ``AmcError`` messages without a traceback and exits with code 2; anything else is a bug.
"""


class AmcError(Exception):
    """A mistake the user can fix (bad path, unknown model, impossible budget, ...)."""


class ConfigError(AmcError, ValueError):
    """A setting out of its range or of the wrong type (a ValueError too, for callers that catch those)."""


class UnknownModelError(AmcError):
    pass


class CheckpointError(AmcError):
    pass


class DataError(AmcError):
    pass


class BudgetError(AmcError):
    pass


class UnsupportedModelError(AmcError):
    pass


class SaveError(AmcError):
    """A file could not be written (disk full, no permission); its previous version is left intact."""

    def __init__(self, message: str, path: str = "", reason: str = ""):
        super().__init__(message)
        self.path, self.reason = path, reason


def one_line(error: BaseException) -> str | None:
    """The line the CLI prints for `error`, or None for a bug (whose traceback it shows). A path the system
    refuses (too long, a file where a directory belongs, no permission) is the user's to change."""
    if isinstance(error, AmcError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        reason = error.strerror or type(error).__name__
        return f"cannot use {error.filename} ({reason}); choose another path"
    return None
