"""The report's matplotlib figures as PNG bytes: the per-layer policy and the search curve.

matplotlib (the `report` extra) is imported only here, through `Figure` (no pyplot: no global backend or state).
"""

from __future__ import annotations

import io
import math

import numpy as np

from amc.agents import AGENTS, default_anchor
from amc.baselines import BASELINE_NAMES
from amc.errors import AmcError
from amc.report.run import LayerRow, Run, finite, fully_scored, pct, target_name, target_ratio


def figure_class():
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend or state is touched
    except ImportError:
        raise AmcError("reports need matplotlib; install it with pip install 'amc-compress[report]'") from None
    return Figure


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _macs_unit(values) -> tuple[float, str]:
    peak = max([abs(v) for v in values if v is not None] or [1])
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if peak >= scale:
            return scale, unit
    return 1.0, ""


def layers_figure(run: Run, rows: list[LayerRow]) -> bytes:
    """Preserve ratio per decision (top) over the MACs of its layers before and after pruning (bottom)."""
    Figure = figure_class()
    n = len(rows)
    width = min(max(8.0, 0.3 * n + 2.5), 24.0)
    fig = Figure(figsize=(width, 6.8))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1], "hspace": 0.08})
    x = np.arange(n)
    ratios = [r.ratio for r in rows]
    what = "density (kept weights / weights)" if run.fine_grained else "preserve ratio (kept / channels)"
    top.bar(x, ratios, width=0.75, color="tab:blue", label="best policy")
    lbound = run.search.get("lbound")
    if lbound is not None:
        top.axhline(lbound, color="grey", linestyle=":", linewidth=1, label=f"lower bound {lbound:g}")
    top.set_ylim(0, 1.08)
    top.set_ylabel(what)
    top.grid(axis="y", alpha=0.3)
    _legend_outside(top)
    s = run.summary
    episode = "?" if s.best_episode is None else s.best_episode
    top.set_title(f"{run.search.get('model', '?')}: best policy of {s.agent or '?'} "
                  f"(episode {episode}), {target_name(run)} {100 * target_ratio(run):.1f}% "
                  "of the original", fontsize=10)

    scale, unit = _macs_unit([r.macs_before for r in rows])
    bottom.bar(x, [r.macs_before / scale for r in rows], width=0.75, color="lightgrey", edgecolor="grey",
               linewidth=0.5, label="original")
    if all(r.macs_after is not None for r in rows):
        bottom.bar(x, [r.macs_after / scale for r in rows], width=0.45, color="tab:orange",
                   label="nonzero weights" if run.fine_grained else "pruned")
    bottom.set_ylabel(f"MACs ({unit})" + ("" if run.fine_grained else " of its layers"))
    bottom.grid(axis="y", alpha=0.3)
    _legend_outside(bottom)

    step = max(1, math.ceil(n / 100))  # past ~100 labels, name every few
    bottom.set_xticks(x[::step])
    bottom.set_xticklabels([r.name for r in rows][::step], rotation=90, fontsize=8 if n <= 60 else 6)
    bottom.set_xlim(-0.6, n - 0.4)
    bottom.set_xlabel("layer pruned by each decision (" + ("its weights" if run.fine_grained else
                                                           "its input channels, and its producer's outputs") + ")")
    return _png(fig)


def search_figure(run: Run, warmup: int) -> bytes:
    """Reward per episode with the best so far (top) and the cost of each episode's policy (bottom)."""
    Figure = figure_class()
    from matplotlib.ticker import MaxNLocator
    kept = [(r, whole) for r, whole in zip(run.episodes, fully_scored(run)) if finite(r.get("reward"))]
    records = [r for r, _ in kept]
    episodes = np.array([r["episode"] for r in records])
    rewards = np.array([r["reward"] for r in records], dtype=float)
    raced = np.array([not whole for _, whole in kept], dtype=bool)
    reward_is_accuracy = run.search.get("reward", "acc") == "acc"
    fig = Figure(figsize=(10, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1], "hspace": 0.08})
    n = len(run.episodes)
    if warmup > 0:
        for ax in (top, bottom):
            ax.axvspan(-0.5, warmup - 0.5, color="tab:orange", alpha=0.12, linewidth=0,
                       label=f"warm-up ({warmup} episodes, no learning)" if ax is top else None)
    size = 14 if n <= 200 else 7
    in_warmup = episodes < warmup
    if len(records) > 1:  # else the star below is the one episode
        for phase, color, label in ((in_warmup, "tab:orange", "warm-up"),
                                    (~in_warmup, "tab:blue", "learning" if warmup else "")):
            for whole in (True, False):  # raced scores are prefix estimates: hollow, never the best so far
                chosen = phase & (raced != whole)
                if chosen.any():
                    name = ", ".join(filter(None, [label, None if whole else "raced out: partial score"]))
                    top.scatter(episodes[chosen], rewards[chosen], s=size, alpha=0.7, linewidths=0.8,
                                color=color if whole else "none", edgecolors=color,
                                label=f"episode ({name})" if name else "episode")
    if len(rewards) > 1 and (~raced).any():
        best = np.maximum.accumulate(rewards[~raced])  # drawn on to the last episode
        top.step([*episodes[~raced], episodes[-1]], [*best, best[-1]], where="post", color="black",
                 linewidth=1.5, label="best fully scored so far")
    baselines = run.summary.baselines or {}
    for name, style in (("uniform", ":"), ("shallower", "--")):
        if reward_is_accuracy and finite((baselines.get(name) or {}).get("heldout_top1")):
            value = baselines[name]["heldout_top1"]
            top.axhline(value, color="tab:green", linestyle=style, linewidth=1.2,
                        label=f"{BASELINE_NAMES[name]} at the same budget: {pct(value)}")
    if len(rewards):
        exported = np.flatnonzero(episodes == run.summary.best_episode)
        b = int(exported[0]) if len(exported) else int(np.argmax(np.where(raced, -np.inf, rewards)))
        top.scatter([episodes[b]], [rewards[b]], marker="*", s=160, color="tab:red", zorder=5,
                    label=f"{'best' if len(rewards) > 1 else 'the policy'}: "
                          f"{pct(rewards[b]) if reward_is_accuracy else f'{rewards[b]:.4f}'} (episode {episodes[b]})")
    if reward_is_accuracy:
        top.set_ylabel("held-out top-1 of the candidate\n(no fine-tuning; the reward)")
        top.yaxis.set_major_formatter(_percent_formatter())
    else:
        top.set_ylabel(f"reward ({run.search.get('reward')}: -error x log cost)")
    baseline = (run.summary.baseline or {}).get("heldout_top1")
    agent = run.search.get("agent", "?")
    title = f"{run.search.get('model', '?')} search, agent {agent}"
    if getattr(AGENTS.get(agent), "episodes_title", ""):  # an agent of this library says how it walks
        title += f": {AGENTS[agent].episodes_title}"
    elif warmup:
        default = default_anchor(constrained=run.search.get("reward", "acc") == "acc")
        anchor = (run.search.get("agent_options") or {}).get("anchor", default)
        named = BASELINE_NAMES.get(anchor, anchor) if isinstance(anchor, str) else "given"
        title += f": warm-up around the {named} policy" if anchor not in (None, "none") else ": uniform-random warm-up"
    if baseline is not None:
        title += f"  (original model: {pct(baseline)} held-out)"
    top.set_title(title, fontsize=10)
    top.grid(alpha=0.3)
    _legend_outside(top)

    for key, color, label in (("macs_ratio", "tab:purple", "MACs"), ("params_ratio", "tab:green", "params")):
        values = [(r["episode"], r[key]) for r in run.episodes if finite(r.get(key))]
        if values:
            e, v = zip(*values)
            bottom.scatter(e, v, s=size * 0.6, color=color, alpha=0.6, zorder=3, label=f"{label} of the policy")
    budget = run.summary.budget_ratio
    if budget is not None:
        bottom.axhline(budget, color="tab:red", linestyle="--", linewidth=1, zorder=2,
                       label=f"budget: {run.search.get('target', 'macs')} <= {budget:g}")
    bottom.set_ylabel("share of the original")
    bottom.set_xlabel("episode")
    bottom.grid(alpha=0.3)
    _legend_outside(bottom)
    bottom.set_ylim(0, 1.05)  # shares of the original
    if n == 1:
        bottom.set_xlim(-1, 1)
        bottom.set_xticks([0])
    else:
        bottom.set_xlim(-0.5, max(n - 0.5, 1))
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def _legend_outside(ax) -> None:
    """Legend right of the axes: it never hides a point or a bar."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8, frameon=False)


def _percent_formatter():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda v, _: f"{100 * v:.0f}%" if abs(100 * v - round(100 * v)) < 1e-9 else f"{100 * v:.1f}%")


__all__ = ["figure_class", "layers_figure", "search_figure"]
