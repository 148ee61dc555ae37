"""The accounting every peers.py method shares (`Bench`), and the runs of the fixed allocations and the searches.

`Bench` loads the model, data and graph once (`amc.pipeline.prepare`), builds the scorers `amc search` would
build (`amc.scoring.build_scorer`, by calibration seed) and the MACs budget (`amc.budget.Budget`), and accounts
every exported model alike: fp32 held-out and test top-1 on the full splits, MACs and parameters counted on the
exported network, the budget checked.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from common import fixed_ratios, ramp_spread, search_resumably
from peer_methods import METHODS, FixedPolicy, Search, without_finalists
from peer_rows import read_row, write_row
from torch import nn

import amc
from amc.budget import Budget
from amc.config import SearchConfig
from amc.cost import count_macs, count_params
from amc.evaluate import Evaluator
from amc.export import save_pruned
from amc.pipeline import prepare
from amc.runs import RunDir
from amc.scoring import Scorer, build_scorer, recalibration_batches

# what a peer's config.json records: `amc finetune` reads the first four, finetune_grid.py rebuilds the scorer
SCORER_SETTINGS = ("model", "weights", "data", "data_dir", "method", "seed", "calibration_images", "points_per_image",
                   "bn_recalibration")


class Bench:
    """The model, data, graph, budget and report evaluators shared by every method."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        # the scorers score without BN recalibration (the +bn methods add it); seed 0's is built here
        config = self.search_config("ddpg", 0, bn_recalibration=0)
        self.setup = prepare(config)
        self.dataset, self.model, self.info, self.graph = (self.setup.dataset, self.setup.model, self.setup.info,
                                                           self.setup.graph)
        self.budget = Budget(self.graph, config.env_config)
        self.original_macs = count_macs(self.model, self.info.input_shape)
        self.original_params = count_params(self.model)
        self.budget_macs = args.ratio * self.original_macs
        self.heldout = Evaluator(self.dataset.heldout, self.info.mean, self.info.std)  # fp32, the whole split
        self.test = Evaluator(self.dataset.test, self.info.mean, self.info.std)
        self._scorers: dict[int, Scorer] = {0: self.setup.scorer}  # by calibration seed

    def search_config(self, agent: str, seed: int, **extra) -> SearchConfig:
        a = self.args
        return SearchConfig(model=a.model, weights=a.weights, data=a.data, data_dir=a.data_dir, ratio=a.ratio,
                            lbound=a.lbound, channel_round=a.channel_round, agent=agent,
                            episodes=extra.pop("episodes", a.candidates), seed=seed,
                            calibration_images=a.calibration_images, heldout_limit=a.heldout_limit,
                            precision=a.precision, threads=a.threads, racing=a.racing, **extra)

    def scorer(self, seed: int = 0, *, recalibrate: bool = False, racing: bool | None = None) -> Scorer:
        """The scorer of calibration seed `seed` as a search builds it (racing as `--racing`, no BN
        recalibration). With `recalibrate`, BN is recalibrated on `--bn-batches` batches of 100 calibration
        images (as amc.search does); `racing` overrides `--racing`. Either gives a variant with a cache of its
        own, so that no score cached without recalibration is reused."""
        if seed not in self._scorers:
            config = self.search_config("ddpg", seed, bn_recalibration=0)
            self._scorers[seed] = build_scorer(self.model, self.graph, self.dataset, config)
        scorer = self._scorers[seed]
        if recalibrate or racing is not None:
            recalibration = recalibration_batches(scorer.calibration, self.args.bn_batches) if recalibrate else None
            scorer = scorer.variant(recalibration=recalibration, racing=racing)
        return scorer

    def account(self, pruned: nn.Module, method: str) -> dict:
        """MACs and parameters of an exported model, and their shares of the original's; the budget checked."""
        macs, params = count_macs(pruned, self.info.input_shape), count_params(pruned)
        if macs > self.budget_macs + 1e-6:
            raise AssertionError(f"{method}: {macs} MACs exceed the budget {self.budget_macs:.0f}")
        return {"macs": macs, "macs_ratio": macs / self.original_macs, "params": params,
                "params_ratio": params / self.original_params}

    def export(self, run_dir: Path, pruned: nn.Module, method: str, extra: dict, *, seed: int = 0,
               recalibrate: bool = False, settings: dict | None = None) -> dict:
        """Account `pruned` like every other method, save it as a run directory and return its record. Its
        config.json holds enough for `amc finetune` (model, weights, data) and for rebuilding the scorer that
        built it (calibration seed and images, BN batches), or a search's own `settings`."""
        pruned.amc_info = self.info
        figures = self.account(pruned, method)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_pruned(pruned, run_dir)
        scored = self.search_config("ddpg", seed, bn_recalibration=self.args.bn_batches if recalibrate else 0)
        own = {key: getattr(scored, key) for key in SCORER_SETTINGS}
        RunDir(run_dir).write_peer_config({**(settings or own), "peer": method}, self.info)
        return {"heldout_top1": self.heldout.top1(pruned), "test_top1": self.test.top1(pruned), **figures, **extra}


def run_fixed(bench: Bench, name: str, method: FixedPolicy, seed: int, run_dir: Path) -> dict:
    """One allocation, played through the budget and scored in full (no racing) by the seed-0 scorer."""
    scorer = bench.scorer(0, recalibrate=method.recalibrate, racing=False)
    t0 = time.perf_counter()
    ratios = fixed_ratios(bench.budget, method.anchor, bench.args.ramp_spread, scorer)
    keep = bench.budget.play(ratios)
    score = scorer(keep)
    pruned = scorer.build(keep)
    seconds = time.perf_counter() - t0
    return bench.export(run_dir, pruned, name, {
        "search_seconds": seconds, "search_score": score.accuracy,
        "spread": ramp_spread(method.anchor, bench.args.ramp_spread), "keep": keep,
        "ratios": bench.budget.summarize(keep)["ratios"]}, recalibrate=method.recalibrate)


def curve(records: list[dict]) -> list[list[float]]:
    """[cumulative seconds, best score so far] after each candidate."""
    points, elapsed, best = [], 0.0, -math.inf
    for r in records:
        elapsed += r["seconds"]
        best = max(best, r["accuracy"])
        points.append([round(elapsed, 3), best])
    return points


def run_search(bench: Bench, name: str, method: Search, seed: int, run_dir: Path) -> dict:
    """`amc.search` with the method's agent and options (resumed if it was stopped), its export accounted."""
    extra = {"bn_recalibration": bench.args.bn_batches if method.recalibrate else 0,  # explicit, whatever amc's default
             "episodes": method.candidates_factor * bench.args.candidates}
    if method.agent_options:
        extra["agent_options"] = dict(method.agent_options)
    if method.finalists > 1:
        extra["finalists"] = method.finalists
    config = bench.search_config(method.agent, seed, **extra)
    t0 = time.time()
    result = search_resumably(config, bench.dataset, run_dir, f"{name} seed {seed}")
    s = result.summary
    return {"heldout_top1": s["heldout_top1"], "test_top1": s["test_top1"],
            **bench.account(amc.load_pruned(run_dir), name),  # the exported network, accounted like every other
            "search_seconds": s["search_seconds"], "search_score": s["best_search_score"], "keep": result.policy.keep,
            "curve": curve(result.episodes), "episodes": config.episodes,
            # search, finalist stage and final scoring together: what equal CPU time is judged by
            "total_seconds": round(time.time() - t0, 1), "finalists": s.get("finalists")}


def plain_from_finalists(bench: Bench, row: dict, out: Path) -> None:
    """The row of the same search without the finalist stage, from a finalist method's row: the search is the
    same (same seed, same candidates), so its best candidate is rebuilt with the search's scorer and exported like
    every row, and no second search runs."""
    plain = without_finalists(row["method"])
    if plain is None or not row.get("finalists"):
        return
    run, target = RunDir(row["run_dir"]), out / plain / f"seed{row['seed']}"
    if read_row(target) is not None:
        return
    best = row["finalists"]["search_best_episode"]
    record = next(r for r in run.read_episodes() if r["episode"] == best)
    scorer = bench.scorer(row["seed"], recalibrate=METHODS[plain].recalibrate, racing=False)
    derived = bench.export(target, scorer.build(record["keep"]), plain, {
        "search_seconds": row["search_seconds"], "search_score": record["accuracy"], "keep": record["keep"],
        "derived_from": str(run.path), "best_episode": best},
        settings=run.settings("rebuilt"))  # the search's own settings (seed, BN batches)
    write_row(target, {"method": plain, "seed": row["seed"], "run_dir": str(target), **derived})
