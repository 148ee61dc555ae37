"""The budget: which keep counts a policy may take and what it costs, with no environment around it.

A `Budget` holds the allowed keep counts of every decision of a `LayerGraph`, the exact cost of any vector
of counts (MACs or parameters from the graph, or a latency model's prediction), the budget itself
(`limit`, a share of the original's cost) and the clipping that keeps it a hard guarantee while a policy is
decided one count at a time. The fixed policies that meet it (uniform, the paper's ramps, a shape fitted to
it, the fair share of what is left) are its helpers. It is pure: nothing here scores, trains or steps an
episode; `amc.env.CompressionEnv` walks it, the agents and the latency guard use it. A refitted latency
model makes a new budget (`refitted`); a budget never changes after it is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from amc.blocks import DROP_SHARE, stage_cap
from amc.errors import AmcError, BudgetError

RAMP_SPREAD = 0.5  # preserve ratio difference between the first and last decision of a handcrafted ramp

if TYPE_CHECKING:  # only for annotations: a budget needs no torch_pruning at import
    from amc.graph import LayerGraph

TARGETS = ("macs", "params", "latency")
REWARDS = ("acc", "acc-macs", "acc-params")
DROP_BELOW = 0.5  # with drop_blocks, an action under DROP_BELOW * lbound at a block's decision drops the block


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


def nearest_counts(allowed: Sequence[np.ndarray], channels: Sequence[int], ratios: Sequence[float]) -> list[int]:
    """The count in each decision's `allowed` nearest its `ratio * channels` (no budget clipping)."""
    return [int(a[np.argmin(np.abs(a - r * c))]) for a, c, r in zip(allowed, channels, ratios)]


def check_budget(graph: LayerGraph, config: EnvConfig) -> None:
    """Refuse a budget the graph's cost model shows unreachable (BudgetError), before anything is scored, on
    the exact MACs or parameters. A latency budget is checked once its table is measured
    (`amc.search.build_budget`)."""
    if config.constrained and config.target != "latency":
        Budget(graph, config)


def _highest(meets: Callable[[float], bool], lo: float, hi: float, iterations: int) -> float:
    """The highest level in [lo, hi] that `meets` the budget, by bisection (`meets` is monotone: lower levels
    cost less); `lo` when none does, `hi` when all do."""
    if meets(hi):
        return hi
    for _ in range(iterations if meets(lo) else 0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return lo



class Budget:
    """Allowed counts, exact costs and clipping for the decisions of `graph` under `config`'s budget.

    `cost_model(keep)` replaces the graph's exact cost (e.g. predicted latency in ms); it must not decrease
    when any count grows. The "latency" target requires one. A budget that cannot be met is refused at
    construction (BudgetError naming the ratio and lower bound that would be), unless `check` is False.
    """

    def __init__(self, graph: LayerGraph, config: EnvConfig = EnvConfig(),
                 cost_model: Callable[[Sequence[float]], float] | None = None, *, check: bool = True):
        if config.target == "latency" and cost_model is None:
            raise AmcError("the latency target needs a latency model (amc.latency.table.build_latency_model)")
        self.graph, self.config, self.cost_model = graph, config, cost_model
        self.channels = np.array([d.channels for d in graph.decisions], dtype=np.int64)
        self._init_drops(graph, config)
        self.allowed = [np.concatenate([[0], a]) if self.stage[i] is not None else a for i, a in
                        enumerate(allowed_counts(int(c), config.lbound, config.channel_round) for c in self.channels)]
        self.kept_allowed = [a[a > 0] for a in self.allowed]  # the counts that keep channels (no drop)
        self.lower = np.array([a[0] for a in self.kept_allowed], dtype=np.int64)  # the smallest count kept
        self._drop_order = self._order_drops()
        self.total_cost = self.cost(self.channels)
        self.limit = config.ratio * self.total_cost  # the most a policy may cost
        if config.constrained and check:
            self.check_feasible()

    def refitted(self, cost_model: Callable[[Sequence[float]], float]) -> "Budget":
        """The same budget over a refitted cost model (a recalibrated latency table during a search): costs and
        limit follow. Not refused if now unreachable: the clipping then keeps every count at its lowest."""
        return Budget(self.graph, self.config, cost_model, check=False)

    # ---- costs ------------------------------------------------------------------------------------
    def cost(self, keep: Sequence[float]) -> float:
        """The budgeted resource (MACs, params or modelled latency) of the network pruned to `keep`."""
        if self.cost_model is not None:
            return float(self.cost_model(keep))
        return float(self.graph.macs(keep) if self.config.target == "macs" else self.graph.params(keep))

    def meets(self, keep: Sequence[float]) -> bool:
        """Whether `keep` costs no more than the budget (to the relative tolerance of a refitted model)."""
        return self.cost(keep) <= self.limit * (1 + 1e-9)

    def min_ratio(self) -> float:
        """Smallest cost ratio reachable: every decision at its lower bound, and with drop_blocks as many blocks
        dropped as each stage may lose."""
        return self.cost(self.cheapest(-1, self.channels, self.lower)) / self.total_cost

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
            return self.cost(self.cheapest(-1, self.channels, lower)) <= self.limit + 1e-9

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

    def drops_left(self, keep: Sequence[int], upto: int) -> dict[str, int]:
        """Blocks each stage may still drop after the decisions up to `upto` of `keep`."""
        left = dict(self.drop_caps)
        for i in range(upto + 1):
            if self.stage[i] is not None and keep[i] == 0:
                left[self.stage[i]] -= 1
        return left

    def cheapest(self, t: int, keep: Sequence[int], lower: np.ndarray | None = None) -> np.ndarray:
        """`keep` with every decision after t at its lower bound and, in each stage, as many blocks after t
        dropped as the stage has drops left: the cheapest way to finish a policy decided up to t."""
        out = np.array(keep, dtype=np.int64)
        out[t + 1:] = (self.lower if lower is None else lower)[t + 1:]
        left = self.drops_left(out, t)
        for i in self._drop_order:
            if i > t and left[self.stage[i]] > 0:
                out[i] = 0
                left[self.stage[i]] -= 1
        return out

    def _drop_fits(self, t: int, keep: np.ndarray, undershoot: bool = False) -> bool:
        """Whether dropping block t keeps the budget reachable (and, unless `undershoot`, the cost not under the
        budget with every later decision whole)."""
        keep = keep.copy()
        keep[t] = 0
        whole = keep.copy()
        whole[t + 1:] = self.channels[t + 1:]
        return (self.cost(self.cheapest(t, keep)) <= self.limit + 1e-9
                and (undershoot or self.cost(whole) >= self.limit))

    # ---- clipping ---------------------------------------------------------------------------------
    def clip_count(self, t: int, desired: float, keep: np.ndarray) -> int:
        """Nearest allowed count to `desired` for decision t of a policy decided up to t - 1 (`keep`), clipped
        so the budget stays reachable and is not undershot.

        Upper clip: with every later decision at its lower bound the budget must still hold.
        Lower clip: with every later decision kept whole the cost must not fall under the budget
        (only binds near the end of an episode); the upper clip wins if the two cross.
        """
        may_drop = self.stage[t] is not None and self.drops_left(keep, t - 1)[self.stage[t]] > 0
        allowed = self.allowed[t] if may_drop else self.kept_allowed[t]
        choice = int(allowed[np.argmin(np.abs(allowed - desired))])
        if not self.config.constrained:
            return choice
        if choice == 0 and self._drop_fits(t, keep):
            return 0
        kept = self._clip_kept(t, max(choice, int(self.lower[t])), keep)
        if allowed[0] == 0 and kept == self.lower[t]:
            probe = keep.copy()
            probe[t] = kept
            if self.cost(self.cheapest(t, probe)) > self.limit + 1e-9 and self._drop_fits(t, keep, undershoot=True):
                return 0  # even the lower bound breaks the budget: the block must go (the upper clip wins)
        return kept

    def _clip_kept(self, t: int, choice: int, keep: np.ndarray) -> int:
        """`clip_count` among the counts that keep channels."""
        allowed = self.kept_allowed[t]
        if self.cost_model is not None:
            return self._clip_monotone(t, choice, keep)
        probe = self.cheapest(t, keep)
        a, b = self._affine(t, probe)
        c_max = math.inf if b <= 0 else (self.limit - a) / b
        probe[t + 1:] = self.channels[t + 1:]
        a, b = self._affine(t, probe)
        c_min = -math.inf if b <= 0 else (self.limit - a) / b
        if choice < c_min:
            above = allowed[allowed >= c_min - 1e-9]
            choice = int(above[0]) if len(above) else int(allowed[-1])
        if choice > c_max + 1e-9:
            below = allowed[allowed <= c_max + 1e-9]
            choice = int(below[-1]) if len(below) else int(allowed[0])
        return choice

    def _clip_monotone(self, t: int, choice: int, keep: np.ndarray) -> int:
        """`clip_count` for a cost that only grows with each count (not affine): bisection over the allowed
        counts instead of solving a line."""
        allowed = self.kept_allowed[t]
        cheapest = self.cheapest(t, keep)[t + 1:]

        def cost_at(count: int, rest: np.ndarray) -> float:
            probe = keep.copy()
            probe[t + 1:] = rest
            probe[t] = count
            return self.cost(probe)

        def first(predicate) -> int:  # first index where a monotone predicate turns true (len if never)
            lo, hi = 0, len(allowed)
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if predicate(int(allowed[mid])) else (mid + 1, hi)
            return lo

        over = first(lambda c: cost_at(c, cheapest) > self.limit)  # counts from here break it
        c_max = int(allowed[max(over - 1, 0)])
        reach = first(lambda c: cost_at(c, self.channels[t + 1:]) >= self.limit)
        c_min = int(allowed[min(reach, len(allowed) - 1)])
        return min(max(choice, c_min), c_max)

    def decide(self, t: int, action: float, keep: np.ndarray) -> int:
        """The count decision t keeps when an agent answers `action` (a preserve ratio) after the decisions before
        t in `keep`: under DROP_BELOW * lbound at a droppable block, a drop; else the ratio raised to lbound,
        rounded and clipped (`clip_count`)."""
        channels = int(self.channels[t])
        drop = self.stage[t] is not None and action < DROP_BELOW * self.config.lbound
        return self.clip_count(t, 0.0 if drop else float(np.clip(action, self.config.lbound, 1.0)) * channels, keep)

    def play(self, ratios: Sequence[float]) -> list[int]:
        """The keep counts per-decision `ratios` turn into, answered as an agent answers them (float32 actions,
        one decision after the other through `decide`)."""
        keep = self.channels.copy()
        for t, ratio in enumerate(ratios):
            keep[t] = self.decide(t, float(np.float32(ratio)), keep)
        return [int(c) for c in keep]

    # ---- fixed policies ---------------------------------------------------------------------------
    def summarize(self, keep: Sequence[int]) -> dict:
        """What a policy keeps: its counts, ratios, MACs and parameters (and shares), and a modelled cost."""
        macs = self.graph.macs(keep)
        params = self.graph.params(keep)
        return {"keep_counts": list(map(int, keep)),
                "ratios": [round(r, 6) for r in self.ratios_of(keep)],
                "macs": macs, "params": params, "macs_ratio": macs / float(self.graph.total_macs),
                "params_ratio": params / self.graph.total_params,
                **({"cost": self.cost(keep), "cost_ratio": self.cost(keep) / self.total_cost}
                   if self.cost_model is not None else {})}

    def rounded_counts(self, ratios: Sequence[float]) -> list[int]:
        """The allowed keep count nearest each decision's `ratio * channels` (no budget clipping)."""
        return nearest_counts(self.allowed, self.channels, ratios)

    def uniform_counts(self, ratio: float) -> list[int]:
        return self.rounded_counts([ratio] * len(self.channels))

    def uniform_policy(self) -> list[int]:
        """The uniform policy's keep counts as an agent's answers reach them: `uniform_ratio` played."""
        return self.play([self.uniform_ratio()] * len(self.channels))

    def ratios_of(self, keep: Sequence[int]) -> list[float]:
        """Each decision's keep count as a share of its channels (what `play` turns back into `keep`)."""
        return [int(k) / int(c) for k, c in zip(keep, self.channels)]

    def uniform_ratio(self, iterations: int = 40) -> float:
        """Largest single preserve ratio whose rounded counts meet the budget (bisection)."""
        return _highest(lambda ratio: self.cost(self.uniform_counts(ratio)) <= self.limit, self.config.lbound, 1.0,
                        iterations)

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
            return self.cost(self.rounded_counts(ramp(level))) <= self.limit

        # below the lowest ramp the budget is the clipping's to refuse: the lowest is returned
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
            return self.cost(self.rounded_counts(shifted(s))) <= self.limit

        # if no shift meets it, the lowest is returned and the clipping decides
        return shifted(_highest(meets, -30.0, 30.0, iterations)).tolist()

    def fair_ratio(self, t: int, keep: Sequence[int], iterations: int = 16) -> float:
        """The one preserve ratio that, with the decisions before t as in `keep`, spends the rest of the budget
        evenly over decision t and every later one (DDPG's reference with actions="share"). Called at every
        step of such an episode: 16 halvings resolve ratios far finer than one channel."""
        def meets(ratio: float) -> bool:
            probe = np.array(keep, dtype=np.int64)
            probe[t:] = self.rounded_counts([ratio] * len(probe))[t:]
            return self.cost(probe) <= self.limit

        return _highest(meets, self.config.lbound, 1.0, iterations)


__all__ = ["DROP_BELOW", "REWARDS", "TARGETS", "Budget", "EnvConfig", "allowed_counts", "check_budget",
           "nearest_counts"]
