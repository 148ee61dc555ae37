"""The compression environment: the only place that turns actions into a policy under a budget.

One episode walks the prunable decisions of a `LayerGraph` in order. At step t the agent sees the
paper's 11-feature embedding of layer t and answers a preserve ratio; the environment rounds it to a
whole (optionally multiple-of-k) channel count and clips it so that the budget stays reachable
(resource-constrained mode), then moves on. After the last decision the candidate is scored and the
reward returned. Costs come from the graph's exact cost model, so the budget holds for the exported,
physically pruned network, not for an estimate of it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import gymnasium as gym
import numpy as np

from amc.blocks import DROP_SHARE, stage_cap
from amc.errors import AmcError, BudgetError
from amc.graph import LayerGraph

TARGETS = ("macs", "params", "latency")
REWARDS = ("acc", "acc-macs", "acc-params")
DROP_BELOW = 0.5  # with drop_blocks, an action under DROP_BELOW * lbound at a block's decision drops the block
OBS_FEATURES = ("index", "type", "in_channels", "out_channels", "kernel", "stride", "feature_map",
                "layer_macs", "reduced_macs", "rest_macs", "prev_action")


@dataclass(frozen=True)
class EnvConfig:
    """Budget and action settings, validated at construction."""

    target: str = "macs"          # the budgeted resource: "macs", "params" or "latency" (needs a cost model)
    ratio: float = 0.5            # budget as a share of the original model's cost, in (0, 1]
    lbound: float = 0.2           # smallest preserve ratio any decision may take
    channel_round: int = 1        # keep counts rounded to multiples of this (8 suits fast kernels)
    reward: str = "acc"           # "acc" (resource-constrained, R = accuracy = 1 - error),
                                  # "acc-macs" / "acc-params" (accuracy-guaranteed, no hard budget)
    drop_blocks: bool = False     # a residual block's decision may keep 0 channels: the block is removed
    drop_share: float = DROP_SHARE  # at most this share of each stage's blocks may go (never all of them)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise AmcError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.reward not in REWARDS:
            raise AmcError(f"unknown reward {self.reward!r}; choose one of {', '.join(REWARDS)}")
        if not (0 < self.ratio <= 1):
            raise AmcError(f"--ratio must be in (0, 1], got {self.ratio}; e.g. 0.5 keeps half the {self.target}")
        if not (0 < self.lbound <= 1):
            raise AmcError(f"--lbound must be in (0, 1], got {self.lbound}")
        if self.channel_round < 1:
            raise AmcError(f"--channel-round must be a positive integer, got {self.channel_round}")
        if not (0 < self.drop_share < 1):
            raise AmcError(f"--drop-share must be in (0, 1), got {self.drop_share}; e.g. 0.5 lets half of each "
                           "stage's blocks go")

    @property
    def action_low(self) -> float:
        """The smallest action the agents propose: 0 when blocks may be dropped (actions under DROP_BELOW * lbound
        drop a block; elsewhere anything under lbound means lbound), else lbound."""
        return 0.0 if self.drop_blocks else self.lbound

    @property
    def constrained(self) -> bool:
        return self.reward == "acc"


def allowed_counts(channels: int, lbound: float, multiple: int) -> np.ndarray:
    """Keep counts a decision may take: multiples of `multiple` (plus the full count), >= lbound share."""
    low = max(1, math.ceil(lbound * channels - 1e-9))
    counts = [c for c in range(multiple, channels + 1, multiple) if c >= low]
    if not counts or counts[-1] != channels:
        counts.append(channels)
    return np.asarray(sorted(set(counts)), dtype=np.int64)


def check_budget(graph: LayerGraph, config: EnvConfig) -> None:
    """Refuse a budget the graph's cost model shows unreachable (BudgetError), before anything is scored: the
    environment's own check, on the exact MACs or parameters. A latency budget is checked once its table is
    measured (`amc.search.build_env`)."""
    if config.constrained and config.target != "latency":
        CompressionEnv(graph, _not_scored, config)


def _not_scored(keep) -> float:
    raise RuntimeError("a budget check scored a candidate")


def _highest(meets: Callable[[float], bool], lo: float, hi: float, iterations: int) -> float:
    """The highest level in [lo, hi] that `meets` the budget, by bisection (`meets` is monotone: lower levels
    cost less); `lo` when none does, `hi` when all do."""
    if meets(hi):
        return hi
    for _ in range(iterations if meets(lo) else 0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return lo


class CompressionEnv(gym.Env):
    """Gymnasium environment over the decisions of `graph`.

    `evaluate(keep_counts)` scores a finished candidate (held-out top-1 of the pruned model, in [0, 1]): a number,
    or a record `float()` reads the accuracy from (`amc.scoring.Score`, which the last step's info passes on as
    "score"); it is called once per episode, after the last step.
    Observation: float32 [11] in [0, 1] (see OBS_FEATURES). Action: float32 [1], preserve ratio in [0, 1]
    (values under `lbound` are raised to it). With `drop_blocks`, an action under DROP_BELOW * lbound at the
    decision of a droppable residual block keeps 0 channels, which removes the block, while its stage has
    drops left (`drop_share`); otherwise it is raised to lbound like any other.
    """

    metadata = {"render_modes": []}

    def __init__(self, graph: LayerGraph, evaluate: Callable[[list[int]], Any], config: EnvConfig = EnvConfig(),
                 cost_model: Callable[[Sequence[float]], float] | None = None):
        """`cost_model(keep)` replaces the graph's exact cost for the budget (e.g. predicted latency in ms);
        it must not decrease when any count grows. The "latency" target requires one."""
        super().__init__()
        if config.target == "latency" and cost_model is None:
            raise AmcError("the latency target needs a latency model (amc.latency.table.build_latency_model)")
        self.cost_model = cost_model
        self.graph = graph
        self.evaluate = evaluate
        self.config = config
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(OBS_FEATURES),), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), dtype=np.float32)
        self.decisions = graph.decisions
        self.channels = np.array([d.channels for d in self.decisions], dtype=np.int64)
        self.keep = self.channels.copy()
        self._init_drops(graph, config)
        self.allowed = [np.concatenate([[0], a]) if self.stage[i] is not None else a for i, a in
                        enumerate(allowed_counts(int(c), config.lbound, config.channel_round) for c in self.channels)]
        self._kept_allowed = [a[a > 0] for a in self.allowed]  # the counts that keep channels (no drop)
        self.lower = np.array([a[0] for a in self._kept_allowed], dtype=np.int64)  # the smallest count kept
        self._drop_order = self._order_drops()
        self.total_cost = self.cost(self.channels)
        self.budget = config.ratio * self.total_cost
        self._static = self._static_features()
        self.decision_macs = np.asarray(graph.decision_macs(), dtype=np.float64)
        self.total_macs = float(graph.total_macs)
        if config.constrained:
            self.check_feasible()
        self.t = 0
        self.keep = self.channels.copy()
        self.prev_action = 0.0
        self._deferred = False

    @contextlib.contextmanager
    def deferred_scoring(self) -> Iterator[None]:
        """Within it, a finished episode is not scored: its accuracy and reward are NaN, for the caller to score
        elsewhere (Ray actors) and to reward with `reward(accuracy, macs, params)`."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False

    # ---- costs ------------------------------------------------------------------------------------
    def cost(self, keep: Sequence[float]) -> float:
        """The budgeted resource (MACs, params or modelled latency) of the network pruned to `keep`."""
        if self.cost_model is not None:
            return float(self.cost_model(keep))
        return float(self.graph.macs(keep) if self.config.target == "macs" else self.graph.params(keep))

    def refresh_costs(self) -> None:
        """Recompute the full cost and the budget after the cost model changed (a refitted latency model)."""
        self.total_cost = self.cost(self.channels)
        self.budget = self.config.ratio * self.total_cost

    def min_ratio(self) -> float:
        """Smallest cost ratio reachable: every decision at its lower bound, and with drop_blocks as many blocks
        dropped as each stage may lose."""
        return self.cost(self.cheapest(-1, self.lower)) / self.total_cost

    def check_feasible(self) -> None:
        """BudgetError naming the smallest feasible --ratio (and the --lbound that would meet this one) when
        even every decision at its lower bound keeps more than the budget."""
        reachable = self.min_ratio()
        if reachable <= self.config.ratio + 1e-12:
            return
        prunable = 1 - self.cost(np.zeros_like(self.channels)) / self.total_cost
        lbound = self.feasible_lbound()
        fix = f" or --lbound <= {lbound:g}" if lbound is not None else \
            f" (no --lbound can meet {self.config.ratio:g}: even one channel per prunable layer keeps more)"
        raise BudgetError(
            f"budget {self.config.ratio:g} of {self.config.target} cannot be met: with every prunable layer at "
            f"the lower bound {self.config.lbound:g} the model keeps {reachable:.3f} (only {prunable:.1%} of its "
            f"{self.config.target} is in prunable layers); use --ratio >= {math.ceil(reachable * 1000) / 1000:g}"
            f"{fix}")

    def feasible_lbound(self) -> float | None:
        """The highest lower bound, rounded down to two significant digits, at which the budget is reachable
        (None when even one channel per decision keeps too much)."""
        def meets(lbound: float) -> bool:
            lower = np.array([allowed_counts(int(c), lbound, self.config.channel_round)[0] for c in self.channels])
            return self.cost(self.cheapest(-1, lower)) <= self.budget + 1e-9

        smallest = 1e-6  # one channel (or one multiple of --channel-round) per decision
        if not meets(smallest):
            return None
        highest = _highest(meets, smallest, self.config.lbound, 30)
        rounded = float(f"{highest:.2g}")
        while rounded > highest or not meets(rounded):  # rounding may land just above the bound
            rounded = float(f"{rounded - 10 ** (math.floor(math.log10(rounded)) - 1):.2g}")
            if rounded <= 0:
                return None
        return rounded

    def _affine(self, t: int, keep: np.ndarray) -> tuple[float, float]:
        """Cost as A + B * keep[t] with every other count fixed (the cost is affine in each count kept; probed at
        1 and 2, since a count of 0 may drop a block and what only the block held)."""
        probe = keep.astype(np.float64).copy()
        probe[t] = 1
        one = self.cost(probe)
        probe[t] = 2
        b = self.cost(probe) - one
        return one - b, b

    # ---- dropped blocks ---------------------------------------------------------------------------
    def _init_drops(self, graph: LayerGraph, config: EnvConfig) -> None:
        """Each decision's stage if it may drop its block (else None), and each stage's cap on drops."""
        blocks = [getattr(d, "block", None) if config.drop_blocks else None for d in graph.decisions]  # none: weights
        self.drop_caps = {b.stage: stage_cap(graph.stage_blocks[b.stage], config.drop_share) for b in blocks if b}
        self.stage = [b.stage if b is not None and self.drop_caps[b.stage] > 0 else None for b in blocks]
        if config.drop_blocks and not any(self.stage):
            raise AmcError("--drop-blocks: this model has no residual block that may be dropped (an identity shortcut "
                           "around one decision, in a stage of at least two blocks at --drop-share "
                           f"{config.drop_share:g}); search without --drop-blocks")

    def _order_drops(self) -> list[int]:
        """Droppable decisions, the one whose drop saves most first (at every decision's lower bound): the order
        in which `cheapest` spends each stage's drops."""
        base = self.cost(self.lower)
        savings = {}
        for i, stage in enumerate(self.stage):
            if stage is not None:
                probe = self.lower.copy()
                probe[i] = 0
                savings[i] = base - self.cost(probe)
        return sorted(savings, key=lambda i: (-savings[i], i))

    def _drops_left(self, keep: Sequence[int], upto: int) -> dict[str, int]:
        left = dict(self.drop_caps)
        for i in range(upto + 1):
            if self.stage[i] is not None and keep[i] == 0:
                left[self.stage[i]] -= 1
        return left

    def cheapest(self, t: int, lower: np.ndarray | None = None, keep: Sequence[int] | None = None) -> np.ndarray:
        """`keep` (default the episode's) with every decision after t at its lower bound and, in each stage, as
        many blocks after t dropped as the stage has drops left: the cheapest way to finish the episode."""
        out = np.array(self.keep if keep is None else keep, dtype=np.int64)
        out[t + 1:] = (self.lower if lower is None else lower)[t + 1:]
        left = self._drops_left(out, t)
        for i in self._drop_order:
            if i > t and left[self.stage[i]] > 0:
                out[i] = 0
                left[self.stage[i]] -= 1
        return out

    def _may_drop(self, t: int) -> bool:
        return self.stage[t] is not None and self._drops_left(self.keep, t - 1)[self.stage[t]] > 0

    def _drop_fits(self, t: int, undershoot: bool = False) -> bool:
        """Whether dropping block t keeps the budget reachable (and, unless `undershoot`, the cost not under the
        budget with every later decision whole)."""
        keep = self.keep.copy()
        keep[t] = 0
        whole = keep.copy()
        whole[t + 1:] = self.channels[t + 1:]
        return (self.cost(self.cheapest(t, keep=keep)) <= self.budget + 1e-9
                and (undershoot or self.cost(whole) >= self.budget))

    def clip_count(self, t: int, desired: float) -> int:
        """Nearest allowed count to `desired`, clipped so the budget stays reachable and is not undershot.

        Upper clip: with every later decision at its lower bound the budget must still hold.
        Lower clip: with every later decision kept whole the cost must not fall under the budget
        (only binds near the end of an episode); the upper clip wins if the two cross.
        """
        allowed = self.allowed[t] if self._may_drop(t) else self._kept_allowed[t]
        choice = int(allowed[np.argmin(np.abs(allowed - desired))])
        if not self.config.constrained:
            return choice
        if choice == 0 and self._drop_fits(t):
            return 0
        kept = self._clip_kept(t, max(choice, int(self.lower[t])))
        if allowed[0] == 0 and kept == self.lower[t]:
            keep = self.keep.copy()
            keep[t] = kept
            if self.cost(self.cheapest(t, keep=keep)) > self.budget + 1e-9 and self._drop_fits(t, undershoot=True):
                return 0  # even the lower bound breaks the budget: the block must go (the upper clip wins)
        return kept

    def _clip_kept(self, t: int, choice: int) -> int:
        """`clip_count` among the counts that keep channels."""
        allowed = self._kept_allowed[t]
        if self.cost_model is not None:
            return self._clip_monotone(t, choice)
        keep = self.cheapest(t)
        a, b = self._affine(t, keep)
        c_max = math.inf if b <= 0 else (self.budget - a) / b
        keep[t + 1:] = self.channels[t + 1:]
        a, b = self._affine(t, keep)
        c_min = -math.inf if b <= 0 else (self.budget - a) / b
        if choice < c_min:
            above = allowed[allowed >= c_min - 1e-9]
            choice = int(above[0]) if len(above) else int(allowed[-1])
        if choice > c_max + 1e-9:
            below = allowed[allowed <= c_max + 1e-9]
            choice = int(below[-1]) if len(below) else int(allowed[0])
        return choice

    def _clip_monotone(self, t: int, choice: int) -> int:
        """`clip_count` for a cost that only grows with each count (not affine): bisection over the allowed
        counts instead of solving a line."""
        allowed = self._kept_allowed[t]
        cheapest = self.cheapest(t)[t + 1:]

        def cost_at(count: int, rest: np.ndarray) -> float:
            keep = self.keep.copy()
            keep[t + 1:] = rest
            keep[t] = count
            return self.cost(keep)

        def first(predicate) -> int:  # first index where a monotone predicate turns true (len if never)
            lo, hi = 0, len(allowed)
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if predicate(int(allowed[mid])) else (mid + 1, hi)
            return lo

        over = first(lambda c: cost_at(c, cheapest) > self.budget)  # counts from here break it
        c_max = int(allowed[max(over - 1, 0)])
        reach = first(lambda c: cost_at(c, self.channels[t + 1:]) >= self.budget)
        c_min = int(allowed[min(reach, len(allowed) - 1)])
        return min(max(choice, c_min), c_max)

    # ---- observation ------------------------------------------------------------------------------
    def _static_features(self) -> np.ndarray:
        rows = []
        for d in self.decisions:
            c = d.layer
            rows.append([d.index, 0.0 if c.kind == "conv" else 1.0, c.in_channels, c.out_channels,
                         c.kernel_size, c.stride, c.in_hw[0] * c.in_hw[1]])
        feats = np.asarray(rows, dtype=np.float64)
        scale = feats.max(axis=0)
        scale[scale == 0] = 1.0
        return feats / scale

    def _observation(self) -> np.ndarray:
        t = min(self.t, len(self.decisions) - 1)
        kept = self.keep.copy()
        kept[t:] = self.channels[t:]
        reduced = (self.total_macs - self.graph.macs(kept)) / self.total_macs
        rest = self.decision_macs[t + 1:].sum() / self.total_macs
        layer = self.decision_macs[t] / self.decision_macs.max()
        obs = np.concatenate([self._static[t], [layer, reduced, min(rest, 1.0), self.prev_action]])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    # ---- gymnasium API ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.keep = self.channels.copy()
        self.prev_action = 0.0
        return self._observation(), {"decision": self.decisions[0].consumer}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.t >= len(self.decisions):
            raise RuntimeError("episode is over; call reset()")
        raw = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        t = self.t
        drop = self.stage[t] is not None and raw < DROP_BELOW * self.config.lbound
        count = self.clip_count(t, 0.0 if drop else float(np.clip(raw, self.config.lbound, 1.0)) * self.channels[t])
        self.keep[t] = count
        executed = count / self.channels[t]
        self.prev_action = executed
        self.t += 1
        info = {"decision": self.decisions[t].consumer, "keep": count, "action": executed}
        if self.t < len(self.decisions):
            return self._observation(), 0.0, False, False, info
        keep = [int(c) for c in self.keep]
        cost = self.cost(keep)
        if self.config.constrained and cost > self.budget + 1e-6:
            raise AssertionError(f"budget violated: {cost} > {self.budget} (a bug in clipping)")
        score = None if self._deferred else self.evaluate(keep)
        accuracy = float("nan") if score is None else float(score)
        info.update(self.summarize(keep), accuracy=accuracy, score=score)  # the scorer's own record, as returned
        reward = self.reward(accuracy, info["macs"], info["params"])
        return self._observation(), reward, True, False, info

    def summarize(self, keep: Sequence[int]) -> dict:
        macs = self.graph.macs(keep)
        params = self.graph.params(keep)
        return {"keep_counts": list(map(int, keep)),
                "ratios": [round(int(k) / int(c), 6) for k, c in zip(keep, self.channels)],
                "macs": macs, "params": params, "macs_ratio": macs / self.total_macs,
                "params_ratio": params / self.graph.total_params,
                **({"cost": self.cost(keep), "cost_ratio": self.cost(keep) / self.total_cost}
                   if self.cost_model is not None else {})}

    def reward(self, accuracy: float, macs: float, params: float) -> float:
        """R_err (as accuracy = 1 - error) or the accuracy-guaranteed -error * log(cost)."""
        error = 1.0 - accuracy
        if self.config.reward == "acc":
            return accuracy
        cost = macs if self.config.reward == "acc-macs" else params
        return -error * math.log(cost)

    # ---- fixed policies -------------------------------------------------------------------------
    def rounded_counts(self, ratios: Sequence[float]) -> list[int]:
        """The allowed keep count nearest each decision's `ratio * channels` (no budget clipping)."""
        return [int(a[np.argmin(np.abs(a - r * c))]) for a, c, r in zip(self.allowed, self.channels, ratios)]

    def uniform_counts(self, ratio: float) -> list[int]:
        return self.rounded_counts([ratio] * len(self.channels))

    def ramp_ratios(self, spread: float, iterations: int = 50) -> list[float]:
        """Per-decision preserve ratios of the highest linear ramp whose rounded counts meet the budget: from
        level + spread/2 at the first decision to level - spread/2 at the last, clipped to [lbound, 1]. These
        are the AMC paper's handcrafted policies: spread > 0 prunes deeper layers more, spread < 0 prunes
        shallower layers more (the better of the two with least squares and BN recalibration on the CIFAR
        ResNets, benchmarks/RESULTS.md), and spread 0 is the uniform policy."""
        n, lbound = len(self.channels), self.config.lbound
        position = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)

        def ramp(level: float) -> np.ndarray:
            return np.clip(level + spread * (0.5 - position), lbound, 1.0)

        def meets(level: float) -> bool:
            return self.cost(self.rounded_counts(ramp(level))) <= self.budget

        # below the lowest ramp the budget is the env's to refuse: the lowest is returned
        return ramp(_highest(meets, lbound - abs(spread) / 2, 1.0 + abs(spread) / 2, iterations)).tolist()

    def fit_to_budget(self, ratios, iterations: int = 50) -> list[float]:
        """`ratios` moved by one common shift in the logit of their position in [lbound, 1], the highest whose
        rounded counts meet the budget: the policy's shape kept, its cost brought to the budget (DDPG's
        warm-up with warmup_noise="budget" perturbs whole policies and fits them so)."""
        lbound = self.config.lbound
        span = 1.0 - lbound
        ratios = np.asarray(ratios, dtype=np.float64)
        dropped = np.array([s is not None for s in self.stage]) & (ratios < DROP_BELOW * lbound)  # stay dropped
        position = np.clip((ratios - lbound) / max(span, 1e-12), 1e-4, 1 - 1e-4)
        logits = np.log(position / (1 - position))

        def shifted(s: float) -> np.ndarray:
            return np.where(dropped, 0.0, lbound + span / (1 + np.exp(-(logits + s))))

        def meets(s: float) -> bool:
            return self.cost(self.rounded_counts(shifted(s))) <= self.budget

        # if no shift meets it, the lowest is returned and the env's clipping decides
        return shifted(_highest(meets, -30.0, 30.0, iterations)).tolist()

    def fair_ratio(self, iterations: int = 16) -> float:
        """The one preserve ratio that, with the decisions before the current one as made, spends the rest of
        the budget evenly over this decision and every later one (DDPG's reference with actions="share").
        Called at every step of such an episode: 16 halvings resolve ratios far finer than one channel."""
        t = self.t

        def meets(ratio: float) -> bool:
            keep = self.keep.copy()
            keep[t:] = self.rounded_counts([ratio] * len(keep))[t:]
            return self.cost(keep) <= self.budget

        return _highest(meets, self.config.lbound, 1.0, iterations)

    def uniform_ratio(self, iterations: int = 40) -> float:
        """Largest single preserve ratio whose rounded counts meet the budget (bisection)."""
        return _highest(lambda ratio: self.cost(self.uniform_counts(ratio)) <= self.budget, self.config.lbound, 1.0,
                        iterations)
