"""`RunDir`: the one owner of a run directory's files and JSON shapes.

A run directory holds config.json (the settings and what reproducing them needs), episodes.jsonl (one line
per episode), policy.json (the best policy so far), state.pt (agent, loop and RNG state, rewritten
atomically after every episode), latency_calibration.json (a latency search's calibration), the exported
model (model.pt, model.json, model_sparse.pt), summary.json (last: it names the exported files by SHA-256; its
content is a `RunSummary`, `amc.run_records`), and what later commands add: finetune.pt, model_finetuned.pt,
model_finetuned_sparse.pt, report.html and its figures, latency.json. Every other module reads and writes these
through this class, never by a path of its own; it checks each file's shape on read (`amc.run_schema`) and never
reads through a link or from a FIFO. Two files are amc's own: .amc-run, written
first into a directory amc creates (only such a run is ever replaced by --overwrite), and .amc-lock, which the
one process writing the run holds an OS lock on. Creating, locking and the run's status are `RunLifecycle`'s
(`amc.run_lifecycle`); the names are `amc.run_names`'.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amc.atomic import append_line, write_bytes_atomic, write_json_atomic
from amc.config import SearchConfig
from amc.data import Dataset, fingerprint
from amc.errors import AmcError, CheckpointError
from amc.policy import Policy
from amc.run_lifecycle import FINISHED, RunLifecycle, RunStatus
from amc.run_names import (CONFIG_FILE, check_not_a_run_file, EPISODES_FILE, EXPORT_FILES, FINETUNE_CHECKPOINT_FILE, FINETUNED_FILE,
                           FINETUNED_SPARSE_FILE, LATENCY_CALIBRATION_FILE, LAYERS_FIGURE, LOCK_FILE, META_FILE,
                           MODEL_FILE, POLICY_FILE, REPORT_FILE, RUN_FILES, RUN_MARKER, SEARCH_FIGURE, SPARSE_FILE,
                           STATE_FILE, SUMMARY_FILE, TENSORBOARD_DIR, TIMINGS_FILE)
from amc.run_schema import (CALIBRATION_SHAPE, CONFIG_SHAPE, EPISODE_SHAPE, INFO_SHAPE, META_SHAPE, STATE_SHAPE,
                            SUMMARY_SHAPE, check_shape)
from amc.run_records import ExportedModel, RunSummary
from amc.safe_open import read_run_file


def environment_versions() -> dict:
    import torch_pruning

    from amc.version import __version__
    return {"amc": __version__, "torch": torch.__version__, "torch_pruning": torch_pruning.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _load_json(path: Path, fix: str) -> Any:
    """A run file's JSON; one line naming the file and `fix` if it does not parse (a missing file raises
    FileNotFoundError for the caller to word)."""
    try:
        return json.loads(read_run_file(path))
    except (ValueError, UnicodeDecodeError) as e:
        raise AmcError(f"{path} is corrupt ({type(e).__name__}); {fix}") from None


class RunDir(RunLifecycle):
    """A run directory at `path`: what it holds, read and written in one place."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # ---- config.json --------------------------------------------------------------------------------
    def write_config(self, config: SearchConfig, *, dataset: Dataset, info, graph, weights: str | None,
                     baseline_top1: float, **extra) -> None:
        """config.json: the settings plus what reproducing the run needs (versions, data and weights hashes). Paths
        are stored absolute, so that later commands and `amc search --config` find them from any directory."""
        settings = {**asdict(config), "weights": _absolute(config.weights), "data_dir": _absolute(config.data_dir)}
        write_json_atomic(self.path / CONFIG_FILE, {
            "search": settings, "versions": environment_versions(), "model": asdict(info),
            "data_fingerprint": {s: fingerprint(getattr(dataset, s)) for s in ("train", "heldout", "test")},
            "weights_loaded": _absolute(weights), "weights_sha256": sha256(weights) if weights else None,
            "decisions": graph.describe(), "skipped_layers": graph.skipped,
            "baseline": {"heldout_top1": baseline_top1, "macs": graph.total_macs, "params": graph.total_params},
            **extra})

    def write_peer_config(self, settings: dict, info) -> None:
        """A config.json for a model exported outside a search (a benchmark's peer): its settings and the
        original's model record (`info`, an `amc.models.ModelInfo`), enough for `amc finetune --distill`."""
        write_json_atomic(self.path / CONFIG_FILE, {"search": settings, "model": asdict(info)})

    def read_config(self, purpose: str = "used", fix: str = "re-run the search") -> dict:
        """config.json as written; a one-line error if it is missing, corrupt, or of the wrong shape."""
        path = self.path / CONFIG_FILE
        try:
            raw = _load_json(path, f"the run cannot be {purpose}: {fix}")
        except FileNotFoundError:
            raise AmcError(f"{self.path} is not a search run (no config.json); point at the --out of `amc search`") \
                from None
        return check_shape(path, raw, CONFIG_SHAPE, f"the run cannot be {purpose}: {fix}", required=("search",))

    def settings(self, purpose: str = "used") -> dict:
        """The `search` section of config.json (model, weights, data, ...)."""
        return self.read_config(purpose)["search"]  # there and a dict: read_config checks its shape

    def update_settings(self, config: SearchConfig) -> None:
        """Rewrite config.json's settings (a resume that adds episodes); nothing else changes."""
        record = self.read_config("resumed")
        if SearchConfig.from_dict(record["search"]) != config:
            write_json_atomic(self.path / CONFIG_FILE, {**record, "search": asdict(config)})

    def search_config(self) -> SearchConfig:
        """The settings a run was started with; resuming it uses these, not new ones."""
        self.check_resumable()
        path = self.path / CONFIG_FILE
        settings = self.read_config("resumed", "start it again with --overwrite")["search"]
        try:
            return SearchConfig.from_dict(settings)
        except (AmcError, ValueError, TypeError) as e:  # a setting of the wrong type, out of range or unknown
            raise AmcError(f"{path} is corrupt ({e}); the run cannot be resumed: start it again with --overwrite") \
                from None

    def check_same_inputs(self, dataset: Dataset, weights: str | None) -> None:
        """On resume: refuse data or weights that differ from what the run started with."""
        record = self.read_config("resumed")
        recorded = record.get("data_fingerprint") or {}
        for split, old in ((s, recorded[s]) for s in ("train", "heldout", "test") if s in recorded):
            new = fingerprint(getattr(dataset, split))
            if new != old:
                raise AmcError(f"the {split} data differs from the data {self.path} was started on (fingerprint "
                               f"{new}, recorded {old}); resume with the same data, or start a new search")
        old = record.get("weights_sha256")
        if old and weights and sha256(weights) != old:
            raise AmcError(f"weights {weights} changed since {self.path} was started (sha256 differs); resume with "
                           "the original checkpoint, or start a new search")

    # ---- episodes.jsonl -----------------------------------------------------------------------------
    def append_episode(self, record: dict) -> None:
        append_line(self.path / EPISODES_FILE, json.dumps(record))

    def read_episodes(self) -> list[dict]:
        """Every logged episode; a one-line error names the first corrupt line."""
        return self._parse_episodes(self._episode_lines(), "re-run the search")

    def restore_episodes(self, count: int) -> list[dict]:
        """The first `count` logged episodes, the log cut back to them (a line past the saved state is redone)."""
        path, lines = self.path / EPISODES_FILE, self._episode_lines()
        if len(lines) < count:
            raise AmcError(f"{path} holds {len(lines)} episodes but the saved state is after episode "
                           f"{count}; the run is damaged: start it again with --overwrite")
        log = self._parse_episodes(lines[:count], "the run cannot be resumed: start it again with --overwrite")
        write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in log).encode())
        return log

    def _episode_lines(self) -> list[str]:
        path = self.path / EPISODES_FILE
        try:
            return read_run_file(path).decode().splitlines() if path.exists() else []
        except UnicodeDecodeError:
            raise AmcError(f"{path} is corrupt (not text); re-run the search") from None

    def _parse_episodes(self, lines: list[str], fix: str) -> list[dict]:
        path, episodes = self.path / EPISODES_FILE, []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise AmcError(f"{path} is corrupt at line {number}; {fix}") from None
            episodes.append(check_shape(path, record, EPISODE_SHAPE, f"at line {number}; {fix}",
                                        required=("reward", "accuracy", "keep")))
        return episodes

    # ---- state.pt -----------------------------------------------------------------------------------
    def has_state(self) -> bool:
        return (self.path / STATE_FILE).exists()

    def save_state(self, agent_state: dict, episode: int, best: dict | None) -> None:
        self._write_tensors(STATE_FILE, {"episode": episode, "agent": agent_state,
                                         "best": json.dumps(best) if best else "", "rng": _global_rng()})

    def load_state(self) -> dict:
        """The saved state, with the global generators restored: {"episode", "agent", "best"}."""
        fix = "the run cannot be resumed: start it again with --overwrite"
        state = self.read_tensors(STATE_FILE, fix)
        check_shape(self.path / STATE_FILE, state, STATE_SHAPE, fix, required=("episode", "agent", "best"))
        if state["episode"] < 0:
            raise AmcError(f"{self.path / STATE_FILE} has the wrong structure (episode {state['episode']}); {fix}")
        try:
            best = json.loads(state["best"]) if state["best"] else None
            _set_global_rng(state.get("rng"))
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
            raise AmcError(f"{self.path / STATE_FILE} has the wrong structure ({type(e).__name__} in its best "
                           f"policy or random state); {fix}") from None
        return {"episode": state["episode"], "agent": state["agent"], "best": best}

    # ---- the exported model: model.pt, model.json, model_sparse.pt -----------------------------------
    def write_model(self, state_dict: dict, info, dropped_blocks: list[str], extra: dict | None = None) -> None:
        """model.pt (the network's state dict), then model.json: its `ModelInfo`, the residual blocks it dropped
        (`amc.blocks`) and `extra` (a search's or prune's policy)."""
        self._write_tensors(MODEL_FILE, state_dict)
        write_json_atomic(self.path / META_FILE, {"info": asdict(info),
                                                  **({"dropped_blocks": dropped_blocks} if dropped_blocks else {}),
                                                  **(extra or {})})

    def write_sparse(self, packed: dict) -> int:
        """model_sparse.pt, a fine-grained export in its compressed form (`amc.pruning.fine_grained.pack_sparse`);
        returns its bytes, the size the model-size target is about."""
        return self._write_tensors(SPARSE_FILE, packed)

    def read_model(self) -> ExportedModel:
        """The exported model. Refused in one line where there is none, or where a search's or a prune's export
        did not finish (naming the command that finishes it); a model saved outside a run is read as it is."""
        started = self.has(CONFIG_FILE)
        if not (self.has(META_FILE) and self.has(MODEL_FILE)):
            if started:  # a run still going, stopped, or killed before its export
                raise AmcError(f"{self.path} holds no exported model yet: it is {self.status().text}")
            raise AmcError(f"{self.path} holds no exported model ({META_FILE} and {MODEL_FILE}); "
                           "point at the output directory of a finished `amc search`")
        if started:  # a run's export (not a model saved on its own): whole, or refused
            self.check_export_whole()
        meta, fix = self._model_meta(), "re-export the run"
        return ExportedModel(self._model_info(meta), [str(b) for b in meta.get("dropped_blocks", [])],
                             self.read_tensors(MODEL_FILE, fix), self.path / META_FILE, self.path / MODEL_FILE)

    def read_model_meta(self) -> dict:
        """model.json's architecture record ({"name", "num_classes", "kwargs"}); one line if it is corrupt."""
        return self._model_info(self._model_meta())

    def _model_meta(self) -> dict:
        path, fix = self.path / META_FILE, "re-export the run"
        return check_shape(path, _load_json(path, fix), META_SHAPE, fix, required=("info",))

    def _model_info(self, meta: dict) -> dict:
        return check_shape(self.path / META_FILE, meta["info"], INFO_SHAPE, "re-export the run",
                           required=("name", "num_classes"))

    def original_record(self, purpose: str = "used") -> tuple[dict, Path]:
        """config.json's record of the network the run started from (a `ModelInfo` as a dict; {} if it has none),
        and the file it came from, which `amc.models.rebuild` names in its messages."""
        return self.read_config(purpose).get("model") or {}, self.path / CONFIG_FILE

    # ---- fine-tuning: finetune.pt, model_finetuned.pt, model_finetuned_sparse.pt -----------------------
    @property
    def finetune_checkpoint(self) -> Path:
        """finetune.pt: where `amc.train.train` keeps a fine-tune's resumable state (replaced atomically every
        epoch)."""
        return self.path / FINETUNE_CHECKPOINT_FILE

    def has_finetune_checkpoint(self) -> bool:
        return self.finetune_checkpoint.exists()

    def read_finetune_checkpoint(self) -> dict:
        """finetune.pt's content ({"state_dict", "epoch", "history", "config", ...})."""
        return self.read_tensors(FINETUNE_CHECKPOINT_FILE, "fine-tune again with --overwrite")

    def remove_finetune_checkpoint(self) -> None:
        self.finetune_checkpoint.unlink(missing_ok=True)

    def write_finetuned(self, state_dict: dict) -> None:
        self._write_tensors(FINETUNED_FILE, {k: v.contiguous() for k, v in state_dict.items()})

    def write_finetuned_sparse(self, packed: dict) -> int:
        """model_finetuned_sparse.pt: a fine-grained run's fine-tuned model, compressed as `write_sparse`'s."""
        return self._write_tensors(FINETUNED_SPARSE_FILE, packed)

    @property
    def finetuned_weights(self) -> Path:
        """model_finetuned.pt, as a checkpoint for `--weights` (an iterative schedule's next stage starts from it)."""
        return self.path / FINETUNED_FILE

    def _write_tensors(self, name: str, tensors: dict) -> int:
        """Save `tensors` (torch.save) as the run's file `name`, replaced atomically; returns the bytes written."""
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        write_bytes_atomic(self.path / name, buffer.getvalue())
        return len(buffer.getvalue())

    def read_tensors(self, name: str, fix: str) -> dict:
        """The tensors saved in the run's file `name` (model.pt, finetune.pt, ...), loaded without unpickling code;
        a one-line CheckpointError ending in `fix` if they cannot be read."""
        path = self.path / name
        try:
            return torch.load(io.BytesIO(read_run_file(path)), map_location="cpu", weights_only=True)
        except (AmcError, FileNotFoundError):
            raise
        except Exception as e:  # noqa: BLE001 - any failure to read is the same user-facing problem
            raise CheckpointError(f"cannot read {path} ({type(e).__name__}); {fix}") from None

    def read_finetuned(self) -> dict:
        path = self.path / FINETUNED_FILE
        if not path.exists():
            raise AmcError(f"{self.path} has no fine-tuned model; run `amc finetune {self.path}` first")
        return self.read_tensors(FINETUNED_FILE, f"fine-tune again: `amc finetune {self.path} --overwrite`")

    # ---- policy.json, summary.json, latency calibration ---------------------------------------------
    def write_policy(self, policy: Policy) -> None:
        policy.save(self.path / POLICY_FILE)

    def read_policy(self) -> Policy:
        return Policy.load(self.path / POLICY_FILE)

    def write_summary(self, summary: RunSummary) -> None:
        """summary.json, the last file an export writes: it names the exported files by their SHA-256, so that a
        command finding other files there (an export killed half-way) knows the export did not finish."""
        exported = {name: self._digest(name) for name in EXPORT_FILES if (self.path / name).is_file()}
        write_json_atomic(self.path / SUMMARY_FILE, replace(summary, export=exported).to_dict())

    def export_matches(self, summary: RunSummary) -> bool:
        """Whether the exported files are those `summary` was written for (a summary without the record, from
        an older amc, is taken at its word)."""
        recorded = summary.export
        if not isinstance(recorded, dict):
            return True
        return all(isinstance(digest, str) and (self.path / name).is_file() and self._digest(name) == digest
                   for name, digest in recorded.items() if name in EXPORT_FILES)

    def _digest(self, name: str) -> str:
        return hashlib.sha256(read_run_file(self.path / name)).hexdigest()

    def has_summary(self) -> bool:
        return (self.path / SUMMARY_FILE).exists()

    def read_summary(self) -> RunSummary | None:
        """summary.json (None where there is none), written by this amc or an earlier one: a search's
        `best_val_top1` of before is read as `heldout_top1`, like a prune's."""
        path = self.path / SUMMARY_FILE
        try:
            raw = _load_json(path, "re-run the search")
        except FileNotFoundError:
            return None
        return RunSummary.from_dict(check_shape(path, raw, SUMMARY_SHAPE, "re-run the search"))

    def record_finetune(self, record: dict) -> None:
        """Put `amc finetune`'s record into summary.json, keeping the rest (the export's record too); an earlier
        amc's summary is rewritten in today's names."""
        summary = self.read_summary() or RunSummary()
        write_json_atomic(self.path / SUMMARY_FILE, replace(summary, finetune=record).to_dict())

    def write_schedule_summary(self, record: dict) -> None:
        """summary.json of an iterative schedule's directory (`amc.iterative`), whose stages are runs of their own
        in its subdirectories."""
        write_json_atomic(self.path / SUMMARY_FILE, record)

    def read_latency_calibration(self) -> dict | None:
        path = self.path / LATENCY_CALIBRATION_FILE
        if not path.exists():
            return None
        fix = "the run cannot be resumed: start it again with --overwrite"
        saved = _load_json(path, fix)
        check_shape(path, saved, CALIBRATION_SHAPE, fix, required=("offset_ms", "scale"))
        if not (math.isfinite(saved["offset_ms"]) and math.isfinite(saved["scale"]) and saved["scale"] > 0):
            raise AmcError(f"{path} has the wrong structure (offset_ms and scale must be finite, scale above 0); "
                           f"{fix}")
        return saved

    def write_latency_calibration(self, calibration: dict) -> None:
        write_json_atomic(self.path / LATENCY_CALIBRATION_FILE, calibration)

    # ---- what later commands read and add: the exported policy, report files, timings -----------------
    def has(self, name: str) -> bool:
        """Whether the run holds the file `name` (one of the constants above)."""
        return (self.path / name).exists()

    def size(self, name: str) -> int | None:
        """Bytes of the file `name` in the run; None if it is not there."""
        path = self.path / name
        return path.stat().st_size if path.exists() else None

    def read_exported_keep(self) -> list | None:
        """model.json's kept counts (what model.pt holds), read leniently; None if missing or unreadable."""
        return self._lenient_keep(META_FILE, lambda d: d["policy"]["keep"])

    def read_policy_keep(self) -> list | None:
        """policy.json's kept counts, read leniently; None if missing or unreadable."""
        return self._lenient_keep(POLICY_FILE, lambda d: d["keep"])

    def _lenient_keep(self, name: str, extract) -> list | None:
        try:
            return extract(json.loads(read_run_file(self.path / name)))
        except (OSError, ValueError, KeyError, TypeError, AmcError):
            return None

    def write_report(self, html: str, figures: dict[str, bytes]) -> Path:
        """The report's figures (name -> PNG), then report.html; returns the page's path."""
        with self.writing():
            for name, png in figures.items():
                write_bytes_atomic(self.path / name, png)
            out = self.path / REPORT_FILE
            write_bytes_atomic(out, html.encode("utf-8"))
        return out

    def read_timings(self) -> dict | None:
        """latency.json as written by `amc report --latency`; None if the run was not timed."""
        path = self.path / TIMINGS_FILE
        if not path.exists():
            return None
        fix = "time the run again with `amc report --latency`"
        timings = _load_json(path, fix)
        return check_shape(path, timings, {}, fix)

    def write_timings(self, record: dict) -> None:
        with self.writing():
            write_json_atomic(self.path / TIMINGS_FILE, record)


def _absolute(path: str | Path | None) -> str | None:
    return None if path is None else os.path.abspath(path)  # no symlinks followed: the path the user named


def _global_rng() -> dict:
    """torch's and numpy's global generators, as tensors and plain values (loadable with weights_only)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(gauss)}


def _set_global_rng(state: dict | None) -> None:
    if state is None:  # a state file from before the global generators were saved
        return
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))


__all__ = ["CONFIG_FILE", "EPISODES_FILE", "EXPORT_FILES", "ExportedModel", "FINETUNE_CHECKPOINT_FILE",
           "FINETUNED_FILE", "FINETUNED_SPARSE_FILE", "FINISHED", "LATENCY_CALIBRATION_FILE", "LAYERS_FIGURE",
           "LOCK_FILE", "META_FILE", "MODEL_FILE", "POLICY_FILE", "REPORT_FILE", "RUN_FILES", "RUN_MARKER", "RunDir",
           "RunStatus", "RunSummary",
           "SEARCH_FIGURE", "SPARSE_FILE", "STATE_FILE", "SUMMARY_FILE", "TENSORBOARD_DIR", "TIMINGS_FILE",
           "check_not_a_run_file", "environment_versions", "sha256"]
