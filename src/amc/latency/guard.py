"""A latency budget that holds on the real network, not only in the lookup table.

The search clips actions against a per-layer latency table (`amc.latency.table`) calibrated on a few whole
networks. That calibration drifts: a shared machine is slower at one moment than another, and a non-uniform
policy does not run as fast as a uniform one with the same table sum (benchmarks/RESULTS.md measured a 2-6%
overshoot). So the best policy is measured against the original side by side, during the search every
`CHECK_EVERY` episodes (when the best has changed) and before export (`FINAL_REPEATS` times, the median
counts); when the measured ratio and the predicted one disagree by more than `SLACK`, the table's
calibration is refitted to the checks so far (robustly: the median over them), the budget in milliseconds
follows, and the best policy is chosen again among the episodes that meet the refitted budget. A ratio of
two networks timed in alternating rounds survives machine load far better than either absolute time, which
is why every check measures a pair.
"""

from __future__ import annotations

import copy
from contextlib import ExitStack

import numpy as np
import torch
import torch.nn as nn

from amc.blocks import stage_cap
from amc.budget import Budget, EnvConfig, allowed_counts, nearest_counts
from amc.graph import LayerGraph
from amc.latency import measure
from amc.latency.table import LatencyModel, build_latency_model
from amc.pruning import ChannelPruner

CHECK_EVERY = 25     # episodes between measurements of a new best policy during the search
SLACK = 0.02         # relative disagreement of measured and predicted ratio tolerated without a refit
FINAL_ATTEMPTS = 3   # measure-refit-reselect rounds before export
FINAL_REPEATS = 3    # independent side-by-side measurements per final check, their median ratio counts:
                     # one measurement of a 1-2 ms network moved by +-4% on an idle machine (RESULTS.md)


def measure_interleaved(nets: list[nn.Module], input_shape: tuple, config, rounds: int = 8) -> list[float]:
    """Milliseconds per network, measured in alternating rounds (A B C A B C ...) so that a slow moment of a
    shared machine hits all of them; each network's figure is its fastest round median."""
    # what a user deploys: fresh contiguous (NCHW) copies, whatever layout scoring left behind
    nets = [copy.deepcopy(net).to(memory_format=torch.contiguous_format) for net in nets]
    settings = dict(backend=config.latency_backend, batch=config.latency_batch, threads=config.latency_threads)
    with ExitStack() as stack:
        runs = [stack.enter_context(measure.runner(net, input_shape, **settings)) for net in nets]
        best = [float("inf")] * len(nets)
        for _ in range(rounds):
            for i, run in enumerate(runs):
                best[i] = min(best[i], float(np.median(measure.time_calls(run, warmup=3, repeats=15,
                                                                          min_seconds=0.05))))
    return best


CALIBRATION_RATIOS = (1.0, 0.6, 0.3)  # full, and two uniform prunings spanning the range a budget lands in


def _uniform_keeps(graph: LayerGraph, env_config: EnvConfig) -> tuple[list, list[list[int]]]:
    allowed = [allowed_counts(d.channels, env_config.lbound, env_config.channel_round) for d in graph.decisions]
    channels = [d.channels for d in graph.decisions]
    keeps = [nearest_counts(allowed, channels, [ratio] * len(channels)) for ratio in CALIBRATION_RATIOS]
    return allowed, keeps


def _record_calibration(latency: LatencyModel, labels: list[str], points: list) -> None:
    latency.info["calibration"] = [{"policy": label, "measured_ms": m, "predicted_ms": latency.predict(k)}
                                   for label, (k, m) in zip(labels, points)]


def calibrated_latency_model(model: nn.Module, graph: LayerGraph, env_config: EnvConfig, config,
                             saved_calibration: dict | None = None) -> LatencyModel:
    """Layer lookup table for the latency target, calibrated on three whole-network measurements (or, when a
    search resumes, on the calibration it had last, so that its budget clipping does not move)."""
    allowed, keeps = _uniform_keeps(graph, env_config)
    latency = build_latency_model(model, graph, allowed, backend=config.latency_backend,
                                  threads=config.latency_threads, batch=config.latency_batch)
    if saved_calibration is not None:
        latency.restore_calibration(saved_calibration)
        return latency
    shrink = ChannelPruner(model, graph, None, selection="magnitude", reconstruct=False)
    dropping = _most_blocks_dropped(graph, keeps[1], env_config) if env_config.drop_blocks else None
    nets = [model] + [shrink.prune(keep)[0] for keep in keeps[1:] + ([dropping] if dropping else [])]
    measured = measure_interleaved(nets, graph.input_shape, config)
    points = list(zip(keeps, measured))
    latency.calibrate(points)
    if dropping:  # what a dropped block saves, from a whole network without them
        latency.fit_blocks(dropping, measured[-1])
    labels = ["uniform 1.0", "uniform 0.6", "uniform 0.3"] + (["uniform 0.6, blocks dropped"] if dropping else [])
    _record_calibration(latency, labels, points + ([(dropping, measured[-1])] if dropping else []))
    return latency


def _most_blocks_dropped(graph: LayerGraph, keep: list[int], env_config: EnvConfig) -> list[int] | None:
    """`keep` with the first blocks of every stage dropped, as many as the stage may lose (None if none may)."""
    keep, left = list(keep), {s: stage_cap(n, env_config.drop_share) for s, n in graph.stage_blocks.items()}
    for block in graph.blocks:
        if left[block.stage] > 0:
            keep[block.decision], left[block.stage] = 0, left[block.stage] - 1
    return keep if 0 in keep else None


def calibrate_at_budget(latency: LatencyModel, model: nn.Module, graph: LayerGraph, at_budget: list[int],
                        config) -> LatencyModel:
    """`latency` refitted through the full network and `at_budget` (the uniform policy that meets the budget):
    the sum of layer times bends away from a line at the extremes, and the search's candidates lie near it. A
    new model: a budget built over the old one keeps its costs (the caller builds the budget again)."""
    shrink = ChannelPruner(model, graph, None, selection="magnitude", reconstruct=False)
    measured = measure_interleaved([model, shrink.prune(at_budget)[0]], graph.input_shape, config)
    points = [(latency.points[0][0], measured[0]), *latency.points[1:], (at_budget, measured[1])]
    latency = copy.copy(latency)
    latency.calibrate(points, fit=[points[0], points[-1]])
    dropped = latency.dropped_point
    if dropped:
        latency.fit_blocks(*dropped)
    _record_calibration(latency, ["uniform 1.0", "uniform 0.6", "uniform 0.3", "uniform at the budget"]
                        + (["uniform 0.6, blocks dropped"] if dropped else []), points + ([dropped] if dropped else []))
    return latency


class LatencyGuard:
    """Measures the best policy against the original and refits the latency calibration when they disagree.

    `build(keep)` makes the pruned network of a policy; `budget` is the budget over `latency`. A check that
    refits says so (`entry["refit"]`); the guard then holds the refitted model and the budget over it
    (`latency`, `budget`, both new objects), for the caller to search on and save. Every check is kept in
    `latency.info["checks"]`.
    """

    def __init__(self, latency: LatencyModel, budget: Budget, original: nn.Module, build, config):
        self.latency, self.budget, self.original, self.build, self.config = latency, budget, original, build, config
        self.checks: list[dict] = latency.info.setdefault("checks", [])
        self._checked = {c["episode"] for c in self.checks}

    def due(self, episode: int, best: dict | None) -> bool:
        return (best is not None and (episode + 1) % CHECK_EVERY == 0
                and best.get("episode") not in self._checked)

    def check(self, record: dict, rounds: int = 8, repeats: int = 1) -> dict:
        """Measure `record`'s policy against the original (`repeats` times, the median ratio counts); refit the
        calibration through both when the measured ratio and the predicted one disagree by more than SLACK.
        Returns the check's entry."""
        keep, full = list(record["keep"]), self.budget.channels.tolist()
        nets = [self.original, self.build(keep)]
        pairs = [measure_interleaved(nets, self.budget.graph.input_shape, self.config, rounds=rounds)
                 for _ in range(repeats)]
        ratios = [pruned / original for original, pruned in pairs]
        middle = int(np.argsort(ratios)[len(ratios) // 2])  # the pair with the median ratio (odd repeats)
        (original_ms, pruned_ms), measured = pairs[middle], ratios[middle]
        predicted = self.latency.predict(keep) / self.latency.predict(full)
        entry = {"episode": record.get("episode"), "original_ms": original_ms, "pruned_ms": pruned_ms,
                 "measured_ratio": measured, "predicted_ratio": predicted, "layer_sum": self.latency.layer_sum(keep),
                 "refit": abs(measured - predicted) > SLACK * predicted}
        if repeats > 1:
            entry["measured_ratios"] = ratios
        self.checks.append(entry)
        if entry["refit"]:
            entry["refit"] = self._refit(self.latency.layer_sum(full))
        self._checked.add(entry["episode"])
        return entry

    def _refit(self, full_sum: float) -> bool:
        """Refit offset and scale to every check so far: each measured ratio r of a policy with layer sum S fixes
        the offset in units of the scale, u = (r * S_full - S) / (1 - r); the median over the checks resists
        a moment of machine load that one pair of measurements cannot (a shared machine swings by 2x), and
        the scale puts the full network at the median measured original. With one check this is the line
        through the original and that policy."""
        points = [(c["measured_ratio"], c["layer_sum"], c["original_ms"]) for c in self.checks
                  if "layer_sum" in c and c["measured_ratio"] < 1]
        if not points:
            return False
        u = float(np.median([(r * full_sum - s) / (1 - r) for r, s, _ in points]))
        if u + full_sum <= 0:
            return False  # no positive scale fits: keep the calibration rather than invert the costs
        scale = float(np.median([ms for _, _, ms in points])) / (u + full_sum)
        self.latency = self.latency.with_line(scale, u * scale)
        self.budget = self.budget.refitted(self.latency.predict)
        return True

    def best_within(self, records: list[dict]) -> dict | None:
        """The highest-reward record (first of equals) whose policy meets the budget as now calibrated."""
        within = [r for r in records if self.budget.meets(r["keep"])]
        return max(within, key=lambda r: r["reward"]) if within else None  # max keeps the first of equals

    def final(self, best: dict, log: list[dict]) -> tuple[dict, dict]:
        """Check the best policy before export; refit and choose again while the budget does not hold. Returns
        the policy to export and its last check (`budget` is then the budget as last refitted)."""
        entry = self.check(best, repeats=FINAL_REPEATS)
        for _ in range(FINAL_ATTEMPTS - 1):
            chosen = self.best_within(log) if entry["refit"] else None
            if chosen is None or chosen.get("episode") == best.get("episode"):
                break
            best = chosen
            entry = self.check(best, repeats=FINAL_REPEATS)
        entry["met"] = entry["measured_ratio"] <= self.config.ratio * (1 + SLACK)
        return best, entry
