"""The torch thread counts a user may set (--threads, --latency-threads, `amc bench --threads`), checked in one place
before any work."""

from __future__ import annotations

from amc.errors import ConfigError

# above any machine's core count; more threads only slow torch down, and each one reserves a stack, so a count
# like 100000 makes thread creation itself fail (a crash in a native library, not an error amc could report)
MAX_THREADS = 1024


def check_threads(threads: int | None, option: str = "--threads") -> None:
    """Refuse a thread count that is not an integer in [1, MAX_THREADS], naming `option`; None (torch's choice)
    passes."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise ConfigError(f"{option} must be an integer, got {threads!r}")
    if threads < 1:
        raise ConfigError(f"{option} must be at least 1, got {threads}")
    if threads > MAX_THREADS:
        raise ConfigError(f"{option} must be at most {MAX_THREADS}, got {threads}; more threads than CPU cores only "
                          "slow torch down: pass at most the core count (nproc)")


__all__ = ["MAX_THREADS", "check_threads"]
