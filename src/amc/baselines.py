"""Was the search worth it: the fixed policies a search has to beat, at its budget, scored as its export is.

After a budgeted search (`--reward acc`) the uniform policy (one preserve ratio for every layer) and, where the
model has more than one decision, the AMC paper's "prune shallower layers more" ramp (DDPG's default anchor)
are built at the same budget, played through the budget exactly as an agent's answers are (its rounding
and clipping), and scored as the exported policy is scored: the pruned network built by the search's scorer
(same selection, reconstruction and BN recalibration), then fp32 top-1 on the full held-out and test splits.
The test split is the fair comparison: the searched policy was chosen on the held-out split among many.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from amc.agents import ANCHORS
from amc.budget import Budget
from amc.evaluate import Evaluator

BASELINES = ("uniform", "shallower")  # the fixed policies compared, in this order
BASELINE_NAMES = {"uniform": "uniform", "shallower": "ramp (shallower layers pruned more)"}
SPLITS = ("test_top1", "heldout_top1")  # the comparison's split first: the one no policy was chosen on


def baseline_policies(budget: Budget) -> dict[str, list[int]]:
    """Keep counts of each fixed policy at `budget`: {"uniform": [...], "shallower": [...]}, played as an agent's
    answers are (`Budget.play`). Empty without a budget (the accuracy-guaranteed rewards); the ramp is left out
    where it is the uniform policy (one decision, or rounding makes them equal)."""
    if not budget.config.constrained:
        return {}
    decisions = len(budget.channels)
    policies = {"uniform": budget.uniform_policy()}
    if decisions > 1:
        ramp = budget.play(budget.ramp_ratios(ANCHORS["shallower"]))
        if ramp != policies["uniform"]:
            policies["shallower"] = ramp
    return policies


def score_baselines(setup, budget: Budget, searched: dict, log: Sequence[dict]) -> dict:
    """summary.json's "baselines" (each fixed policy's keep counts, shares of the original and top-1 on the
    held-out and test splits) and "searched_minus_best_baseline" (the searched policy's margin over the best of
    them on each split); empty without a budget.

    `setup` is the search's `amc.pipeline.Setup` (its scorer builds the networks), `searched` the exported
    policy's figures ({"keep", "heldout_top1", "test_top1"}), `log` the search's episode records. A fixed
    policy identical to the exported one takes its figures; one whose held-out score the log already holds in
    full, fp32 on the whole split, takes that score and is scored on the test split only."""
    policies = baseline_policies(budget)
    if not policies:
        return {}
    info, dataset = setup.info, setup.dataset
    evaluators: dict[str, Evaluator] = {}

    def evaluator(split: str) -> Evaluator:  # built once, and only if a policy needs it
        if split not in evaluators:
            evaluators[split] = Evaluator(getattr(dataset, split.removesuffix("_top1")), info.mean, info.std,
                                          device=setup.device)
        return evaluators[split]

    logged = _fully_scored(setup.scorer.evaluator, log)
    baselines: dict = {}
    for name, keep in policies.items():
        entry = {"keep": keep, **{k: v for k, v in budget.summarize(keep).items() if k.endswith("_ratio")}}
        if keep == list(searched["keep"]):
            entry.update({split: searched[split] for split in SPLITS}, scored="the exported policy")
        else:
            pruned = setup.scorer.build(keep)
            for split in SPLITS:
                known = split == "heldout_top1" and tuple(keep) in logged
                entry[split] = logged[tuple(keep)] if known else evaluator(split).top1(pruned)
            entry["scored"] = ("test split (held-out score from the search's log)" if tuple(keep) in logged
                               else "in full")
        baselines[name] = entry
    best = {split: max(b[split] for b in baselines.values()) for split in SPLITS}
    return {"baselines": baselines,
            "searched_minus_best_baseline": {split: searched[split] - best[split] for split in SPLITS}}


def _fully_scored(evaluator: Evaluator, log: Sequence[dict]) -> dict[tuple, float]:
    """Held-out scores in the log that equal the export's scoring (fp32, the whole held-out split, not raced)."""
    if (evaluator.limit is not None and evaluator.limit < len(evaluator.split)) or evaluator.precision != "fp32":
        return {}
    return {tuple(r["keep"]): r["accuracy"] for r in log
            if r.get("scored_images", evaluator.size) == evaluator.size and np.isfinite(r["accuracy"])}


def verdict(summary: dict) -> str | None:
    """One line: the fixed policies' test top-1 beside the searched one's, and what the search bought."""
    baselines = summary.get("baselines")
    if not baselines:
        return None
    parts = [f"{BASELINE_NAMES[n]}{' at the same budget' if i == 0 else ''}: {100 * baselines[n]['test_top1']:.2f}%"
             for i, n in enumerate(n for n in BASELINES if n in baselines)]
    margin = round(100 * summary["searched_minus_best_baseline"]["test_top1"], 6)
    if margin > 0:
        bought = f"+{margin:.2f} points over the best of them"
    elif margin == 0:
        bought = "no better than the best of them"
    else:
        bought = f"{margin:.2f} points: the search did not beat them"
    return f"test top-1: {', '.join(parts)}, searched: {100 * summary['test_top1']:.2f}% ({bought})"


__all__ = ["BASELINES", "BASELINE_NAMES", "baseline_policies", "score_baselines", "verdict"]
