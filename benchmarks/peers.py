"""Our DDPG search against other ways to reach the same MACs budget, all scored and accounted alike.

    python benchmarks/peers.py --model resnet56 --weights ../shared/data/pretrained/cifar10jpeg/resnet56.pt \
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --ratio 0.5 --candidates 300 --seeds 0 1 2 \
        --precision bf16 --out runs/bench/peers-r56

Methods (`--methods`, default all):

- `uniform`, `deeper-more`, `shallower-more`: one preserve ratio for every decision, or a linear ramp over
  the decision index (first decision `level + spread/2`, last `level - spread/2`, or the reverse), its level
  found by bisection so that the rounded counts meet the budget (`CompressionEnv.ramp_ratios`), then
  stepped through the environment (whose clipping may raise the last counts to fill the budget, as for the
  `uniform` agent), pruned by our ChannelPruner (magnitude + least squares). `uniform+bn`,
  `deeper-more+bn`, `shallower-more+bn`: the same policies scored and exported with BN recalibration (as
  `ddpg+bn`), so that the searchers with recalibration face baselines that have it too.
- `tp-magnitude`, `tp-taylor`: torch-pruning's global pruning (one importance ranking across all layers,
  MetaPruner with `global_pruning=True`), its pruning ratio bisected until the counted MACs meet the
  budget, each trial on a fresh copy; the model is torch-pruning's own surgery, no reconstruction.
  Restricted to our free decisions (every conv/linear that is not the producer of one is an ignored
  layer): torch-pruning 1.6 treats the option-A zero-padded shortcut as elementwise and breaks the model
  when residual-coupled channels are pruned. No per-layer lower bound (`--lbound` is ours; peer.json
  records the smallest ratio torch-pruning chose). Taylor importance takes gradients of the cross-entropy
  on `--taylor-batches` training batches (eval mode, BN statistics untouched).
  `...+lsq`: the very channels torch-pruning kept, with our least-squares reconstruction of each consumer.
  `...-counts`: only torch-pruning's per-layer counts, through our pruner (magnitude selection + least
  squares), as any candidate of our search.
- `random`, `tpe`, `ddpg`, `ddpg+bn`, `tpe+bn`: searches with `--candidates` scored candidates per seed.
  `random` and `ddpg` are `amc.search` (agent "random" / "ddpg"); `ddpg+bn` adds BN recalibration on
  `--bn-batches` training batches before each score; `tpe` is Optuna's TPE sampler proposing one ratio per
  decision in [lbound, 1], stepped through the same environment (the executed, clipped policy is what is
  scored and reported); `tpe+bn` is `amc.search --agent tpe` (the same sampler behind amc's agent
  interface) with BN recalibration, to tell the agent's share of `ddpg+bn`'s lead from the scorer's;
  `ddpg+bn-shallower` is `ddpg+bn` anchored at the shallower-more ramp instead of the uniform policy
  (`--agent-option anchor=shallower`: its first episode is that ramp, its warm-up samples around it);
  `ddpg+bn-knapsack` the same anchored at the knapsack allocation; `ddpg+bn-logit` the default anchor with
  exploration noise symmetric in the logit of the ratio (`--agent-option noise_space=logit`); `...-budget`
  perturbs whole warm-up policies and fits each to the budget (`--agent-option warmup_noise=budget`).
- `knapsack`, `knapsack+bn`: `amc search --agent knapsack`'s allocation (each decision pruned alone to a few
  ratios and scored on 1,000 held-out images, then a multiple-choice knapsack under the budget), stepped
  through the environment and exported as the fixed policies are.
  With `--racing` every searcher drops candidates that cannot plausibly beat its own best after a prefix
  of the held-out split (`amc search --racing`); TPE is then told the prefix accuracy.
- `nni-amc`: NNI's AMC pruner; it is not run (see NNI_REASON), its row carries the reason.

Every model is accounted the same way: held-out top-1 on the 5,000 held-out training images (the seed-0
split of `amc.data.load_dataset`) and test top-1, both fp32 without fine-tuning; MACs counted on the
exported network (`amc.count_macs`); parameters; batch-1 latency on one thread, interleaved with the
original. "search" is the sum of the per-candidate times (setup such as calibration statistics excluded).
Each (method, seed) is a directory under --out holding the exported model (`amc.load_pruned` reads it,
`amc finetune` fine-tunes it) and `peer.json`; finished ones are skipped and unfinished searches resumed, so
the script can be killed and restarted. Writes table.md and search_curves.png into --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import amc
from amc.agents.knapsack import knapsack_ratios
from amc.atomic import write_json_atomic
from amc.config import SearchConfig
from amc.cost import count_macs, count_params
from amc.data import batches
from amc.env import CompressionEnv
from amc.evaluate import Evaluator
from amc.export import save_pruned
from amc.latency import runner, time_calls
from amc.pipeline import prepare
from amc.pruning.lsq import least_squares
from amc.pruning.surgery import prune_copy
from amc.runs import RunDir
from amc.scoring import Scorer, build_scorer, recalibration_batches
from amc.search import build_env

FIXED = ("uniform", "deeper-more", "shallower-more", "knapsack")
FIXED += tuple(f"{method}+bn" for method in FIXED)
TORCH_PRUNING = ("tp-magnitude", "tp-magnitude+lsq", "tp-magnitude-counts",
                 "tp-taylor", "tp-taylor+lsq", "tp-taylor-counts")
SEARCHERS = ("random", "tpe", "ddpg", "ddpg+bn", "tpe+bn", "ddpg+bn-shallower", "ddpg+bn-knapsack", "ddpg+bn-logit",
             "ddpg+bn-budget", "ddpg+bn-shallower-budget",
             # the default with the finalist stage (top 4, 100 steps a round), and the default searching twice as
             # many candidates: the two sides of issue 17's comparison at equal CPU time
             "ddpg+bn-shallower-budget-fin4", "ddpg+bn-shallower-budget-x2",
             # learned-phase actions as multiples of the fair share of the remaining budget (actions=share)
             "ddpg+bn-uniform-budget-share", "ddpg+bn-shallower-budget-share")
METHODS = FIXED + TORCH_PRUNING + SEARCHERS + ("nni-amc",)

# What happened when NNI's AMC pruner was tried against torch 2.14.1 (2026-11-24, in a separate venv).
NNI_REASON = (
    "not run: nni 3.0 (latest) has no AMC pruner (ModuleNotFoundError: No module named "
    "'nni.algorithms.compression'); nni 2.10.1's AMCPruner imports on torch 2.14.1 once tensorboard is "
    "installed but needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (it torch.load()s pickled models), then its "
    "ModelSpeedup fails on the option-A shortcut (RuntimeError: Has not supported replacing module with "
    "type: PadShortcut); with that module patched to no_replace it runs, but its 'total_sparsity' FLOPs "
    "target of 0.5 landed at 0.33 of ResNet-20's counted MACs (another accounting), so no comparable number")
NNI_SHORT = "not run: no AMC pruner in nni 3.0; nni 2.10.1 breaks on the padded shortcut (see note)"


# ---- shared setup ------------------------------------------------------------------------------------
@dataclass
class Scoring:
    """A scorer as `amc search` builds it (`amc.scoring.build_scorer`) and the environment that steps through it."""

    env: CompressionEnv
    scorer: Scorer  # .calibration: the calibration images; the first `--bn-batches` hundreds recalibrate BN


class Bench:
    """The model, data, graph and report evaluators shared by every method (`amc.pipeline.prepare`)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        # the scorers score without BN recalibration (the +bn methods add it); seed 0's is built here
        self.setup = prepare(self.search_config("ddpg", 0, bn_recalibration=0))
        self.dataset, self.model, self.info, self.graph = (self.setup.dataset, self.setup.model, self.setup.info,
                                                           self.setup.graph)
        self.original_macs = count_macs(self.model, self.info.input_shape)
        self.original_params = count_params(self.model)
        self.budget_macs = args.ratio * self.original_macs
        self.heldout = Evaluator(self.dataset.heldout, self.info.mean, self.info.std)  # fp32, all 5,000
        self.test = Evaluator(self.dataset.test, self.info.mean, self.info.std)
        self._scorers: dict[int, Scorer] = {0: self.setup.scorer}  # by calibration seed

    def scoring(self, seed: int, *, recalibrate: bool = False, racing: bool | None = None) -> Scoring:
        """The scorer of calibration seed `seed` (racing as `--racing`, no BN recalibration) and its environment.
        With `recalibrate`, BN is recalibrated on `--bn-batches` batches of 100 calibration images (as
        amc.search does); `racing` overrides `--racing`. Either gives a variant with a cache of its own, so that
        no score cached without recalibration is reused."""
        config = self.search_config("ddpg", seed, bn_recalibration=0)
        if seed not in self._scorers:
            self._scorers[seed] = build_scorer(self.model, self.graph, self.dataset, config)
        scorer = self._scorers[seed]
        if recalibrate or racing is not None:
            recalibration = recalibration_batches(scorer.calibration, self.args.bn_batches) if recalibrate else None
            scorer = scorer.variant(recalibration=recalibration, racing=racing)
        env, _ = build_env(replace(self.setup, scorer=scorer), config)
        return Scoring(env, scorer)

    def search_config(self, agent: str, seed: int, **extra) -> SearchConfig:
        a = self.args
        return SearchConfig(model=a.model, weights=a.weights, data=a.data, data_dir=a.data_dir, ratio=a.ratio,
                            lbound=a.lbound, channel_round=a.channel_round, agent=agent,
                            episodes=extra.pop("episodes", a.candidates), seed=seed,
                            calibration_images=a.calibration_images, heldout_limit=a.heldout_limit,
                            precision=a.precision, threads=a.threads, racing=a.racing, **extra)

    def export(self, run_dir: Path, pruned: nn.Module, method: str, extra: dict) -> dict:
        """Account `pruned` like every other method, save it as a run directory and return its record."""
        pruned.amc_info = self.info
        macs = count_macs(pruned, self.info.input_shape)
        params = count_params(pruned)
        if macs > self.budget_macs + 1e-6:
            raise AssertionError(f"{method}: {macs} MACs exceed the budget {self.budget_macs:.0f}")
        run_dir.mkdir(parents=True, exist_ok=True)
        save_pruned(pruned, run_dir)
        # enough of a search run's config.json for amc.finetune (model, weights, data)
        config = {k: v for k, v in vars(self.args).items() if k in ("model", "weights", "data", "data_dir")}
        RunDir(run_dir).write_peer_config({**config, "method": "channel", "peer": method})
        return {"heldout_top1": self.heldout.top1(pruned), "test_top1": self.test.top1(pruned), "macs": macs,
                "macs_ratio": macs / self.original_macs, "params": params,
                "params_ratio": params / self.original_params, **extra}


# ---- fixed policies: uniform and the two ramps -------------------------------------------------------
def step_policy(env: CompressionEnv, ratios) -> dict:
    """Step the environment with one preserve ratio per decision; its final info (executed policy, score)."""
    env.reset()
    for r in ratios:
        _, _, terminated, _, info = env.step(np.array([r], dtype=np.float32))
    assert terminated
    return info


def run_fixed(bench: Bench, method: str, run_dir: Path) -> dict:
    base = method.removesuffix("+bn")
    scoring = bench.scoring(0, recalibrate=method.endswith("+bn"), racing=False)  # one policy, scored in full
    t0 = time.perf_counter()
    if base == "knapsack":  # amc's allocator: per-decision sensitivity, then a multiple-choice knapsack
        spread, ratios = None, knapsack_ratios(scoring.env)
    else:
        spread = {"uniform": 0.0, "deeper-more": bench.args.ramp_spread,
                  "shallower-more": -bench.args.ramp_spread}[base]
        ratios = scoring.env.ramp_ratios(spread)
    info = step_policy(scoring.env, ratios)
    pruned = scoring.scorer.build(info["keep_counts"])
    seconds = time.perf_counter() - t0
    return bench.export(run_dir, pruned, method, {
        "search_seconds": seconds, "search_score": info["accuracy"], "spread": spread,
        "keep": info["keep_counts"], "ratios": info["ratios"]})


# ---- torch-pruning global pruning ---------------------------------------------------------------------
def taylor_gradients(bench: Bench) -> dict[str, torch.Tensor]:
    """Summed cross-entropy gradients of every parameter over a few training batches (eval mode)."""
    net = copy.deepcopy(bench.model).eval()
    n = bench.args.taylor_batches * 64
    index = bench.dataset.calibration_indices(min(n, len(bench.dataset.train)), seed=0)
    for x, y in batches(bench.dataset.train.subset(index), 64, mean=bench.info.mean, std=bench.info.std):
        F.cross_entropy(net(x), y).backward()
    return {name: p.grad.detach().clone() for name, p in net.named_parameters() if p.grad is not None}


def tp_prune(bench: Bench, importance_name: str, ratio: float,
             grads: dict[str, torch.Tensor] | None) -> tuple[nn.Module, list[torch.Tensor]]:
    """torch-pruning's global pruning of a fresh copy at `ratio`; (pruned model, kept indices per decision)."""
    import torch_pruning as tp

    net = copy.deepcopy(bench.model).eval()
    if grads:
        for name, p in net.named_parameters():
            p.grad = grads[name].clone() if name in grads else None
    modules = dict(net.named_modules())
    names = {m: n for n, m in modules.items()}
    producers = {d.producer for d in bench.graph.decisions}
    # only our free decisions: torch-pruning 1.6 follows the residual stream through the zero-padded
    # shortcut as if it were elementwise and leaves a broken model, so every other layer is ignored
    ignored = [m for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in producers]
    importance = (tp.importance.TaylorImportance() if importance_name == "taylor"
                  else tp.importance.MagnitudeImportance(p=2))
    pruner = tp.pruner.MetaPruner(net, torch.zeros(2, *bench.info.input_shape), importance, global_pruning=True,
                                  pruning_ratio=ratio, ignored_layers=ignored)
    removed: dict[str, list[int]] = {}
    for group in pruner.step(interactive=True):
        root = names[group[0].dep.target.module]
        removed[root] = [int(i) for i in group[0].idxs]
        group.prune()
    net.zero_grad(set_to_none=True)
    kept = []
    for d in bench.graph.decisions:
        gone = set(removed.get(d.producer, []))
        kept.append(torch.tensor([c for c in range(d.channels) if c not in gone], dtype=torch.long))
    return net, kept


class BudgetUnreachable(Exception):
    """A method cannot produce a model within the budget; its rows carry this reason instead of figures."""


def run_torch_pruning(bench: Bench, importance_name: str, out: Path, iterations: int = 30) -> dict[str, dict]:
    """All three torch-pruning rows of one importance: raw, +lsq on its kept channels, its counts via ours."""
    t0 = time.perf_counter()
    grads = taylor_gradients(bench) if importance_name == "taylor" else None

    def macs(net: nn.Module) -> int:
        return count_macs(net, bench.info.input_shape)

    # Smallest ratio whose counted MACs meet the budget: scan up in steps of 0.1, then bisect. Not from
    # 1.0 down: near 1 every layer would lose all its channels, torch-pruning then skips them all and
    # prunes nothing, so MACs are not monotone in the ratio at the top.
    lo, hi, best = 0.0, None, None
    for ratio in np.arange(0.05, 0.99, 0.05):
        trial = tp_prune(bench, importance_name, float(ratio), grads)
        if macs(trial[0]) <= bench.budget_macs:
            hi, best = float(ratio), trial
            break
        lo = float(ratio)
    if best is None:
        raise BudgetUnreachable(f"not run: torch-pruning's global {importance_name} pruning, restricted to our free "
                                f"decisions, reaches no ratio up to 0.95 that meets {bench.args.ratio:g} of the MACs")
    for _ in range(iterations):
        mid = (lo + hi) / 2
        trial = tp_prune(bench, importance_name, mid, grads)
        if macs(trial[0]) <= bench.budget_macs:
            hi, best = mid, trial
        else:
            lo = mid
        if hi - lo < 1e-4:
            break
    seconds = time.perf_counter() - t0
    net, kept = best
    keep = [len(k) for k in kept]
    scoring = bench.scoring(0)
    graph = bench.graph
    # the exported network must be what our surgery gives for the same channels (no reconstruction)
    check = prune_copy(bench.model, graph, kept)
    x = torch.randn(4, *bench.info.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = float((net.eval()(x) - check.eval()(x)).abs().max())
    if gap > 1e-4 or macs(net) != graph.macs(keep):
        raise AssertionError(f"torch-pruning's model differs from the same channels pruned by us (max |diff| "
                             f"{gap}, MACs {macs(net)} vs {graph.macs(keep)})")
    common = {"tp_ratio": hi, "keep": keep, "ratios": [k / d.channels for k, d in zip(keep, graph.decisions)],
              "min_ratio": min(k / d.channels for k, d in zip(keep, graph.decisions))}
    name = f"tp-{importance_name}"
    rows = {}
    evaluator = scoring.scorer.evaluator
    rows[name] = bench.export(out / name / "seed0", net, name, {
        **common, "search_seconds": seconds, "search_score": evaluator.top1(net)})
    t1 = time.perf_counter()
    weights = {consumer: least_squares(scoring.scorer.stats[consumer], k, scoring.scorer.pruner.ridge)
               for d, k in zip(graph.decisions, kept) if len(k) < d.channels for consumer in d.consumers}
    lsq = prune_copy(bench.model, graph, kept, weights)
    rows[name + "+lsq"] = bench.export(out / (name + "+lsq") / "seed0", lsq, name + "+lsq", {
        **common, "search_seconds": seconds + time.perf_counter() - t1, "search_score": evaluator.top1(lsq)})
    t1 = time.perf_counter()
    counts = scoring.scorer.build(keep)
    rows[name + "-counts"] = bench.export(out / (name + "-counts") / "seed0", counts, name + "-counts", {
        **common, "search_seconds": seconds + time.perf_counter() - t1,
        "search_score": evaluator.top1(counts)})
    return rows


# ---- searchers ----------------------------------------------------------------------------------------
def curve(records: list[dict]) -> list[list[float]]:
    """[cumulative seconds, best score so far] after each candidate."""
    points, elapsed, best = [], 0.0, -math.inf
    for r in records:
        elapsed += r["seconds"]
        best = max(best, r["accuracy"])
        points.append([round(elapsed, 3), best])
    return points


def run_amc_search(bench: Bench, method: str, seed: int, run_dir: Path) -> dict:
    agent, _, variant = method.partition("-")  # ddpg+bn-shallower: DDPG anchored at the shallower-more ramp
    agent = agent.removesuffix("+bn")  # tpe+bn: amc's own TPE agent (`--agent tpe`), recalibrating
    # explicit either way: only the +bn methods recalibrate, whatever amc's default
    extra = {"bn_recalibration": bench.args.bn_batches if "+bn" in method else 0}
    options = {}
    for token in filter(None, variant.split("-")):  # e.g. shallower-budget: anchor and warm-up noise
        if token == "logit":  # exploration noise symmetric in logit space (issue 17)
            options["noise_space"] = "logit"
        elif token == "budget":  # warm-up policies perturbed whole and fitted to the budget (issue 17)
            options["warmup_noise"] = "budget"
        elif token == "share":  # actions relative to the fair share of the remaining budget (issue 17)
            options["actions"] = "share"
        elif token.startswith("fin"):  # the finalist stage over the top K (amc search --finalists K)
            extra["finalists"] = int(token[3:])
        elif token.startswith("x"):  # K times the --candidates
            extra["episodes"] = int(token[1:]) * bench.args.candidates
        else:
            options["anchor"] = token
    if options:
        extra["agent_options"] = options
    config = bench.search_config(agent, seed, **extra)
    t0, last = time.time(), {"t": time.time()}

    def progress(r: dict) -> None:
        if time.time() - last["t"] > 60 or r["remaining"] == 0:
            last["t"] = time.time()
            print(f"  {method} seed {seed}: candidate {r['episode'] + 1}/{r['episodes']} best "
                  f"{r['best_reward']:.4f} ({time.time() - t0:.0f}s)", flush=True)

    resume = RunDir(run_dir).has_state()
    result = amc.search(data=bench.dataset, config=config, out=run_dir, resume=resume, overwrite=not resume,
                        progress=progress)
    s = result.summary
    pruned = amc.load_pruned(run_dir)  # the exported network, accounted like every other
    macs = count_macs(pruned, bench.info.input_shape)
    if macs > bench.budget_macs + 1e-6:
        raise AssertionError(f"{method}: {macs} MACs exceed the budget")
    return {"heldout_top1": s["best_val_top1"], "test_top1": s["test_top1"], "macs": macs,
            "macs_ratio": macs / bench.original_macs, "params": count_params(pruned),
            "params_ratio": count_params(pruned) / bench.original_params, "search_seconds": s["search_seconds"],
            "search_score": s["best_search_score"], "keep": result.policy.keep,
            "curve": curve(result.episodes), "episodes": config.episodes,
            # search, finalist stage and final scoring together: what equal CPU time is judged by
            "total_seconds": round(time.time() - t0, 1), "finalists": s.get("finalists")}


def plain_from_finalists(bench: Bench, row: dict, out: Path) -> None:
    """The row of the same search without the finalist stage, from a -finK row: the search is the same (same
    seed, same candidates; checked on ResNet-20, benchmarks/RESULTS.md), so its best candidate is rebuilt with
    the search's scorer and exported like every row, and no second search runs."""
    plain, run_dir = row["method"].rsplit("-fin", 1)[0], Path(row["run_dir"])
    target = out / plain / f"seed{row['seed']}"
    if (target / "peer.json").exists() or plain not in SEARCHERS or not row.get("finalists"):
        return
    best = row["finalists"]["search_best_episode"]
    log = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    record = next(r for r in log if r["episode"] == best)
    scorer = bench.scoring(row["seed"], recalibrate="+bn" in plain, racing=False).scorer
    derived = bench.export(target, scorer.build(record["keep"]), plain, {
        "search_seconds": row["search_seconds"], "search_score": record["accuracy"], "keep": record["keep"],
        "derived_from": str(run_dir), "best_episode": best})
    shutil.copy(run_dir / "config.json", target / "config.json")  # the search's settings (seed, BN batches)
    write_json_atomic(target / "peer.json", {"method": plain, "seed": row["seed"], "run_dir": str(target), **derived})


def run_tpe(bench: Bench, seed: int, run_dir: Path) -> dict:
    """Optuna TPE over one preserve ratio per decision, each trial stepped through the environment."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir.mkdir(parents=True, exist_ok=True)
    scoring = bench.scoring(seed)
    env, lbound = scoring.env, bench.args.lbound
    storage = JournalStorage(JournalFileBackend(str(run_dir / "study.log")))  # resumable: every trial on disk
    study = optuna.create_study(study_name="tpe", storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed))
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # killed mid-trial last time

    def done() -> int:
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    # With --racing TPE is told a dropped candidate's prefix accuracy, as the DDPG agent is; the bar is the
    # best fully scored trial of this study only (also after a restart), never another method's.
    full = scoring.scorer.evaluator.size
    scoring.scorer.note_best(max((t.value for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                                  if t.user_attrs.get("scored_images", full) == full), default=-math.inf))

    t0, last = time.time(), time.time()
    while done() < bench.args.candidates:
        start = time.perf_counter()
        trial = study.ask()
        ratios = [trial.suggest_float(f"d{t:03d}", lbound, 1.0) for t in range(len(env.channels))]
        info = step_policy(env, ratios)
        trial.set_user_attr("keep", info["keep_counts"])
        trial.set_user_attr("scored_images", info["score"].images)  # 0: a policy scored before
        trial.set_user_attr("seconds", time.perf_counter() - start)
        study.tell(trial, info["accuracy"])
        if time.time() - last > 60 or done() == bench.args.candidates:
            last = time.time()
            print(f"  tpe seed {seed}: candidate {done()}/{bench.args.candidates} best {study.best_value:.4f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
    trials = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)
    records = [{"seconds": t.user_attrs["seconds"], "accuracy": t.value, "keep": t.user_attrs["keep"]} for t in trials]
    best = max(records, key=lambda r: r["accuracy"])  # first of equals, like the search's strict ">"
    pruned = scoring.scorer.build(best["keep"])
    return bench.export(run_dir, pruned, "tpe", {
        "search_seconds": sum(r["seconds"] for r in records), "search_score": best["accuracy"], "keep": best["keep"],
        "ratios": [k / c for k, c in zip(best["keep"], env.channels.tolist())], "curve": curve(records)})


# ---- latency, fine-tuning, report ---------------------------------------------------------------------
def latency_pair(original: nn.Module, pruned: nn.Module, shape, rounds: int, repeats: int) -> dict:
    """Batch-1, one-thread torch latency of both, interleaved round by round; median per-round speed-up."""
    times: dict[str, list[float]] = {"original": [], "pruned": []}
    ratios = []
    with ExitStack() as stack:
        runs = {key: stack.enter_context(runner(net, shape, backend="torch", batch=1, threads=1))
                for key, net in (("original", original), ("pruned", pruned))}
        for _ in range(rounds):
            medians = {}
            for key in ("original", "pruned"):
                t = time_calls(runs[key], warmup=2, repeats=repeats)
                times[key].extend(t.tolist())
                medians[key] = float(np.median(t))
            ratios.append(medians["original"] / medians["pruned"])
    return {"original_ms": float(np.median(times["original"])), "pruned_ms": float(np.median(times["pruned"])),
            "speedup": statistics.median(ratios)}


def finetune_best(bench: Bench, rows: list[dict], out: Path) -> None:
    """Fine-tune the best seed of the three methods with the highest held-out top-1 (the project's recipe:
    SGD lr 0.01 cosine, distillation from the original, `--finetune-epochs`)."""
    from amc.finetune import finetune
    from amc.train import TrainConfig

    by_method: dict[str, list[dict]] = {}
    for r in rows:
        if "heldout_top1" in r:
            by_method.setdefault(r["method"], []).append(r)
    ranked = sorted(by_method, key=lambda m: -statistics.mean(r["heldout_top1"] for r in by_method[m]))
    ranked = ranked if bench.args.finetune_all else ranked[:3]
    for method in ranked:
        row = max(by_method[method], key=lambda r: r["heldout_top1"])
        done = row.get("finetune", {})
        if done.get("epochs") == bench.args.finetune_epochs and done.get("seed", 0) == bench.args.finetune_seed:
            continue
        run_dir = Path(row["run_dir"])
        print(f"fine-tuning {method} seed {row['seed']} ({run_dir}) for {bench.args.finetune_epochs} epochs", flush=True)
        config = TrainConfig(epochs=bench.args.finetune_epochs, lr=0.01, precision=bench.args.precision,
                             seed=bench.args.finetune_seed)
        resume = RunDir(run_dir).has_finetune_checkpoint()  # an interrupted (or finished but unrecorded) fine-tune
        record = finetune(run_dir, config, distill=True, data=bench.dataset, resume=resume, overwrite=not resume)
        row["finetune"] = {"epochs": record["epochs"], "seed": bench.args.finetune_seed,
                           "test_top1": record["test_top1"], "heldout_top1": record["heldout_top1"]}
        write_json_atomic(run_dir / "peer.json", row)


def fmt(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    values = [scale * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(bench: Bench, rows: list[dict]) -> str:
    tuned = any("finetune" in r for r in rows)
    header = ["method", "seeds", "held-out top-1 (no FT)", "test top-1", "MACs (ratio)", "params (ratio)",
              "latency ms (speed-up)", "search time"] + (["test top-1 after FT"] if tuned else [])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines.append(f"| original | - | {100 * bench.heldout.top1(bench.model):.2f} | {100 * bench.test.top1(bench.model):.2f} "
                 f"| {bench.original_macs / 1e6:.2f}M (1.000) | {bench.original_params / 1e3:.1f}K (1.000) | "
                 f"{_original_ms(rows)} | - |" + (" - |" if tuned else ""))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        if "reason" in rs[0]:
            lines.append(f"| {method} | - | {rs[0]['short_reason']} |" + " - |" * (len(header) - 3))
            continue
        latency = [r["latency"] for r in rs if "latency" in r]
        latency_cell = (f"{statistics.mean(x['pruned_ms'] for x in latency):.2f} "
                        f"({statistics.mean(x['speedup'] for x in latency):.2f}x)") if latency else "-"
        seconds = statistics.mean(r["search_seconds"] for r in rs)

        def mean(key: str, rs: list[dict] = rs) -> float:
            return statistics.mean(r[key] for r in rs)

        cells = [method, str(len(rs)), fmt([r["heldout_top1"] for r in rs]), fmt([r["test_top1"] for r in rs]),
                 f"{mean('macs') / 1e6:.2f}M ({mean('macs_ratio'):.3f})",
                 f"{mean('params') / 1e3:.1f}K ({mean('params_ratio'):.3f})", latency_cell, f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"]
        if tuned:
            ft = [r["finetune"] for r in rs if "finetune" in r]
            cells.append(f"{100 * ft[0]['test_top1']:.2f} ({ft[0]['epochs']} ep.)" if ft else "-")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"\n{bench.args.model}, MACs budget {bench.args.ratio:g} of {bench.original_macs / 1e6:.2f}M, "
             f"lower bound {bench.args.lbound:g}, {bench.args.candidates} candidates per search, "
             f"search scores in {bench.args.precision}"
             + (f" on the first {bench.args.heldout_limit} held-out images" if bench.args.heldout_limit else "")
             + (", searchers racing (hopeless candidates dropped after a prefix)" if bench.args.racing else "")
             + "; every reported figure fp32 on the full splits, no fine-tuning unless stated. "
             "Mean ± std over seeds where there are several."]
    if any("reason" in r for r in rows):
        notes.append(f"\nnni-amc: {NNI_REASON}.")
    return "\n".join(lines) + "\n" + "\n".join(notes)


def _original_ms(rows: list[dict]) -> str:
    ms = [r["latency"]["original_ms"] for r in rows if "latency" in r]
    return f"{statistics.median(ms):.2f}" if ms else "-"


def plot(rows: list[dict], path: Path, args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"random": "tab:gray", "tpe": "tab:green", "ddpg": "tab:blue", "ddpg+bn": "tab:purple",
              "tpe+bn": "tab:olive", "ddpg+bn-shallower": "tab:red", "ddpg+bn-knapsack": "tab:cyan"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, color in colors.items():
        for i, r in enumerate(r for r in rows if r["method"] == method and r.get("curve")):
            c = np.asarray(r["curve"])
            ax.step(c[:, 0] / 60, 100 * c[:, 1], where="post", color=color, alpha=0.8,
                    label=method if i == 0 else None)
    references = {"uniform": ("black", "--"), "uniform+bn": ("black", ":"), "shallower-more+bn": ("tab:brown", ":")}
    for r in rows:  # the fixed policies as horizontal lines: what a search must beat
        if r["method"] in references and "search_score" in r:
            color, style = references[r["method"]]
            ax.axhline(100 * r["search_score"], color=color, linestyle=style, linewidth=1, label=r["method"])
    ax.set_xlabel("search wall time (min, sum of candidate times)")
    subset = f"first {args.heldout_limit}" if args.heldout_limit else "5,000"
    ax.set_ylabel(f"best held-out top-1 so far (%, {subset} images, {args.precision})")
    ax.set_title(f"{args.model} at {args.ratio:g} of the MACs, no fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- driver -------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    rows = []
    for method in args.methods:
        seeds = args.seeds if method in SEARCHERS else [0]
        for seed in seeds:
            run_dir = out / method / f"seed{seed}"
            cache = run_dir / "peer.json"
            if cache.exists():
                rows.append(json.loads(cache.read_text()))
                continue
            if args.cached_only and method != "nni-amc":  # nni-amc's row is only its reason: no work
                print(f"{method} seed {seed}: not run yet, left out (--cached-only)", flush=True)
                continue
            print(f"{method} seed {seed} ...", flush=True)
            if method == "nni-amc":
                row = {"reason": NNI_REASON, "short_reason": NNI_SHORT}
            elif method in FIXED:
                row = run_fixed(bench, method, run_dir)
            elif method in TORCH_PRUNING:
                importance = method.split("-")[1].split("+")[0]
                try:
                    produced = run_torch_pruning(bench, importance, out)  # all three rows of this importance
                except BudgetUnreachable as e:
                    short = str(e).split(",")[0] + ": the budget is out of its reach"
                    produced = {f"tp-{importance}{suffix}": {"reason": str(e), "short_reason": short}
                                for suffix in ("", "+lsq", "-counts")}
                for name, r in produced.items():
                    if name != method and not (out / name / "seed0" / "peer.json").exists():
                        write_json_atomic(out / name / "seed0" / "peer.json",
                                          {"method": name, "seed": 0, "run_dir": str(out / name / "seed0"), **r})
                row = produced[method]
            elif method == "tpe":
                row = run_tpe(bench, seed, run_dir)
            else:
                row = run_amc_search(bench, method, seed, run_dir)
            row = {"method": method, "seed": seed, "run_dir": str(run_dir), **row}
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(cache, row)
            rows.append(row)
            if "heldout_top1" in row:
                print(json.dumps({k: row[k] for k in ("method", "seed", "heldout_top1", "test_top1", "macs_ratio",
                                                      "search_seconds")}), flush=True)
    for row in rows:  # cached ones too: a stop may have come between a -finK row and its plain one
        if "-fin" in row["method"]:
            plain_from_finalists(bench, row, out)
    if args.latency_rounds > 0:
        torch_threads = torch.get_num_threads()
        for row in rows:
            if "heldout_top1" in row and "latency" not in row:
                # both fresh and in the default layout (scoring leaves models channels-last)
                original = copy.deepcopy(bench.model).to(memory_format=torch.contiguous_format)
                pruned = amc.load_pruned(row["run_dir"])
                row["latency"] = latency_pair(original, pruned, bench.info.input_shape, args.latency_rounds,
                                              args.latency_repeats)
                write_json_atomic(Path(row["run_dir"]) / "peer.json", row)
        torch.set_num_threads(torch_threads)
    if args.finetune_epochs > 0:
        finetune_best(bench, rows, out)
    text = table(bench, rows)
    print(text)
    (out / "table.md").write_text(text + "\n")
    if any(r.get("curve") for r in rows):
        plot(rows, out / "search_curves.png", args)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="zoo name, e.g. resnet20 or resnet56")
    parser.add_argument("--weights", required=True, help="trained checkpoint of the model")
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--data-dir", help="dataset file or folder (none for digits)")
    parser.add_argument("--ratio", type=float, default=0.5, help="MACs budget as a share of the original")
    parser.add_argument("--lbound", type=float, default=0.2, help="smallest preserve ratio of any decision")
    parser.add_argument("--channel-round", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--candidates", type=int, default=300, help="scored candidates per search and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the searchers")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="scoring precision during searches (reported figures are always fp32)")
    parser.add_argument("--racing", action="store_true",
                        help="searchers (random, tpe, ddpg and the +bn variants) drop hopeless candidates early (amc --racing)")
    parser.add_argument("--heldout-limit", type=int, help="score candidates on the first N held-out images only")
    parser.add_argument("--calibration-images", type=int, default=3000)
    parser.add_argument("--bn-batches", type=int, default=2, help="BN recalibration batches of ddpg+bn, tpe+bn")
    parser.add_argument("--ramp-spread", type=float, default=0.5,
                        help="difference of preserve ratio between first and last decision of the ramps")
    parser.add_argument("--taylor-batches", type=int, default=8, help="training batches of 64 for Taylor grads")
    parser.add_argument("--latency-rounds", type=int, default=10, help="interleaved rounds (0: no latency)")
    parser.add_argument("--latency-repeats", type=int, default=20, help="timed runs per model and round")
    parser.add_argument("--finetune-epochs", type=int, default=0,
                        help="fine-tune the best three methods' models for N epochs (0: off)")
    parser.add_argument("--finetune-all", action="store_true",
                        help="fine-tune the best seed of every method, not only of the best three")
    parser.add_argument("--finetune-seed", type=int, default=0,
                        help="seed of the fine-tune (data order); another seed needs its own --out")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cached-only", action="store_true",
                        help="run nothing new: tabulate (measure, fine-tune) only the methods and seeds finished")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not 0 < args.ratio <= 1 or args.candidates < 1:
        parser.error("need 0 < --ratio <= 1 and --candidates >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
