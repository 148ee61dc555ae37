"""Searchers behind one interface (`Agent`): DDPG as in the AMC paper, the random and uniform baselines, and
Optuna's TPE (optional extra `tpe`). `make_agent` builds one from the environment it will act in."""

from __future__ import annotations

import inspect
from dataclasses import fields

from amc.agents.base import Agent, Transition
from amc.agents.ddpg import DDPGAgent, DDPGConfig
from amc.agents.knapsack import OPTIONS, SENSITIVITY_IMAGES, KnapsackAgent, knapsack_ratios
from amc.agents.random_agent import RandomAgent
from amc.agents.tpe import TPEAgent
from amc.agents.uniform import UniformAgent
from amc.errors import AmcError

AGENTS: dict[str, type[Agent]] = {"ddpg": DDPGAgent, "random": RandomAgent, "uniform": UniformAgent,
                                  "tpe": TPEAgent, "knapsack": KnapsackAgent}

RAMP_SPREAD = 0.5  # preserve ratio difference between the first and last decision of a handcrafted ramp
ANCHORS = {"uniform": 0.0, "shallower": -RAMP_SPREAD, "deeper": RAMP_SPREAD,  # ramp spread of each named prior
           "knapsack": None}  # the knapsack allocation at the budget


BUILD_OPTIONS = {"knapsack": {"sensitivity_images": "int", "options": "int"}}  # taken by make_agent itself


def option_types(name: str) -> dict[str, str]:
    """The settings agent `name` takes as --agent-option, each with its declared type ("int", "float", ...):
    DDPGConfig's fields for DDPG, the constructor's keywords (and make_agent's own) for the others."""
    if name == "ddpg":
        return {f.name: str(f.type) for f in fields(DDPGConfig)}
    parameters = inspect.signature(AGENTS[name].__init__).parameters
    return {**{n: str(p.annotation) for n, p in parameters.items() if n not in ("self", "obs_dim", "lbound", "seed")},
            **BUILD_OPTIONS.get(name, {})}


def resolve_anchor(env, anchor) -> float | list[float] | None:
    """DDPG's prior policy from `anchor=...`: a named fixed policy that meets `env`'s budget ("uniform", the
    paper's ramps "shallower" / "deeper"), a ratio, one ratio per decision, or none (the paper's
    uniform-random warm-up)."""
    if anchor in ("none", None):
        return None
    if isinstance(anchor, str):
        if anchor not in ANCHORS:
            raise AmcError(f"unknown anchor {anchor!r}; use one of {', '.join([*ANCHORS, 'none'])}, a ratio, "
                           "or a list with one ratio per decision")
        if anchor == "knapsack":
            return knapsack_ratios(env)
        return env.uniform_ratio() if anchor == "uniform" else env.ramp_ratios(ANCHORS[anchor])
    if isinstance(anchor, list) and len(anchor) != len(env.channels):
        raise AmcError(f"anchor lists {len(anchor)} ratios but the model has {len(env.channels)} decisions; "
                       "give one per decision (a search's policy.json lists them) or a single ratio")
    return anchor


def make_agent(name: str, env, seed: int, **options) -> Agent:
    """Build agent `name` for `env` (an `amc.env.CompressionEnv`); `options` go to its constructor (e.g.
    DDPGConfig fields). What depends on the budget is resolved from the env: the uniform agent's ratio, and
    DDPG's anchor (default: the paper's "prune shallower layers more" ramp that meets the budget, the best or
    tied-best fixed allocation after fine-tuning at 20-50% MACs on ResNet-20 and 30% on ResNet-56, issue 17
    in benchmarks/RESULTS.md; without a budget, the paper's uniform-random warm-up).
    A bad option is a one-line AmcError."""
    if name not in AGENTS:
        raise AmcError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
    obs_dim, lbound = env.observation_space.shape[0], env.config.action_low  # 0 where actions may drop blocks
    if name == "uniform":
        options.setdefault("ratio", env.uniform_ratio())
    if name == "knapsack" and "ratios" not in options:
        options["ratios"] = knapsack_ratios(env, int(options.pop("sensitivity_images", SENSITIVITY_IMAGES)),
                                            int(options.pop("options", OPTIONS)))
    if name == "ddpg":
        default = "shallower" if env.config.constrained else "none"
        options["anchor"] = resolve_anchor(env, options.get("anchor", default))
        if env.config.constrained:  # for warmup_noise="budget" (the default): whole policies fitted to it
            options.update(fit_policy=env.fit_to_budget, decisions=len(env.channels))
            if not env.config.drop_blocks:  # for actions="share": the fair share at the decision being taken
                options["fair_ratio"] = env.fair_ratio
    try:
        return AGENTS[name](obs_dim, lbound, seed, **options)
    except (TypeError, ValueError) as e:
        raise AmcError(f"bad --agent-option for {name}: {e}") from None


__all__ = ["AGENTS", "ANCHORS", "Agent", "DDPGAgent", "DDPGConfig", "KnapsackAgent", "RandomAgent", "TPEAgent",
           "Transition", "UniformAgent", "make_agent", "option_types", "resolve_anchor"]
