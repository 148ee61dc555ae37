"""A latency budget that holds on the real network, not only in the lookup table.

The search clips actions against a per-layer latency table (`amc.latency_model`) calibrated on a few whole
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
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from amc.env import CompressionEnv, EnvConfig, allowed_counts
from amc.errors import BudgetError
from amc.graph import LayerGraph
from amc.latency_model import LatencyModel
from amc.policy import write_json_atomic
from amc.pruning import ChannelPruner

CHECK_EVERY = 25     # episodes between measurements of a new best policy during the search
SLACK = 0.02         # relative disagreement of measured and predicted ratio tolerated without a refit
FINAL_ATTEMPTS = 3   # measure-refit-reselect rounds before export
FINAL_REPEATS = 3    # independent side-by-side measurements per final check, their median ratio counts:
                     # one measurement of a 1-2 ms network moved by +-4% on an idle machine (RESULTS.md)


def measure_interleaved(nets: list[nn.Module], input_shape: tuple, config, rounds: int = 8) -> list[float]:
    """Milliseconds per network, measured in alternating rounds (A B C A B C ...) so that a slow moment of a
    shared machine hits all of them; each network's figure is its fastest round median."""
    from amc.latency import runner, time_calls

    # what a user deploys: fresh contiguous (NCHW) copies, whatever layout scoring left behind
    nets = [copy.deepcopy(net).to(memory_format=torch.contiguous_format) for net in nets]
    settings = dict(backend=config.latency_backend, batch=config.latency_batch, threads=config.latency_threads)
    with ExitStack() as stack:
        runs = [stack.enter_context(runner(net, input_shape, **settings)) for net in nets]
        best = [float("inf")] * len(nets)
        for _ in range(rounds):
            for i, run in enumerate(runs):
                best[i] = min(best[i], float(np.median(time_calls(run, warmup=3, repeats=15, min_seconds=0.05))))
    return best


def calibrated_latency_model(model: nn.Module, graph: LayerGraph, env_config: EnvConfig, config,
                             saved_calibration: dict | None = None) -> LatencyModel:
    """Layer lookup table for the latency target, calibrated on whole-network measurements (or, when a
    search resumes, on the calibration it had last, so that its budget clipping does not move)."""
    from amc.latency_model import build_latency_model

    allowed = [allowed_counts(d.channels, env_config.lbound, env_config.channel_round) for d in graph.decisions]
    latency = build_latency_model(model, graph, allowed, backend=config.latency_backend,
                                  threads=config.latency_threads, batch=config.latency_batch)
    if saved_calibration is not None:
        latency.restore_calibration(saved_calibration)
        return latency
    shrink = ChannelPruner(model, graph, None, selection="magnitude", reconstruct=False)
    keeps = [[int(a[np.argmin(np.abs(a - ratio * d.channels))]) for a, d in zip(allowed, graph.decisions)]
             for ratio in (1.0, 0.6, 0.3)]  # full, and two uniform prunings spanning the range a budget lands in
    nets = [model] + [shrink.prune(keep)[0] for keep in keeps[1:]]
    points = list(zip(keeps, measure_interleaved(nets, graph.input_shape, config)))
    latency.calibrate(points)
    labels = ["uniform 1.0", "uniform 0.6", "uniform 0.3"]
    if env_config.constrained:
        # the sum of layer times bends away from a line at the extremes: refit through the full network and
        # the uniform policy that meets this budget, where the search's candidates will lie
        try:
            probe = CompressionEnv(graph, lambda keep: 0.0, env_config, cost_model=latency.predict)
            at_budget = probe.uniform_counts(probe.uniform_ratio())
            measured = measure_interleaved([model, shrink.prune(at_budget)[0]], graph.input_shape, config)
            points = [(keeps[0], measured[0]), *points[1:], (at_budget, measured[1])]
            latency.calibrate([points[0], points[-1]])
            labels.append("uniform at the budget")
        except BudgetError:
            pass  # the environment will report the unreachable budget with its minimum
    latency.info["calibration"] = [{"policy": label, "measured_ms": m, "predicted_ms": latency.predict(k)}
                                   for label, (k, m) in zip(labels, points)]
    return latency


class LatencyGuard:
    """Measures the best policy against the original and refits the latency calibration when they disagree.

    `build(keep)` makes the pruned network of a policy; `path` is where the calibration is saved, so that a
    resumed search clips against the calibration it had last. Every check is kept in `latency.info["checks"]`.
    """

    def __init__(self, latency: LatencyModel, env: CompressionEnv, original: nn.Module, build, config, path: Path):
        self.latency, self.env, self.original, self.build = latency, env, original, build
        self.config, self.path = config, path
        self.checks: list[dict] = latency.info.setdefault("checks", [])
        self._checked = {c["episode"] for c in self.checks}

    def due(self, episode: int, best: dict | None) -> bool:
        return (best is not None and (episode + 1) % CHECK_EVERY == 0
                and best.get("episode") not in self._checked)

    def check(self, record: dict, rounds: int = 8, repeats: int = 1) -> dict:
        """Measure `record`'s policy against the original (`repeats` times, the median ratio counts); refit the
        calibration through both when the measured ratio and the predicted one disagree by more than SLACK.
        Returns the check's entry."""
        keep, full = list(record["keep"]), self.env.channels.tolist()
        nets = [self.original, self.build(keep)]
        pairs = [measure_interleaved(nets, self.env.graph.input_shape, self.config, rounds=rounds)
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
            if entry["refit"]:
                self.env.refresh_costs()
        self._checked.add(entry["episode"])
        write_json_atomic(self.path, self.latency.calibration())
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
        self.latency.scale = float(np.median([ms for _, _, ms in points])) / (u + full_sum)
        self.latency.offset_ms = u * self.latency.scale
        return True

    def best_within(self, records: list[dict]) -> dict | None:
        """The highest-reward record (first of equals) whose policy meets the budget as now calibrated."""
        within = [r for r in records if self.env.cost(r["keep"]) <= self.env.budget * (1 + 1e-9)]
        return max(within, key=lambda r: r["reward"]) if within else None  # max keeps the first of equals

    def final(self, best: dict, log: list[dict]) -> tuple[dict, dict]:
        """Check the best policy before export; refit and choose again while the budget does not hold.
        Returns the policy to export and its last check."""
        entry = self.check(best, repeats=FINAL_REPEATS)
        for _ in range(FINAL_ATTEMPTS - 1):
            chosen = self.best_within(log) if entry["refit"] else None
            if chosen is None or chosen.get("episode") == best.get("episode"):
                break
            best = chosen
            entry = self.check(best, repeats=FINAL_REPEATS)
        entry["met"] = entry["measured_ratio"] <= self.config.ratio * (1 + SLACK)
        write_json_atomic(self.path, self.latency.calibration())
        return best, entry
