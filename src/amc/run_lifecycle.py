"""A run directory's life: created (or replaced) only where amc may, written by one process at a time, and at
every moment in a state `status` names, with the command that takes it on.

`RunLifecycle` is the part of `amc.runs.RunDir` that does not read or write a file's content: checks before a
run is created or replaced, the lock, the refusal of anything amc did not make (links, special files, another's
files at any depth), and where a run stands after any kill: in use, created, stopped, export interrupted, prune
interrupted, finished, a fine-tune interrupted. Its methods use RunDir's readers (`read_config`, `read_summary`,
...); it is never used on its own.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from amc.atomic import write_json_atomic
from amc.config import SearchConfig
from amc.errors import AmcError
from amc.run_names import (CONFIG_FILE, LOCK_FILE, RUN_MARKER, TENSORBOARD_DIR, TENSORBOARD_EVENTS, is_run_file,
                           is_temporary)
from amc.run_records import RunSummary
from amc.safe_open import RUN_FILE, RUN_FILE_FIX, NotAFileError, kind_of, open_descriptor

# the states of `RunDir.status` whose exported model is whole (a fine-tune in progress does not touch it)
FINISHED = ("finished", "finetune interrupted", "pruned", "exported")


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands (`RunDir.status`): `state` for scripts, `text` for people (it names the command that
    takes the run on), `next` that command's arguments after `amc` (None: nothing to continue)."""

    state: str
    text: str
    next: list[str] | None



class RunLifecycle:
    """Creating, replacing, locking a run directory and telling where it stands (a base of `amc.runs.RunDir`)."""

    path: Path
    _lock_fd: int | None

    def check_new(self, overwrite: bool, inputs: tuple = (), resumable: bool = True) -> None:
        """Refuse a bad output directory for a new run before any work is done. With `overwrite`, refuse
        anything but a run amc created (see `check_replaceable`) and a run holding one of `inputs`. A directory
        holding only what a run's creation leaves before its first record (amc's marker, its lock, a temporary
        file) counts as empty. `resumable`: the command has --resume (a search) or not (prune)."""
        out = self.path
        try:
            exists = out.exists()
        except OSError as e:  # a name longer than the file system allows, a loop of links, ...
            raise AmcError(f"cannot use {out} as the output directory ({e.strerror}); choose another --out") from None
        if exists and not out.is_dir():
            raise AmcError(f"output path {out} is a file; choose a directory for --out")
        if exists and not self._only_creation_leftovers():
            if not overwrite:
                ways = "pass --resume to continue it, --overwrite to replace it," if resumable else \
                    "pass --overwrite to replace it"
                raise AmcError(f"output directory {out} already exists; {ways} or choose another --out")
            self.check_replaceable()
            inside = [str(p) for p in inputs if p is not None and _within(Path(p), out)]
            if inside:
                raise AmcError(f"--overwrite would delete {inside[0]}, an input of this command, with {out}; "
                               "move it out of the run or choose another --out")

    def check_replaceable(self) -> None:
        """--overwrite replaces a run amc created and nothing else: never the current directory or one above
        it, a symbolic link's target, a directory without amc's marker, or a run holding other files."""
        out = self.path
        if out.resolve() in (Path.cwd(), *Path.cwd().parents):
            raise AmcError(f"--overwrite refuses to replace {out}: it is the current directory or one above it; "
                           "choose a new directory for --out")
        if out.is_symlink():
            raise AmcError(f"--overwrite refuses to replace {out}: it is a symbolic link; pass the directory itself "
                           "or choose another --out")
        if not (out / RUN_MARKER).is_file():
            raise AmcError(f"--overwrite refuses to replace {out}: it is not a run amc created (no {RUN_MARKER}); "
                           "move its files away or choose another --out")
        foreign = _foreign(out)
        if foreign:
            raise AmcError(f"--overwrite refuses to replace {out}: it holds files amc did not write "
                           f"({', '.join(foreign[:3])}); move them away or choose another --out")

    def _only_creation_leftovers(self) -> bool:
        """Whether the (existing) directory holds nothing but amc's marker, lock and temporary files: a run whose
        creation was killed before config.json, which a new run may take over as it is."""
        return all(e.name in (RUN_MARKER, LOCK_FILE) or is_temporary(e.name) for e in _entries(self.path))

    def check_resumable(self) -> None:
        """Refuse --resume of a directory with no search run. A run killed before its first episode finished (no
        state.pt) resumes from the start, with its own settings."""
        try:
            started = (self.path / CONFIG_FILE).exists()
        except OSError as e:  # a name longer than the file system allows, a loop of links, ...
            raise AmcError(f"cannot use {self.path} as a run directory ({e.strerror}); check --out") from None
        if not started:
            raise AmcError(f"nothing to resume in {self.path} (no config.json); start a new search without --resume")
        if "policy_source" in self.read_config("resumed", "start it again with --overwrite"):
            raise AmcError(f"{self.path} was written by `amc prune`, which has nothing to resume: run that `amc "
                           "prune` command again with --overwrite")

    def create(self, overwrite: bool = False, resumable: bool = True) -> None:
        """Create the run directory (or empty a run, for --overwrite) once everything is set up, under this
        process's lock; amc's marker is its first file."""
        out = self.path
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.lock(fix="choose a writable --out")
            leftover = [p for p in out.iterdir() if p.name != LOCK_FILE]
            if leftover:  # checked again under the lock: another process may have written here meanwhile
                self.check_new(overwrite, resumable=resumable)
                for p in leftover:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
            write_json_atomic(out / RUN_MARKER, {"amc_run": 1})
        except OSError as e:
            self.unlock()
            raise AmcError(f"cannot write to output directory {out} ({e.strerror}); choose a writable --out") \
                from None

    def remove(self) -> None:
        self.unlock()
        shutil.rmtree(self.path, ignore_errors=True)

    def lock(self, fix: str = "make the run directory writable") -> None:
        """Hold the run's lock (an flock on LOCK_FILE, released by the OS if this process dies) until `unlock`;
        a second amc process writing the same run gets a one-line error naming the holder's pid. The run's own
        files are checked first: a link, directory, FIFO or device where amc keeps a file is refused (`fix`: what
        to do if the directory cannot be written)."""
        if self._lock_fd is not None:
            return
        self.check_own_files()
        path = self.path / LOCK_FILE
        try:
            fd = open_descriptor(path, os.O_RDWR | os.O_CREAT, RUN_FILE, RUN_FILE_FIX, follow_links=False)
        except NotAFileError:
            raise
        except OSError as e:
            raise AmcError(f"cannot write to {self.path} ({e.strerror}); {fix}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AmcError(f"{self.path} is in use by another amc process (pid {holder}); wait for it to finish"
                           + (", or choose another --out" if "--out" in fix else "")) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def check_own_files(self) -> None:
        """Refuse a run in which a name amc writes holds something amc did not make: a symbolic link, or a
        directory, FIFO or device where a file belongs (a file of the tensorboard directory likewise)."""
        for entry in _entries(self.path):
            if entry.name == TENSORBOARD_DIR:
                if not entry.is_dir(follow_symlinks=False):
                    raise _not_a_file(entry)
                for inner in _entries(Path(entry.path)):
                    if not inner.is_file(follow_symlinks=False):
                        raise _not_a_file(inner)
            elif is_run_file(entry.name) and not entry.is_file(follow_symlinks=False):
                raise _not_a_file(entry)

    @contextmanager
    def writing(self) -> Iterator["RunLifecycle"]:
        """The run, locked for this process while the block runs (see `lock`); a lock already held stays held."""
        held = self._lock_fd is not None
        self.lock()
        try:
            yield self
        finally:
            if not held:
                self.unlock()

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the file stays: a stale one holds no lock
            self._lock_fd = None

    def lock_holder(self) -> str | None:
        """The pid (as written) of the live amc process holding the run's lock, else None."""
        try:
            fd = open_descriptor(self.path / LOCK_FILE, os.O_RDONLY, RUN_FILE, RUN_FILE_FIX, follow_links=False)
        except (OSError, AmcError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except OSError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)

    def status(self) -> "RunStatus":
        """Where the run stands and the command that takes it on: in use, created, stopped, export interrupted,
        prune interrupted, finished, pruned, or exported (a model saved outside a search and a prune)."""
        out = str(self.path)
        holder = self.lock_holder()
        if holder is not None:
            return RunStatus("in use", f"in use by another amc process (pid {holder}): wait for it to finish", None)
        if not (self.path / CONFIG_FILE).exists():
            return RunStatus("created", "created, nothing written yet: run the same command again", None)
        record = self.read_config("shown", "re-run the search")
        summary = self.read_summary()
        whole = summary is not None and self.export_matches(summary)  # the export summary.json names is here
        resume = ["search", "--resume", "--out", out]
        if "policy_source" in record:
            if whole:
                return self._finetune_status(summary) or RunStatus("pruned", "pruned by a saved policy", None)
            return RunStatus("prune interrupted", "prune interrupted before its summary: run that `amc prune` "
                             "command again with --overwrite", None)
        if "baseline" not in record:  # config.json of a model saved outside a search (a benchmark's peer)
            return RunStatus("exported", "exported outside a search", None)
        planned = _episodes_to_run(record["search"])
        done = len(self._episode_lines())
        early = summary.stopped_early if whole else None
        if isinstance(early, dict) and summary.episodes == done:  # a callback ended it: exported as asked
            return self._finetune_status(summary) or RunStatus(
                "finished", f"finished (stopped after {done} of {early.get('planned')} episodes by "
                f"{', '.join(map(str, early.get('by') or ['a callback']))})", None)
        if isinstance(planned, int) and done < planned:
            what = "started, no episode finished" if done == 0 else f"stopped after {done} of {planned} episodes"
            return RunStatus("stopped", f"{what}: resume with `amc {' '.join(resume)}`", resume)
        if not whole or summary.episodes not in (None, done):
            return RunStatus("export interrupted", f"export interrupted: resume with `amc {' '.join(resume)}`",
                             resume)
        return self._finetune_status(summary) or RunStatus("finished", "finished", None)

    def _finetune_status(self, summary: RunSummary) -> "RunStatus | None":
        """A fine-tune whose checkpoint is not the one summary.json records (stopped before its last epoch or
        before the summary was updated), else None."""
        if not self.has_finetune_checkpoint():
            return None
        try:
            saved = self.read_finetune_checkpoint()
            epoch, planned, history = int(saved["epoch"]), int(saved["config"]["epochs"]), saved["history"]
        except (AmcError, KeyError, TypeError, ValueError):
            return None  # `amc finetune` says what is wrong with it
        recorded = (summary.finetune or {}).get("history")
        if epoch >= planned and recorded == history:
            return None
        command = ["finetune", str(self.path), "--resume"]
        return RunStatus("finetune interrupted", f"finished; its fine-tune stopped after {epoch} of {planned} "
                         f"epochs: continue it with `amc {' '.join(command)}`", command)

    def check_export_whole(self) -> None:
        """Refuse the exported files of a search or prune whose export did not finish (no summary.json naming
        them, or other files than it names), with the command that finishes it."""
        summary = self.read_summary()
        if summary is not None and self.export_matches(summary):
            return
        if summary is not None or "baseline" in self.read_config("loaded", "re-run the search"):
            raise AmcError(f"{self.path} holds an unfinished export: it is {self.status().text}")

    def check_finished(self, doing: str) -> None:
        """Refuse to `doing` (e.g. "fine-tune") a run whose search or export has not finished, naming the
        command that finishes it."""
        status = self.status()
        if status.state not in FINISHED:
            raise AmcError(f"cannot {doing} {self.path}: it is {status.text}")



def _episodes_to_run(settings: dict) -> int | None:
    """How many episodes the run's settings play (one for a one-shot agent); None if they cannot be read."""
    try:
        return SearchConfig.from_dict(settings).episodes_to_run
    except (AmcError, ValueError, TypeError):
        return settings.get("episodes") if isinstance(settings.get("episodes"), int) else None


def _foreign(run: Path) -> list[str]:
    """What in `run` amc did not write, at any depth (paths relative to the run): anything not named as a run
    file, a run file's name on a link or a directory, anything in the tensorboard directory but its event files."""
    foreign = []
    for entry in _entries(run):
        if entry.name == TENSORBOARD_DIR and entry.is_dir(follow_symlinks=False):
            foreign += [f"{TENSORBOARD_DIR}/{inner.name}" for inner in _entries(Path(entry.path))
                        if not (inner.name.startswith(TENSORBOARD_EVENTS) and inner.is_file(follow_symlinks=False))]
        elif not (is_run_file(entry.name) and entry.name != TENSORBOARD_DIR and entry.is_file(follow_symlinks=False)):
            foreign.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    return sorted(foreign)


def _entries(directory: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _not_a_file(entry: os.DirEntry) -> NotAFileError:
    return NotAFileError(entry.path, kind_of(entry.stat(follow_symlinks=False).st_mode), RUN_FILE, RUN_FILE_FIX, "use")


def _within(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())




__all__ = ["FINISHED", "RunLifecycle", "RunStatus"]
