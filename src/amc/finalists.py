"""The finalist stage: which of a search's best candidates to export, judged by a short fine-tune.

The search scores each candidate on the held-out split without fine-tuning, and at aggressive budgets that
score misranks policies that a fine-tune would order differently. So the top-K distinct candidates of the
search each get a few SGD steps, distilled from the original network, on the training split (held-out
excluded), and successive halving keeps the better half by held-out top-1 after every round until one is
left: round r trains each survivor `steps` more (the same data order for every candidate), so the winner has
had `steps x rounds` and the whole stage costs about `2 x K x steps` steps.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from amc.data import Dataset, batches
from amc.models import model_info
from amc.train import MemoizedTeacher, TrainConfig, make_optimizer, sgd_step

# The short fine-tune's recipe: the full fine-tune's (SGD lr 0.01, distillation with alpha 0.5), but at a
# constant learning rate, so that a survivor can be trained on in the next round.
SHORT_FINETUNE = TrainConfig(epochs=1, lr=0.01, distill_alpha=0.5)

logger = logging.getLogger("amc.search")  # the search's logger (`amc.callbacks`)


def distinct_best(log: Sequence[dict], k: int, full_images: int | None = None) -> list[dict]:
    """The `k` highest-reward episodes of a search log with distinct keep counts; with `full_images`, only
    those scored on the whole held-out split (racing stops hopeless ones early: their scores are partial)."""
    chosen: dict[tuple, dict] = {}
    for record in sorted(log, key=lambda r: r["reward"], reverse=True):
        if full_images is not None and record.get("scored_images", full_images) < full_images:
            continue
        chosen.setdefault(tuple(record["keep"]), record)
        if len(chosen) == k:
            break
    return list(chosen.values())


class ShortFinetune:
    """One candidate's short fine-tune, continued across rounds (model, optimizer and data order kept)."""

    def __init__(self, model: nn.Module, dataset: Dataset, teacher: nn.Module | None,
                 config: TrainConfig = SHORT_FINETUNE, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.teacher = teacher
        self.dataset, self.config = dataset, config
        self.optimizer = make_optimizer(self.model, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.steps = 0
        self._batches: Iterator | None = None

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        info = model_info(self.model)
        while True:
            if self._batches is None:  # a new pass over the training split, reshuffled
                self._batches = batches(self.dataset.train, self.config.batch_size, mean=info.mean,
                                        std=info.std, shuffle=True, augment=self.config.augment,
                                        generator=self.generator)
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None

    def train(self, steps: int) -> None:
        self.model.train()
        for _ in range(steps):
            x, y = self._next_batch()
            sgd_step(self.model, self.optimizer, x, y.to(self.device), self.config, self.teacher, self.device)
            self.steps += 1


@dataclass
class FinalistResult:
    winner: int                      # index into the candidates
    scores: list[dict[int, float]]   # per candidate: {short fine-tune steps so far: held-out top-1}
    steps: int                       # SGD steps spent in all


def successive_halving(models: Sequence[nn.Module], score: Callable[[nn.Module], float], dataset: Dataset,
                       teacher: nn.Module | None, steps: int, *, config: TrainConfig = SHORT_FINETUNE,
                       device: str | torch.device = "cpu",
                       progress: Callable[[int, int, float], None] | None = None) -> FinalistResult:
    """Short-fine-tune `models` (each is trained in place) `steps` SGD steps a round, keep the better half by
    `score` (held-out top-1) after each round, until one is left. `progress(candidate, steps, score)` is
    called after every score. Ties keep the earlier candidate (the search's better one)."""
    if steps < 1:
        raise ValueError(f"finalist steps must be at least 1, got {steps}")
    if teacher is not None:
        teacher = stage_teacher(teacher, device)
    runs = [ShortFinetune(m, dataset, teacher, config, device) for m in models]
    scores: list[dict[int, float]] = [{} for _ in models]
    alive = list(range(len(models)))
    while len(alive) > 1:
        for i in alive:
            runs[i].train(steps)
            scores[i][runs[i].steps] = score(runs[i].model)
            if progress:
                progress(i, runs[i].steps, scores[i][runs[i].steps])
        ranked = sorted(alive, key=lambda i: (-scores[i][runs[i].steps], i))
        alive = ranked[:math.ceil(len(alive) / 2)]
    return FinalistResult(alive[0], scores, sum(r.steps for r in runs))


def stage_teacher(teacher: nn.Module, device: str | torch.device = "cpu") -> MemoizedTeacher:
    """The distillation teacher as the stage uses it: every candidate sees the same batches (one seed), so the
    teacher answers each batch once."""
    return MemoizedTeacher(teacher.eval().to(torch.device(device), memory_format=torch.channels_last))


def finalist_config(seed: int, precision: str) -> TrainConfig:
    """The short fine-tune's recipe with the search's seed (data order) and precision."""
    return replace(SHORT_FINETUNE, seed=seed, precision=precision)


def teacher_copy(model: nn.Module) -> nn.Module:
    """The original network as the distillation teacher, in eval mode (a copy: scoring leaves it alone)."""
    return copy.deepcopy(model).eval()


def halving_scorings(candidates: int) -> int:
    """How many times successive halving scores a candidate: every survivor once a round, until one is left."""
    total, alive = 0, candidates
    while alive > 1:
        total, alive = total + alive, math.ceil(alive / 2)
    return total


def choose_finalist(setup, config, log: Sequence[dict], best: dict,
                    on_step: Callable[[int, int, str], None] | None = None) -> tuple[dict, dict | None]:
    """The episode record to export and the stage's record for summary.json (None when the stage is off).

    `setup` is the search's `amc.pipeline.Setup` (its scorer builds each candidate exactly as the search
    scored it, BN recalibration included); `config` its `SearchConfig` (finalists, finalist_steps, seed,
    precision). Held-out top-1 after each round is scored as the search scores, on its held-out split.
    `on_step(done, total, what)` follows the short fine-tunes (minutes each on a CPU), as the knapsack's
    candidates are followed (`amc.callbacks.Phases.step`); each score is also logged at INFO."""
    if config.finalists <= 1:
        return best, None
    t0 = time.perf_counter()
    # raced-out candidates count too, by their score on the prefix they were scored on: at harsh budgets
    # racing stops every candidate but the anchor early (benchmarks/RESULTS.md, issue 17), and the stage
    # exists to re-judge exactly those the held-out score alone would discard
    candidates = distinct_best(log, config.finalists)
    if len(candidates) < 2:
        return best, {"k": config.finalists, "candidates": [], "note": "fewer than two distinct candidates: "
                      "the search's best is exported"}
    models = [setup.scorer.build(r["keep"]) for r in candidates]

    total, done = halving_scorings(len(candidates)), 0

    def report(i: int, steps: int, top1: float) -> None:
        nonlocal done
        done += 1
        logger.info("amc search: finalist %d/%d (episode %s): held-out top-1 %.2f%% after %d short fine-tune steps",
                    i + 1, len(candidates), candidates[i].get("episode"), 100 * top1, steps)
        if on_step:
            on_step(done, total, "short fine-tunes scored")

    result = successive_halving(models, setup.scorer.evaluator.top1, setup.dataset, teacher_copy(setup.model),
                                config.finalist_steps, config=finalist_config(config.seed, config.precision),
                                device=setup.device, progress=report)
    record = {
        "k": config.finalists, "steps_per_round": config.finalist_steps, "total_steps": result.steps,
        "seconds": round(time.perf_counter() - t0, 2), "winner_episode": candidates[result.winner].get("episode"),
        "search_best_episode": best.get("episode"),
        "candidates": [{"episode": r.get("episode"), "keep": list(r["keep"]), "search_score": r["accuracy"],
                        "scored_images": r.get("scored_images"),
                        "finalist_scores": {str(k): v for k, v in scores.items()}}
                       for r, scores in zip(candidates, result.scores)],
    }
    return candidates[result.winner], record


__all__ = ["FinalistResult", "SHORT_FINETUNE", "ShortFinetune", "choose_finalist", "distinct_best", "finalist_config",
           "halving_scorings", "stage_teacher", "successive_halving", "teacher_copy"]
