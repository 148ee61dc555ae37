"""Searchers behind one interface (`Agent`): DDPG as in the AMC paper, the random and uniform baselines, and
Optuna's TPE (optional extra `tpe`), the knapsack. `make_agent` builds one for the budget it will answer under."""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import TYPE_CHECKING

from amc.agents.base import OBS_FEATURES, Agent, Transition
from amc.agents.ddpg import DDPGAgent, DDPGConfig
from amc.agents.knapsack import OPTIONS, ROUNDS, SENSITIVITY_IMAGES, KnapsackAgent, knapsack_ratios
from amc.agents.random_agent import RandomAgent
from amc.agents.tpe import TPEAgent
from amc.agents.uniform import UniformAgent
from amc.budget import RAMP_SPREAD
from amc.errors import AmcError

if TYPE_CHECKING:
    from amc.budget import Budget

AGENTS: dict[str, type[Agent]] = {"ddpg": DDPGAgent, "random": RandomAgent, "uniform": UniformAgent,
                                  "tpe": TPEAgent, "knapsack": KnapsackAgent}

ANCHORS = {"uniform": 0.0, "shallower": -RAMP_SPREAD, "deeper": RAMP_SPREAD,  # ramp spread of each named prior
           "knapsack": None}  # the knapsack allocation at the budget


BUILD_OPTIONS = {"knapsack": {"sensitivity_images": "int", "options": "int", "rounds": "int"}}  # taken by make_agent itself


def option_types(name: str) -> dict[str, str]:
    """The settings agent `name` takes as --agent-option, each with its declared type ("int", "float", ...):
    DDPGConfig's fields for DDPG, the constructor's keywords (and make_agent's own) for the others."""
    if name == "ddpg":
        return {f.name: str(f.type) for f in fields(DDPGConfig)}
    parameters = inspect.signature(AGENTS[name].__init__).parameters
    return {**{n: str(p.annotation) for n, p in parameters.items() if n not in ("self", "obs_dim", "lbound", "seed")},
            **BUILD_OPTIONS.get(name, {})}


def resolve_anchor(budget: Budget, anchor, scorer=None, on_step=None) -> float | list[float] | None:
    """DDPG's prior policy from `anchor=...`: a named fixed policy that meets `budget` ("uniform", the paper's
    ramps "shallower" / "deeper", "knapsack", which scores with `scorer`, an `amc.scoring.Scorer`), a ratio,
    one ratio per decision, or none (the paper's uniform-random warm-up)."""
    if anchor in ("none", None):
        return None
    if isinstance(anchor, str):
        if anchor not in ANCHORS:
            raise AmcError(f"unknown anchor {anchor!r}; use one of {', '.join([*ANCHORS, 'none'])}, a ratio, "
                           "or a list with one ratio per decision")
        if anchor == "knapsack":
            return knapsack_ratios(budget, _needs(scorer, "anchor=knapsack"), on_step=on_step)
        return budget.uniform_ratio() if anchor == "uniform" else budget.ramp_ratios(ANCHORS[anchor])
    check_anchor_length(anchor, len(budget.channels))
    return anchor


def check_anchor_length(anchor, decisions: int) -> None:
    """One line when a per-decision anchor does not list one ratio per decision."""
    if isinstance(anchor, list) and len(anchor) != decisions:
        raise AmcError(f"anchor lists {len(anchor)} ratios but the model has {decisions} decisions; "
                       "give one per decision (a search's policy.json lists them) or a single ratio")


def _needs(scorer, what: str):
    if scorer is None:
        raise AmcError(f"{what} scores candidates: pass make_agent a scorer")
    return scorer


def default_anchor(constrained: bool) -> str:
    """DDPG's anchor when none is given: under a budget the paper's "prune shallower layers more" ramp (the best
    or tied-best fixed allocation after fine-tuning at 20-50% MACs on ResNet-20 and 30% on ResNet-56, issue 17 in
    benchmarks/RESULTS.md), else none (the paper's uniform-random warm-up)."""
    return "shallower" if constrained else "none"


def make_agent(name: str, budget: Budget, seed: int, *, scorer=None, on_step=None, **options) -> Agent:
    """Build agent `name` for `budget` (an `amc.budget.Budget`); `options` go to its constructor (e.g.
    DDPGConfig fields). What depends on the budget is resolved from it: the uniform agent's ratio, the knapsack's
    allocation (scored by `scorer`, each candidate reported to `on_step(done, total, what)`), and DDPG's anchor
    (`default_anchor`). DDPG is handed the budget itself (its budget warm-up and fair shares read it).
    A bad option is a one-line AmcError."""
    if name not in AGENTS:
        raise AmcError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
    config = budget.config
    obs_dim, lbound = len(OBS_FEATURES), config.action_low  # 0 where actions may drop blocks
    if name == "uniform":
        options.setdefault("ratio", budget.uniform_ratio())
    if name == "knapsack" and "ratios" not in options:
        options["ratios"] = knapsack_ratios(budget, _needs(scorer, "the knapsack"),
                                            int(options.pop("sensitivity_images", SENSITIVITY_IMAGES)),
                                            int(options.pop("options", OPTIONS)),
                                            int(options.pop("rounds", ROUNDS)), on_step)
    if name == "ddpg":
        options["anchor"] = resolve_anchor(budget, options.get("anchor", default_anchor(config.constrained)), scorer,
                                           on_step)
        if config.constrained:  # whole warm-up policies fitted to it, and (without drops) fair shares
            options["budget"] = budget
    try:
        return AGENTS[name](obs_dim, lbound, seed, **options)
    except (TypeError, ValueError) as e:
        raise AmcError(f"bad --agent-option for {name}: {e}") from None


__all__ = ["AGENTS", "ANCHORS", "Agent", "DDPGAgent", "DDPGConfig", "KnapsackAgent", "RandomAgent", "TPEAgent",
           "Transition", "UniformAgent", "check_anchor_length", "default_anchor", "make_agent", "option_types", "resolve_anchor"]
