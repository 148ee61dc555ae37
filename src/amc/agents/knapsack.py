"""The knapsack allocator: a strong cheap baseline, and a prior for the searchers.

Per decision, the accuracy lost when only that decision is pruned to each of a few allowed ratios (least
squares and BN recalibration as in the search, scored on a small class-balanced prefix of the held-out
split), and the cost each option saves (the budget's exact cost: MACs, params or the latency table).
A multiple-choice knapsack then picks one option per decision that saves enough to meet the budget at the
smallest summed accuracy loss: dynamic programming over the discretised saving. Savings are measured one
decision at a time; where two decisions share a layer (a plain chain) the savings interact, so the target
saving is raised until the whole policy meets the budget by the budget's own cost. Where blocks may be
dropped, a block's decision has the option 0 (the block removed); a stage that would lose more blocks than it may
keeps the one whose drop costs most accuracy, and the knapsack is solved again.

Measured one at a time from the whole network, losses and savings add up badly at a harsh budget on a plain chain
(on the digits CNN at 5% of the MACs the allocation over-saves and scores 79% held-out, against 87% for uniform
widths). So where the allocation scores under the uniform policy at the same budget (the one-at-a-time losses
did not add up), it is refined in context, up to `ROUNDS` times: every decision's options are scored again
with the others at the current allocation (with finer options near its count), the knapsack is solved around
it, and the new allocation is kept only if it scores higher on the same images. A round costs about as much as
the first pass, and where the allocation already beats uniform it did not change (ResNet-20 at 20% of the MACs:
108 s one pass, 207 s with a round that kept it), so there it is skipped. Last, the allocation is compared with
the cheap rules it should beat (`references`: uniform, the paper's two ramps, and in fine-grained mode the global
magnitude ranking NNCF uses) on the whole held-out split, and the best of them is kept (`final_pick`): on
ResNet-56 at 20% of the parameters the one-at-a-time losses of 56 layers scored 75.6% against the global
ranking's 83.4%, and on vgg16 at 20% of the MACs the deeper ramp beat the knapsack's own allocation and uniform.

Every candidate of a table differs from the table's base in one decision, so it is scored from where it differs
(`amc.downstream.DownstreamProbe`: the layers upstream of the change run once per decision, the scores are the
full path's): on ResNet-20 at 20% the knapsack took 55 s instead of 91 s, with the same allocation.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from amc.agents.base import Agent, Transition
from amc.budget import RAMP_SPREAD
from amc.downstream import DownstreamProbe

if TYPE_CHECKING:
    from amc.budget import Budget

SENSITIVITY_IMAGES = 1000  # held-out images each single-decision candidate is scored on
OPTIONS = 8                # allowed ratios tried per decision, from the lower bound to 1
BINS = 2000                # resolution of the saving in the dynamic programme
ROUNDS = 2                 # refinements in context after the first allocation (each as costly as the first)
NEAR = 9                   # options near the current count in a refinement: geometric, from half to twice it

logger = logging.getLogger("amc.search")  # the search's logger (`amc.callbacks`), not imported: no cycle


def _probe(scorer, images: int) -> DownstreamProbe:
    """Scores as `scorer` does on the first `images` held-out images, without racing, running each candidate
    only from where it differs from the table's base (`amc.downstream`: the same score, about half the time)."""
    return DownstreamProbe(scorer.variant(racing=False, evaluator=scorer.evaluator.limited(images)))


# on_step(done, total, what): progress through a pass's candidates (`amc.callbacks.Phases.step`)
Steps = Callable[[int, int, str], None]


def sensitivity(budget: Budget, scorer, images: int = SENSITIVITY_IMAGES, options: int = OPTIONS,
                base: list[int] | None = None) -> list[list[tuple[int, float]]]:
    """For every decision, [(keep count, accuracy)] with only that decision changed from `base` (default: the
    whole network), scored as `scorer` (an `amc.scoring.Scorer`) scores (its pruner, BN recalibration) on the
    first `images` held-out images, without racing. Around a `base`, the options also include its count, the
    whole decision and `NEAR` counts between half and twice its count."""
    return _table(budget, _probe(scorer, images), options, base)


def _table(budget: Budget, probe: DownstreamProbe, options: int, base: list[int] | None, on_step: Steps | None = None,
           what: str = "") -> list[list[tuple[int, float]]]:
    """`sensitivity`'s table, scored by `probe` (whose cache the refinement shares); `on_step` told of each
    candidate scored."""
    start = [int(c) for c in budget.channels] if base is None else [int(k) for k in base]
    probe.rebase(start)  # every candidate differs from `start` in one decision
    rows = []
    for i, allowed in enumerate(budget.allowed):
        picks = np.unique(np.round(np.linspace(0, len(allowed) - 1, min(options, len(allowed)))).astype(int))
        counts = {int(c) for c in allowed[picks]}
        if base is not None and start[i] > 0:
            near = np.geomspace(max(start[i] / 2, allowed[allowed > 0][0]), min(2 * start[i], allowed[-1]), NEAR)
            counts |= {int(allowed[np.argmin(np.abs(allowed - c))]) for c in near} | {start[i], int(allowed[-1])}
        rows.append(sorted(counts))
    total, done, table = sum(map(len, rows)), 0, []
    for i, counts in enumerate(rows):
        row = []
        for count in counts:
            keep = list(start)
            keep[i] = count
            row.append((count, float(probe(keep))))
            done += 1
            if on_step is not None:
                on_step(done, total, what)
        table.append(row)
    return table


def allocate(budget: Budget, table: list[list[tuple[int, float]]], bins: int = BINS, rounds: int = 30,
             base: list[int] | None = None) -> list[int]:
    """Keep counts, one option per decision, that meet `budget` with the least summed accuracy loss; `table` as
    `sensitivity` measured it, around `base` (default: the whole network)."""
    full = np.array([int(c) for c in budget.channels])
    start = full if base is None else np.array(base)
    # a decision's saving and loss are counted from its largest option, the others at `start`; the savings
    # needed are what takes `start` to the budget plus what every decision's largest option adds to it
    saving, above = [], 0.0
    for i, row in enumerate(table):
        keep = start.copy()
        keep[i] = row[-1][0]
        widest = budget.cost(keep)
        above += widest - budget.cost(start)
        values = []
        for count, _ in row:
            keep[i] = count
            values.append(widest - budget.cost(keep))
        saving.append(values)
    loss = [[max(0.0, row[-1][1] - acc) for _, acc in row] for row in table]  # against the widest option
    needed = budget.cost(start) - budget.limit + above
    if needed <= 0:
        return [row[-1][0] for row in table]
    target = needed
    best = budget.cheapest(-1, full).tolist()  # every decision at its lower bound, blocks dropped as allowed: the cheapest
    for _ in range(rounds + len(table)):
        choice = _covering_knapsack(saving, loss, target, bins)
        if choice is None:
            return best
        keep = [table[i][o][0] for i, o in enumerate(choice)]
        kept = _over_cap(budget, keep, loss, choice)
        if kept is not None:  # this block stays: forbid its drop and solve again
            loss[kept][0] = np.inf
            continue
        cost = budget.cost(keep)
        if cost <= budget.limit + 1e-6:
            return keep
        target += cost - budget.limit  # savings interacted: ask for the shortfall on top
    return best


def _over_cap(budget: Budget, keep: list[int], loss: list[list[float]], choice: list[int]) -> int | None:
    """A dropped block of a stage that loses more blocks than it may: the one whose drop loses most accuracy."""
    for stage, cap in budget.drop_caps.items():
        dropped = [i for i, s in enumerate(budget.stage) if s == stage and keep[i] == 0]
        if len(dropped) > cap:
            return max(dropped, key=lambda i: loss[i][choice[i]])
    return None


def _covering_knapsack(saving: list[list[float]], loss: list[list[float]], target: float,
                       bins: int) -> list[int] | None:
    """One option per group whose savings sum to at least `target` at the least summed loss (None if no
    choice saves enough). Savings are rounded down to steps of target / bins, so the choice saves enough;
    bin `bins` stands for "the target or more"."""
    step = target / bins
    best = np.full(bins + 1, np.inf)  # least loss with the saving so far in bin j
    best[0] = 0.0
    trail = []  # per group: (option, previous bin) that reached each bin
    index = np.arange(bins + 1)
    for values, losses in zip(saving, loss):
        nxt = np.full(bins + 1, np.inf)
        option_at, previous_at = np.zeros(bins + 1, np.int64), np.zeros(bins + 1, np.int64)
        for option, (value, lost) in enumerate(zip(values, losses)):
            units = min(bins, int(np.floor(max(value, 0.0) / step)))
            landing = np.minimum(index + units, bins)
            candidate = best + lost
            for j in np.flatnonzero(np.isfinite(candidate)):
                if candidate[j] < nxt[landing[j]]:
                    nxt[landing[j]], option_at[landing[j]], previous_at[landing[j]] = candidate[j], option, j
        best = nxt
        trail.append((option_at, previous_at))
    if not np.isfinite(best[bins]):
        return None
    choice, j = [], bins
    for option_at, previous_at in reversed(trail):
        choice.append(int(option_at[j]))
        j = int(previous_at[j])
    return choice[::-1]


class KnapsackAgent(Agent):
    """Answers the knapsack's ratio for each decision in turn (one deterministic episode is the search)."""

    name = "knapsack"
    episodes_title = "one deterministic episode"

    def __init__(self, obs_dim: int, lbound: float, seed: int, ratios: list[float] | None = None):
        self.ratios = [float(np.clip(r, lbound, 1.0)) for r in (ratios or [])]
        self.t = 0

    def begin_episode(self, episode: int) -> None:
        self.t = 0

    def act(self, obs: np.ndarray) -> float:
        ratio = self.ratios[min(self.t, len(self.ratios) - 1)] if self.ratios else 1.0
        self.t += 1
        return ratio

    def end_episode(self, transitions: list[Transition], reward: float) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {"ratios": list(self.ratios)}

    def load_state_dict(self, state: dict) -> None:
        self.ratios = [float(r) for r in state["ratios"]]


def references(budget: Budget, pruner) -> dict[str, list[int]]:
    """The cheap allocations the knapsack's must beat (`final_pick`), within `budget`: the uniform policy, the
    paper's two ramps (shallower or deeper layers pruned more) and, where `pruner` ranks weights across layers
    (fine-grained: `MagnitudePruner.global_counts`), the most weights that ranking keeps within the budget, each
    played through the budget as an agent's answers are. On ResNet-56 at 20% of the parameters the global rule
    scored 83.3% held-out before fine-tuning and the knapsack's one pass 76.8% (benchmarks/RESULTS.md): measured
    one layer at a time, 56 layers' losses add up badly. On vgg16 at 20% of the MACs the deeper ramp scored 79.1%
    against uniform's 78.4% (the knapsack's own allocation under both) and fine-tuned higher."""
    found = {"uniform": budget.uniform_policy()}
    if len(budget.channels) > 1:
        for name, spread in (("shallower ramp", -RAMP_SPREAD), ("deeper ramp", RAMP_SPREAD)):
            found[name] = budget.play(budget.ramp_ratios(spread))
    ranked = getattr(pruner, "global_counts", None)
    if ranked is not None:
        found["global magnitude"] = budget.play(budget.ratios_of(ranked(most_within(budget, ranked))))
    return found


def most_within(budget: Budget, ranked: Callable[[int], list[int]]) -> int:
    """The largest n whose allocation `ranked(n)` (per-decision counts of the n best-ranked weights) meets
    `budget`, bisected: the cost grows with n."""
    lo, hi = 0, int(sum(budget.channels))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if budget.cost(ranked(mid)) <= budget.limit else (lo, mid - 1)
    return lo


def refinements(budget: Budget, probe: DownstreamProbe, keep: list[int], score: float, options: int = OPTIONS,
                on_step: Steps | None = None) -> Iterator[tuple[list[int], float]]:
    """Refinements in context, one a round, each around the one before (the first around `keep`, which scores
    `score` on `probe`): every decision's options scored with the others at the base, the knapsack solved
    around it, the result played through the budget. Yields (keep counts, score); the caller stops."""
    for r in itertools.count(1):
        table = _table(budget, probe, options, keep, on_step, f"knapsack refinement {r}: candidates scored")
        new = budget.play(budget.ratios_of(allocate(budget, table, base=keep)))
        score = float(probe(new)) if new != keep else score
        keep = new
        yield keep, score


def knapsack_ratios(budget: Budget, scorer, images: int = SENSITIVITY_IMAGES, options: int = OPTIONS,
                    rounds: int = ROUNDS, on_step: Steps | None = None) -> list[float]:
    """Per-decision preserve ratios of the knapsack allocation for `budget`, its sensitivities scored by
    `scorer`; where it scores under the uniform policy, refined in context up to `rounds` times (each kept only
    if it scores higher). With `rounds` (the default), the best of that and the `references` on the whole held-out
    split is kept (`final_pick`)."""
    probe = _probe(scorer, images)  # one cache: a refinement's base is among its own options
    keep = allocate(budget, _table(budget, probe, options, None, on_step, "knapsack: candidates scored"))
    if rounds:
        keep = budget.play(budget.ratios_of(keep))  # as the episode will play it: filled up to the budget
        score = float(probe(keep))
        rivals = references(budget, scorer.pruner)
        if score >= float(probe(rivals["uniform"])):
            rounds = 0  # the losses added up well enough: it beats the uniform policy
        for new, new_score in itertools.islice(refinements(budget, probe, keep, score, options, on_step), rounds):
            if new_score <= score:
                break
            keep, score = new, new_score
        keep = final_pick(scorer, {"its own allocation": keep, **rivals}, on_step)
    return budget.ratios_of(keep)


def final_pick(scorer, finalists: dict[str, list[int]], on_step: Steps | None = None) -> list[int]:
    """The keep counts, of `finalists` (name: keep counts), that score highest on the whole held-out split (as
    `scorer` scores, without racing; the first named wins a tie), each scored reported to `on_step`. The probe's
    1,000 images tell two allocations apart to about a point, so the few finalists get the whole split: on vgg16
    at 20% of the MACs the probe put uniform 0.6 over the deeper ramp, the whole split 0.64 under it, and the ramp
    fine-tuned 0.25 higher (three seeds each; benchmarks/RESULTS.md, issue 30)."""
    whole = scorer.variant(racing=False)
    scores = {}
    for name, counts in finalists.items():
        scores[name] = float(whole(counts))
        if on_step is not None:
            on_step(len(scores), len(finalists), "knapsack: finalists scored on the whole held-out split")
    best = max(scores, key=scores.get)
    logger.info("knapsack: kept %s (held-out top-1 %s)", best,
                ", ".join(f"{name} {100 * s:.2f}%" for name, s in scores.items()))
    return finalists[best]


__all__ = ["KnapsackAgent", "allocate", "final_pick", "knapsack_ratios", "references", "refinements", "sensitivity"]
