"""The search loop: agent <-> environment episodes, logging, checkpoints, resume and the final export.

`search()` is the Python API behind `amc search`. A run directory holds everything a run produces:
config.json, episodes.jsonl (one line per episode), policy.json (best so far), state.pt (agent and loop
state, rewritten atomically after every episode so a killed run resumes where it stopped), and at the end
model.pt/model.json (the exported pruned network) and summary.json. A failed save (disk full) leaves the
previous state whole. `apply_policy()` (behind `amc prune`) exports a saved policy the same way.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import platform
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from amc import models
from amc.agents import Transition, make_agent
from amc.cost import count_macs, count_params
from amc.data import Dataset, batches, fingerprint, load_dataset
from amc.env import CompressionEnv, EnvConfig
from amc.errors import AmcError, SaveError
from amc.evaluate import PRECISIONS, Evaluator, recalibrate_batchnorm
from amc.export import save_pruned
from amc.graph import LayerGraph
from amc.latency_budget import LatencyGuard, calibrated_latency_model
from amc.policy import SAVE_ERRNOS, Policy, write_bytes_atomic, write_json_atomic
from amc.pruning import ChannelPruner, collect_stats
from amc.pruning.channel import SELECTIONS
from amc.pruning.fine_grained import MagnitudePruner, WeightGraph, save_sparse
from amc.tensorboard_log import TensorBoardLog

STATE_FILE = "state.pt"
LATENCY_FILE = "latency_calibration.json"  # a resumed latency search reuses it: the same budget clipping
DEFAULT_MODEL, DEFAULT_DATA = "digits_cnn", "digits"


@dataclass
class SearchConfig:
    """Everything that determines a search; written to config.json and used to resume it."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    data: str = DEFAULT_DATA
    data_dir: str | None = None
    download: bool = False
    target: str = "macs"
    ratio: float = 0.5
    lbound: float = 0.2
    channel_round: int = 1
    group_coupled: bool = False          # also prune residual-coupled channel groups, one decision each
    reward: str = "acc"
    agent: str = "ddpg"
    episodes: int = 300
    warmup: int | None = None            # DDPG warm-up episodes; default min(100, episodes // 4)
    agent_options: dict = field(default_factory=dict)  # extra agent settings, e.g. {"noise_sigma_min": 0.1}
    seed: int = 0
    calibration_images: int = 3000
    points_per_image: int = 10
    selection: str = "magnitude"         # "magnitude" or "greedy" (reconstruction-aware)
    reconstruct: bool = True             # least-squares reconstruction of each pruned layer
    bn_recalibration: int = 2            # batches of 100 calibration images to re-estimate BN statistics on
                                         # before scoring (0 = off); on by default: +10 points before
                                         # fine-tuning, ranking kept (benchmarks/RESULTS.md, issue 5)
    heldout_limit: int | None = None     # score on the first N held-out images only
    racing: bool | None = None           # stop scoring a candidate early once it cannot plausibly be the best;
                                         # None: wherever it applies (--reward acc), see `races`
    eval_batch_size: int = 100
    precision: str = "fp32"              # scoring precision of candidates: "fp32" or "bf16" (faster)
    threads: int | None = None
    method: str = "channel"              # "channel" (structured) or "fine-grained" (weights, for model size)
    workers: int = 1                     # > 1: score episodes in parallel on Ray actors
    ray_address: str | None = None       # an existing Ray cluster (default: start a local one)
    latency_backend: str = "torch"       # target latency: the runtime it is measured on (torch, onnxruntime)
    latency_threads: int = 1             # ... with this many threads
    latency_batch: int = 1               # ... at this batch size
    tensorboard: bool = False            # also log every episode for TensorBoard (RUN_DIR/tensorboard)

    def __post_init__(self) -> None:
        EnvConfig(self.target, self.ratio, self.lbound, self.channel_round, self.reward)  # validates
        if self.episodes < 1:
            raise AmcError(f"--episodes must be at least 1, got {self.episodes}")
        if self.calibration_images < 1:
            raise AmcError("--calibration-images must be at least 1")
        if self.precision not in PRECISIONS:
            raise AmcError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.selection not in SELECTIONS:
            raise AmcError(f"--selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.method not in ("channel", "fine-grained"):
            raise AmcError(f"--method must be channel or fine-grained, got {self.method!r}")
        if self.method == "fine-grained" and (self.target != "params" and self.reward == "acc"
                                              or self.reward == "acc-macs"):
            raise AmcError("fine-grained pruning shrinks the parameters, not dense MACs or latency; use "
                           "--target params (or --reward acc-params)")
        if self.workers < 1:
            raise AmcError(f"--workers must be at least 1, got {self.workers}")
        if self.workers > 1 and self.method == "fine-grained":
            raise AmcError("--workers > 1 supports channel pruning only; drop --workers for fine-grained")
        if self.latency_backend not in ("torch", "onnxruntime"):
            raise AmcError(f"--latency-backend must be torch or onnxruntime, got {self.latency_backend!r}")
        if self.latency_threads < 1 or self.latency_batch < 1:
            raise AmcError("--latency-threads and the latency batch must be at least 1")
        if self.racing and self.reward != "acc":
            raise AmcError("--racing stops candidates that cannot beat the best accuracy, which is the reward only "
                           "with --reward acc; drop --racing for the accuracy-guaranteed rewards")
        if self.agent not in ("ddpg", "random", "uniform", "tpe"):
            raise AmcError(f"--agent must be ddpg, random, uniform or tpe, got {self.agent!r}")

    @property
    def races(self) -> bool:
        """Whether candidates are raced: as asked, else by default wherever racing applies. On by default
        because it kept the best and found better policies in the same episodes (benchmarks/RESULTS.md)."""
        return self.racing if self.racing is not None else self.reward == "acc"

    @property
    def warmup_episodes(self) -> int:
        return self.warmup if self.warmup is not None else min(100, self.episodes // 4)

    @classmethod
    def from_dict(cls, raw: dict) -> "SearchConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass
class SearchResult:
    run_dir: Path
    policy: Policy
    best_val_top1: float
    summary: dict
    episodes: list[dict] = field(repr=False)


class Candidate:
    """Builds and scores pruned candidates for the environment; remembers scores of repeated policies."""

    def __init__(self, pruner: ChannelPruner, evaluator: Evaluator, recalibration: list[torch.Tensor],
                 racing: bool = False):
        self.pruner = pruner
        self.evaluator = evaluator
        self.recalibration = recalibration
        self.racing = racing
        self.best = float("-inf")  # best fully scored accuracy: what a raced candidate must plausibly beat
        self.scored_images = 0     # held-out images the last new candidate was scored on
        self._scores: dict[tuple[int, ...], float] = {}
        self.timing: dict[str, float] = {}

    def build(self, keep: list[int]) -> nn.Module:
        t0 = time.perf_counter()
        pruned, _ = self.pruner.prune(keep)
        t1 = time.perf_counter()
        if self.recalibration:
            recalibrate_batchnorm(pruned, self.recalibration)
        self.timing.update(prune=t1 - t0, recalibrate=time.perf_counter() - t1)
        return pruned

    def __call__(self, keep: list[int]) -> float:
        key = tuple(keep)
        self.timing = {"prune": 0.0, "recalibrate": 0.0, "evaluate": 0.0}  # where an episode's time goes
        self.scored_images = 0  # stays 0 for a policy scored before
        if key not in self._scores:
            pruned = self.build(keep)
            t0 = time.perf_counter()
            if self.racing:
                score, self.scored_images = self.evaluator.race(pruned, self.best)
                if self.scored_images == self.evaluator.size:
                    self.best = max(self.best, score)
            else:
                score, self.scored_images = self.evaluator.top1(pruned), self.evaluator.size
            self._scores[key] = score
            self.timing["evaluate"] = time.perf_counter() - t0
        return self._scores[key]


def _check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a bad output directory before any work is done."""
    if resume:
        if not (out / "config.json").exists():
            raise AmcError(f"nothing to resume in {out} (no config.json); start a new search without --resume")
        return
    if out.exists() and not out.is_dir():
        raise AmcError(f"output path {out} is a file; choose a directory for --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise AmcError(f"output directory {out} already exists; pass --resume to continue it, "
                       "--overwrite to replace it, or choose another --out")


def _create_run_dir(out: Path, resume: bool) -> None:
    """Create (or empty, for --overwrite) the run directory once everything is set up."""
    if resume:
        return
    try:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise AmcError(f"cannot write to output directory {out} ({e.strerror}); choose a writable --out") from None


def _load_model(config: SearchConfig, dataset: Dataset) -> tuple[nn.Module, str | None]:
    """The model to prune and the checkpoint it was loaded from (given, bundled, or None)."""
    weights = config.weights if config.weights is not None else models.bundled_weights(config.model)
    model = models.create(config.model, num_classes=dataset.num_classes)
    expected = models.model_info(model).input_shape
    if tuple(expected) != tuple(dataset.input_shape):
        raise AmcError(f"model {config.model} expects inputs {expected} but dataset {config.data} has "
                       f"{tuple(dataset.input_shape)}; pick a matching --model or --data")
    if weights is None:
        warnings.warn(f"no --weights given for {config.model}: searching a randomly initialised model "
                      "(fine for checking structure, meaningless for accuracy)", stacklevel=4)
    else:
        models.load_weights(model, weights)
    return model.eval(), None if weights is None else str(weights)


def environment_versions() -> dict:
    import torch_pruning

    import amc
    return {"amc": amc.__version__, "torch": torch.__version__, "torch_pruning": torch_pruning.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}


def search(model: nn.Module | str | None = None, data: Dataset | str | None = None, *, out: str | Path,
           config: SearchConfig | None = None, resume: bool = False, overwrite: bool = False,
           progress: Callable[[dict], None] | None = None, **options) -> SearchResult:
    """Find a per-layer preserve-ratio policy under the budget and export the pruned model into `out`.

    `model` is a zoo name or a model built by `amc.models.create` (it carries `amc_info`); `data` is a
    dataset name or a loaded `amc.data.Dataset`. Settings come from `config` and/or keyword `options`
    (any `SearchConfig` field: `target="macs", ratio=0.5, episodes=300, agent="ddpg", seed=0, ...`).
    With `resume=True` the run's own config.json is used. `progress` is called after every episode with
    that episode's log record. Example::

        result = amc.search("resnet56", "cifar10", weights="r56.pt", data_dir="cifar10.npz", ratio=0.5,
                            out="runs/r56")
    """
    threads = torch.get_num_threads()
    try:
        return _search(model, data, out=Path(out), config=config, resume=resume, overwrite=overwrite,
                       progress=progress, **options)
    finally:
        torch.set_num_threads(threads)  # the thread count is process-wide; leave it as found


def saved_config(run_dir: str | Path) -> SearchConfig:
    """The settings a run was started with (its config.json); resuming it uses these, not new ones."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise AmcError(f"nothing to resume in {run_dir} (no config.json); start a new search without --resume")
    try:
        return SearchConfig.from_dict(json.loads(path.read_text())["search"])
    except (ValueError, KeyError, TypeError) as e:
        raise AmcError(f"{path} is corrupt ({type(e).__name__}); the run cannot be resumed: start it again "
                       "with --overwrite") from None


def _resolve_config(model, data, config: SearchConfig | None, options: dict) -> SearchConfig:
    """One validated SearchConfig from a model/data given by name or object, `config` and keyword options."""
    if isinstance(model, str):
        options["model"] = model
    elif isinstance(model, nn.Module):
        options["model"] = models.model_info(model).name
    if isinstance(data, str):
        options["data"] = data
    elif isinstance(data, Dataset):
        options["data"] = data.name
    try:
        return SearchConfig(**{**asdict(config or SearchConfig()), **options})
    except TypeError as e:
        raise AmcError(f"unknown search setting: {e}") from None


@dataclass
class _Setup:
    """What a search, or applying a saved policy, builds before pruning anything."""

    dataset: Dataset
    model: nn.Module
    info: models.ModelInfo
    graph: LayerGraph | WeightGraph
    candidate: Candidate
    stats: dict | None
    recalibration: list[torch.Tensor]
    weights: str | None             # the checkpoint the model was loaded from (given or bundled)


def _prepare(config: SearchConfig, net: nn.Module | None, dataset: Dataset | None) -> _Setup:
    """Load data and model, trace the prunable layers, and build the candidate pruner and scorer."""
    if dataset is None:
        dataset = load_dataset(config.data, config.data_dir, seed=0, download=config.download)
    if len(dataset.heldout) == 0:
        raise AmcError(f"held-out split of {config.data} is empty (candidates are scored on it); use a dataset "
                       "with at least two training images per class")
    model, weights = (net, config.weights) if net is not None else _load_model(config, dataset)
    info = models.model_info(model)
    model.eval()
    fine_grained = config.method == "fine-grained"
    graph = WeightGraph(model, info.input_shape) if fine_grained else \
        LayerGraph(model, info.input_shape, group_coupled=config.group_coupled)
    if config.threads is None and graph.total_macs < 10_000_000:
        # tiny convolutions gain nothing from intra-op threads and lose a lot when another job shares the
        # cores (digits_cnn: 50 ms per episode on one thread against ~700 ms on two, measured here)
        torch.set_num_threads(1)

    calibration_idx = dataset.calibration_indices(min(config.calibration_images, len(dataset.train)), config.seed)
    calibration = next(batches(dataset.train.subset(calibration_idx), len(calibration_idx),
                               mean=info.mean, std=info.std))[0]
    stats = None
    if fine_grained:
        pruner = MagnitudePruner(model, graph)
    else:
        needs_stats = config.reconstruct or config.selection == "greedy"
        stats = collect_stats(model, graph, calibration, points_per_image=config.points_per_image,
                              seed=config.seed) if needs_stats else None
        pruner = ChannelPruner(model, graph, stats, selection=config.selection, reconstruct=config.reconstruct)
    evaluator = Evaluator(dataset.heldout, info.mean, info.std, batch_size=config.eval_batch_size,
                          limit=config.heldout_limit, precision=config.precision)
    recalibration = recalibration_batches(calibration, config.bn_recalibration)
    candidate = Candidate(pruner, evaluator, recalibration, racing=config.races)
    return _Setup(dataset, model, info, graph, candidate, stats, recalibration, weights)


def _run_record(config: SearchConfig, setup: _Setup, baseline_top1: float) -> dict:
    """config.json: the settings plus what reproducing the run needs (versions, data and weights hashes)."""
    graph = setup.graph
    return {"search": asdict(config), "versions": environment_versions(), "model": asdict(setup.info),
            "data_fingerprint": {s: fingerprint(getattr(setup.dataset, s)) for s in ("train", "heldout", "test")},
            "weights_loaded": setup.weights,
            "weights_sha256": _sha256(setup.weights) if setup.weights else None,
            "decisions": graph.describe(), "skipped_layers": graph.skipped,
            "baseline": {"heldout_top1": baseline_top1, "macs": graph.total_macs, "params": graph.total_params}}


def _check_same_inputs(out: Path, setup: _Setup) -> None:
    """On resume: refuse data or weights that differ from what the run started with."""
    record = json.loads((out / "config.json").read_text())
    for split, old in (record.get("data_fingerprint") or {}).items():
        new = fingerprint(getattr(setup.dataset, split))
        if new != old:
            raise AmcError(f"the {split} data differs from the data {out} was started on (fingerprint {new}, "
                           f"recorded {old}); resume with the same data, or start a new search")
    old = record.get("weights_sha256")
    if old and setup.weights and _sha256(setup.weights) != old:
        raise AmcError(f"weights {setup.weights} changed since {out} was started (sha256 differs); resume with "
                       "the original checkpoint, or start a new search")


def recalibration_batches(images: torch.Tensor, batches: int) -> list[torch.Tensor]:
    """The first `batches` hundreds of the calibration images: what BN recalibration re-estimates on."""
    return [images[i:i + 100] for i in range(0, 100 * batches, 100) if i < len(images)]


RAMP_SPREAD = 0.5  # preserve ratio difference between the first and last decision of a handcrafted ramp
ANCHORS = {"uniform": 0.0, "shallower": -RAMP_SPREAD, "deeper": RAMP_SPREAD}  # ramp spread of each named prior


def _anchor_policy(env: CompressionEnv, anchor) -> float | list[float] | None:
    """DDPG's prior policy from `--agent-option anchor=...`: a named fixed policy that meets the budget, a
    ratio, one ratio per decision, or none (the paper's uniform-random warm-up)."""
    if anchor in ("none", None):
        return None
    if isinstance(anchor, str):
        if anchor not in ANCHORS:
            raise AmcError(f"unknown anchor {anchor!r}; use one of {', '.join([*ANCHORS, 'none'])}, a ratio, "
                           "or a list with one ratio per decision")
        return env.uniform_ratio() if anchor == "uniform" else env.ramp_ratios(ANCHORS[anchor])
    if isinstance(anchor, list) and len(anchor) != len(env.channels):
        raise AmcError(f"anchor lists {len(anchor)} ratios but the model has {len(env.channels)} decisions; "
                       "give one per decision (a search's policy.json lists them) or a single ratio")
    return anchor


def _search(model, data, *, out: Path, config, resume, overwrite, progress, **options) -> SearchResult:
    out = Path(out)
    net = model if isinstance(model, nn.Module) else None
    dataset = data if isinstance(data, Dataset) else None
    if resume and (out / "config.json").exists():
        config = saved_config(out)  # a resumed run keeps the settings it started with
    else:
        config = _resolve_config(model, data, config, options)
    _check_run_dir(out, resume, overwrite)
    _seed_and_threads(config)

    setup = _prepare(config, net, dataset)
    dataset, model, info, graph, candidate = setup.dataset, setup.model, setup.info, setup.graph, setup.candidate
    env_config = EnvConfig(config.target, config.ratio, config.lbound, config.channel_round, config.reward)
    latency_path = out / LATENCY_FILE
    saved_calibration = json.loads(latency_path.read_text()) if resume and latency_path.exists() else None
    latency = calibrated_latency_model(model, graph, env_config, config, saved_calibration) \
        if config.target == "latency" else None
    env = CompressionEnv(graph, candidate, env_config, cost_model=latency.predict if latency else None)
    guard = LatencyGuard(latency, env, model, candidate.build, config, latency_path) if latency else None
    baseline_top1 = Evaluator(dataset.heldout, info.mean, info.std).top1(copy.deepcopy(model))

    obs_dim = env.observation_space.shape[0]
    if config.agent == "uniform":
        agent = make_agent("uniform", obs_dim, config.lbound, config.seed, ratio=env.uniform_ratio())
        episodes = 1  # deterministic: one episode is the whole search
    else:
        agent_kwargs = {"warmup_episodes": config.warmup_episodes} if config.agent == "ddpg" else {}
        options = dict(config.agent_options)
        if config.agent == "ddpg":
            # Default prior: the uniform ratio that meets this budget (beat the paper's warm-up by 3 points
            # on ResNet-56, benchmarks/RESULTS.md); anchor=none gives the paper's uniform-random warm-up.
            # "shallower" / "deeper": the paper's handcrafted ramps (prune shallower / deeper layers more).
            # Without a budget (accuracy-guaranteed rewards) no policy "meets" one: the paper's warm-up.
            default = "uniform" if env_config.constrained else "none"
            options["anchor"] = _anchor_policy(env, options.get("anchor", default))
        try:
            agent = make_agent(config.agent, obs_dim, config.lbound, config.seed, **{**agent_kwargs, **options})
        except (TypeError, ValueError) as e:
            raise AmcError(f"bad --agent-option for {config.agent}: {e}") from None
        episodes = config.episodes
    if resume:
        _check_same_inputs(out, setup)

    if config.tensorboard:
        TensorBoardLog.check_available()
    _create_run_dir(out, resume)  # only now: a mistake found above leaves nothing behind
    try:
        if latency is not None and saved_calibration is None:
            write_json_atomic(latency_path, latency.calibration())
        return _episodes_and_export(out, config, resume, setup, env, agent, episodes, baseline_top1, guard,
                                    progress)
    except SaveError as e:  # disk full or permissions, with the previous state intact
        if (out / STATE_FILE).exists():
            raise SaveError(f"cannot save {e.path} ({e.reason}); the state after the last finished episode is "
                            f"intact: free disk space, then continue with `amc search --resume --out {out}`",
                            e.path, e.reason) from None
        if not resume:
            shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping yet: leave nothing behind
        raise SaveError(f"cannot save {e.path} ({e.reason}); {out} holds no finished episode and was "
                        f"{'left as it was' if resume else 'removed'}: free disk space or choose another --out, "
                        "then run again", e.path, e.reason) from None


def _episodes_and_export(out: Path, config: SearchConfig, resume: bool, setup: _Setup, env: CompressionEnv, agent,
                         episodes: int, baseline_top1: float, guard: LatencyGuard | None, progress) -> SearchResult:
    """The episode loop (from where a resumed run stopped), with per-episode state saves, then the export."""
    graph = setup.graph
    log_path = out / "episodes.jsonl"
    log: list[dict] = []
    best: dict | None = None
    start_episode = 0
    if resume and (out / STATE_FILE).exists():
        state = _load_state(out)
        agent.load_state_dict(state["agent"])
        _set_global_rng(state.get("rng"))
        start_episode = int(state["episode"])
        best = json.loads(state["best"]) if state["best"] else None
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        if len(lines) < start_episode:
            raise AmcError(f"{log_path} holds {len(lines)} episodes but the saved state is after episode "
                           f"{start_episode}; the run is damaged: start it again with --overwrite")
        log = [json.loads(line) for line in lines[:start_episode]]  # a line past the state is redone
        full = setup.candidate.evaluator.size  # racing goes on against the best fully scored candidate
        setup.candidate.best = max((r["accuracy"] for r in log if r.get("scored_images", full) == full),
                                   default=float("-inf"))
        write_bytes_atomic(log_path, "".join(json.dumps(r) + "\n" for r in log).encode())
    elif resume:  # stopped before its first episode finished: start it again
        log_path.unlink(missing_ok=True)
    else:
        write_json_atomic(out / "config.json", {
            **_run_record(config, setup, baseline_top1),
            "budget": {"target": config.target, "ratio": config.ratio, "value": env.budget},
        })

    started = time.perf_counter()
    state = {"best": best}
    board = TensorBoardLog(out, start_episode) if config.tensorboard else None

    def finished(episode: int, record: dict, transitions: list[Transition], seconds: float, timing: dict) -> None:
        """Learn from one scored episode, log it and save the resumable state (episodes arrive in order)."""
        stats_out = agent.end_episode(transitions, record["reward"])
        record.update(episode=episode, seconds=round(seconds, 4), timing={k: round(v, 4) for k, v in timing.items()},
                      agent={k: float(v) for k, v in (stats_out or {}).items()})
        # a best that a refitted latency budget left over the budget gives way to any episode that meets it
        if state["best"] is None or state["best"].get("over_budget") or record["reward"] > state["best"]["reward"]:
            state["best"] = record
            _policy_from(record, graph, config.model).save(out / "policy.json")
        if guard is not None and guard.due(episode, state["best"]) and guard.check(state["best"])["refit"]:
            # the budget moved with the refitted latency model: the best must meet it as it is now
            chosen = guard.best_within([*log, record])
            if chosen is None:
                state["best"]["over_budget"] = True  # kept (and saved) only until an episode meets the budget
            elif chosen is not state["best"]:
                state["best"] = chosen
                _policy_from(chosen, graph, config.model).save(out / "policy.json")
        record["best_reward"] = state["best"]["reward"]
        log.append(record)
        _append_line(log_path, json.dumps(record))
        _save_state(out, agent, episode + 1, state["best"])
        if board is not None:
            board.episode(record)
        if progress:
            progress({**record, "episodes": episodes, "elapsed": time.perf_counter() - started,
                      "done": episode + 1 - start_episode, "remaining": episodes - episode - 1})

    if config.workers > 1 and episodes - start_episode > 1:
        _parallel_episodes(env, agent, config, setup, range(start_episode, episodes), finished)
    else:
        candidate = setup.candidate
        for episode in range(start_episode, episodes):
            t0 = time.perf_counter()
            record, transitions = _run_episode(env, agent, episode)
            seconds = time.perf_counter() - t0
            timing = {**candidate.timing, "agent_and_env": seconds - sum(candidate.timing.values())}
            if config.races:
                record["scored_images"] = candidate.scored_images
            finished(episode, record, transitions, seconds, timing)
    best = state["best"]

    result = _finish(out, config, graph, setup.candidate, best, log, setup.dataset, setup.info, baseline_top1,
                     guard)
    if board is not None:
        board.close(result.summary)
    return result


def _parallel_episodes(env: CompressionEnv, agent, config: SearchConfig, setup: _Setup, episodes: range,
                       finished) -> None:
    """Propose episodes while up to `config.workers` are scored on Ray actors; learn from them in order.

    The learner runs at most `workers - 1` episodes ahead of what it has learned from (a short policy lag);
    warm-up episodes do not depend on learning, so they run fully in parallel.
    """
    from collections import deque

    from amc.distributed import RayScorer, worker_payload

    scorer = RayScorer(config.workers, worker_payload(setup.model, config, setup.stats, setup.dataset.heldout,
                                                      setup.recalibration), config.ray_address)
    candidate = setup.candidate  # keeps the best fully scored accuracy that actors race against
    full = candidate.evaluator.size
    scored_by_workers = env.evaluate
    env.evaluate = lambda keep: float("nan")  # the episode is scored remotely
    in_flight: deque = deque()
    upcoming = iter(episodes)
    try:
        while True:
            while len(in_flight) < config.workers:
                episode = next(upcoming, None)
                if episode is None:
                    break
                record, transitions = _run_episode(env, agent, episode)
                scorer.submit(record["keep"], candidate.best)
                in_flight.append((episode, record, transitions, time.perf_counter()))
            if not in_flight:
                return
            episode, record, transitions, t0 = in_flight.popleft()
            accuracy, timing, images = scorer.next()
            if config.races:
                record["scored_images"] = images
                if images == full:
                    candidate.best = max(candidate.best, accuracy)
            record["accuracy"] = accuracy
            record["reward"] = env.reward(accuracy, record["macs"], record["params"])
            finished(episode, record, transitions, time.perf_counter() - t0, timing)
    finally:
        env.evaluate = scored_by_workers
        scorer.close()


def _run_episode(env: CompressionEnv, agent, episode: int) -> tuple[dict, list[Transition]]:
    obs, _ = env.reset()
    agent.begin_episode(episode)
    transitions: list[Transition] = []
    while True:
        proposed = agent.act(obs)
        next_obs, reward, terminated, _, info = env.step(np.array([proposed], dtype=np.float32))
        transitions.append(Transition(obs, float(info["action"]), next_obs if not terminated else obs, terminated))
        obs = next_obs
        if terminated:
            break
    record = {"reward": float(reward), "accuracy": info["accuracy"], "macs": info["macs"],
              "params": info["params"], "macs_ratio": info["macs_ratio"], "params_ratio": info["params_ratio"],
              "keep": info["keep_counts"], "ratios": info["ratios"]}
    return record, transitions


def _policy_from(record: dict, graph: LayerGraph, model_name: str) -> Policy:
    return Policy(model_name, [d.consumer for d in graph.decisions], [d.channels for d in graph.decisions],
                  list(record["keep"]), {k: record[k] for k in ("accuracy", "reward", "macs", "params",
                                                                  "macs_ratio", "params_ratio", "episode")
                                         if k in record})


def _save_state(out: Path, agent, episode: int, best: dict | None) -> None:
    buffer = io.BytesIO()
    torch.save({"episode": episode, "agent": agent.state_dict(), "best": json.dumps(best) if best else "",
                "rng": _global_rng()}, buffer)
    write_bytes_atomic(out / STATE_FILE, buffer.getvalue())


def _load_state(out: Path) -> dict:
    try:
        return torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the cause, the file cannot be resumed from
        raise AmcError(f"cannot read {out / STATE_FILE} ({type(e).__name__}); the run cannot be resumed: "
                       "start it again with --overwrite") from None


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


def _append_line(path: Path, line: str) -> None:
    """Append one log line; a full disk is a SaveError (a partial last line is dropped on resume)."""
    try:
        with path.open("a") as f:
            f.write(line + "\n")
    except OSError as e:
        if e.errno not in SAVE_ERRNOS:
            raise
        raise SaveError(f"cannot save {path} ({e.strerror})", str(path), e.strerror) from None


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _export(out: Path, graph: LayerGraph | WeightGraph, candidate: Candidate, policy: Policy, dataset: Dataset,
            info) -> tuple[nn.Module, dict]:
    """Build the pruned network of `policy`, write model.pt/model.json (and model_sparse.pt for fine-grained)
    and measure it: fp32 top-1 on the full held-out and test splits, counted MACs and parameters."""
    pruned = candidate.build(policy.keep)
    pruned.amc_info = info
    exported_macs = count_macs(pruned, info.input_shape)  # counted on the real network, not predicted
    save_pruned(pruned, out, extra={"policy": policy.to_dict()})
    # the reported figures are fp32 on the full splits, whatever precision or subset scored the search
    heldout = Evaluator(dataset.heldout, info.mean, info.std).top1(pruned)
    test = Evaluator(dataset.test, info.mean, info.std).accuracy(pruned, (1, 5))
    figures = {"heldout_top1": heldout, "test_top1": test[1], "test_top5": test.get(5),
               "macs": exported_macs, "macs_ratio": exported_macs / graph.total_macs,
               "params": count_params(pruned), "params_ratio": count_params(pruned) / graph.total_params}
    if isinstance(graph, WeightGraph):  # zeros are still stored densely: count and store them sparsely
        dense_bytes = (out / "model.pt").stat().st_size
        sparse_bytes = save_sparse(pruned, out / "model_sparse.pt", [d.consumer for d in graph.decisions])
        modules = dict(pruned.named_modules())
        zeros = sum(int((modules[d.consumer].weight == 0).sum()) for d in graph.decisions)  # incl. earlier stages'
        nonzero = graph.total_params - zeros
        figures.update(params=nonzero, params_ratio=nonzero / graph.total_params,
                       sparse_macs=graph.macs(policy.keep), dense_bytes=dense_bytes, sparse_bytes=sparse_bytes,
                       method="fine-grained")
    return pruned, figures


def _finish(out: Path, config: SearchConfig, graph: LayerGraph, candidate: Candidate, best: dict, log: list[dict],
            dataset: Dataset, info, baseline_top1: float, guard: LatencyGuard | None = None) -> SearchResult:
    if guard is not None:  # the budget was a prediction: check it on the real networks, side by side
        best, check = guard.final(best, log)
    policy = _policy_from(best, graph, config.model)
    pruned, figures = _export(out, graph, candidate, policy, dataset, info)
    heldout = figures.pop("heldout_top1")
    summary = {
        "model": config.model, "agent": config.agent, "seed": config.seed, "episodes": len(log),
        "best_episode": best.get("episode"), "best_val_top1": heldout, "best_search_score": best["accuracy"],
        "best_reward": best["reward"], "racing": config.races, **figures,
        "baseline": {"heldout_top1": baseline_top1, "macs": graph.total_macs, "params": graph.total_params,
                     # the original on the test split, for before/after reports (one more forward pass)
                     "test_top1": Evaluator(dataset.test, info.mean, info.std).top1(candidate.pruner.model)},
        "budget_ratio": config.ratio if config.reward == "acc" else None, "target": config.target,
        "search_seconds": round(sum(r["seconds"] for r in log), 2),
    }
    if guard is not None:
        latency = guard.latency
        summary["latency"] = {
            **latency.info, "target_ratio": config.ratio, "original_ms": check["original_ms"],
            "pruned_ms": check["pruned_ms"], "measured_ratio": check["measured_ratio"],
            "predicted_ms": latency.predict(policy.keep), "met": check["met"],
            "predicted_ratio": latency.predict(policy.keep) / latency.predict(graph.full_keep())}
        if not check["met"]:
            warnings.warn(f"the exported policy measures {check['measured_ratio']:.3f} of the original latency, over "
                          f"the budget {config.ratio:g}: no searched policy met the budget as measured at the end; "
                          "continue the search with more episodes (--resume) or lower --ratio", stacklevel=2)
    write_json_atomic(out / "summary.json", summary)
    return SearchResult(out, policy, heldout, summary, log)


def apply_policy(policy: Policy | str | Path, model: nn.Module | str | None = None, data: Dataset | str | None = None,
                 *, out: str | Path, config: SearchConfig | None = None, overwrite: bool = False,
                 **options) -> dict:
    """Prune a model by a saved policy (a run's policy.json) and export it into `out` as a search exports its
    best policy: model.pt, model.json, policy.json, config.json and summary.json. Returns the summary.

    The pruning settings (`selection`, `reconstruct`, `calibration_images`, `seed`, `bn_recalibration`,
    `group_coupled`, `method`) must be the search's to rebuild the very same network. `model` defaults to
    the policy's model. A policy made for another model, or for other prunable layers, is refused.
    """
    threads = torch.get_num_threads()
    try:
        return _apply_policy(policy, model, data, out=Path(out), config=config, overwrite=overwrite, **options)
    finally:
        torch.set_num_threads(threads)


def _seed_and_threads(config: SearchConfig) -> None:
    """What a run's reproducibility rests on, set the same way for a search and for applying a policy."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)


def _apply_policy(policy, model, data, *, out: Path, config, overwrite, **options) -> dict:
    source = None if isinstance(policy, Policy) else str(policy)
    policy = policy if isinstance(policy, Policy) else Policy.load(policy)
    if model is None and config is None and "model" not in options:
        model = policy.model
    config = _resolve_config(model, data, config, options)
    _check_run_dir(out, False, overwrite)
    _seed_and_threads(config)
    setup = _prepare(config, model if isinstance(model, nn.Module) else None,
                     data if isinstance(data, Dataset) else None)
    policy.check_matches(setup.graph, config.model)
    baseline_top1 = Evaluator(setup.dataset.heldout, setup.info.mean, setup.info.std).top1(copy.deepcopy(setup.model))

    _create_run_dir(out, False)  # only now: a mistake found above leaves nothing behind
    try:
        write_json_atomic(out / "config.json", {**_run_record(config, setup, baseline_top1), "policy_source": source})
        policy.save(out / "policy.json")
        _, figures = _export(out, setup.graph, setup.candidate, policy, setup.dataset, setup.info)
        graph = setup.graph
        summary = {"model": config.model, "policy_source": source, **figures,
                   "baseline": {"heldout_top1": baseline_top1, "macs": graph.total_macs, "params": graph.total_params}}
        write_json_atomic(out / "summary.json", summary)
    except SaveError as e:
        shutil.rmtree(out, ignore_errors=True)  # a pruned model without its summary is half an export
        raise SaveError(f"cannot save {e.path} ({e.reason}); removed the unfinished {out}: free disk space or "
                        "choose another --out, then run again", e.path, e.reason) from None
    return summary


def eta_seconds(record: dict) -> float:
    done = max(1, record["done"])
    return record["elapsed"] / done * record["remaining"] if record["remaining"] else 0.0


__all__ = ["SearchConfig", "SearchResult", "apply_policy", "eta_seconds", "saved_config", "search"]
