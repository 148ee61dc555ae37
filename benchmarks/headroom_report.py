"""The report of headroom.py: the histogram of the sampled policies' test top-1 after the fine-tune against the
cheap allocators', the tables, what the top decile shares, and how well each score without fine-tuning ranks
them (Kendall tau). Reads the policies file of `headroom.py sample` and finetune_grid.py's results.jsonl files
(a partial one is fine); numpy, scipy and matplotlib only.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import numpy as np
from common import mean_std, pyplot, save_figure
from grid_files import fine_tunes, read_records
from headroom import ANCHORED, CHEAP, GROUPS, NAME, SAMPLED, SEARCH, read_policies


def _expected_max(n: int) -> float:
    """Expected maximum of n standard normal draws (Blom's approximation)."""
    return statistics.NormalDist().inv_cdf((n - 0.375) / (n + 0.25)) if n > 1 else 0.0


def report(args: argparse.Namespace) -> None:
    from scipy.stats import kendalltau

    meta, policies = read_policies(args.policies)
    records = read_records(args.results)
    results, errors = fine_tunes(records), sum("error" in r for r in records)
    curves = {r["id"]: r["short"] for r in records if "short" in r}  # study curves (`bundle --curves`)
    for p in policies:
        p["tests"] = {s: results[(p["id"], s)]["test_top1"] for s in (0, 1, 2) if (p["id"], s) in results}
        p["short"] = curves.get(p["id"], {})
        p["rebuilt"] = results[(p["id"], 0)].get("heldout_rebuilt") if (p["id"], 0) in results else None
    for p in (p for p in policies if p["family"] in ANCHORED and not p["tests"]):
        # an allocator bundled once under another's name: the same keep counts, the same fine-tune
        twin = next((q for q in policies if q["keep"] == p["keep"] and q["tests"]), None)
        if twin is not None:
            p.update(tests=twin["tests"], short=twin["short"], rebuilt=twin["rebuilt"], same_as=twin["id"])
    counts = {k: sum(r.get("precision", "bf16") == k for r in results.values()) for k in ("bf16", "fp32")}
    seconds = [r["seconds"] for r in results.values() if "seconds" in r]
    done = [p for p in policies if 0 in p["tests"] and "same_as" not in p]  # each fine-tuned network once
    sampled = [p for p in done if p["family"] in SAMPLED]
    prefix = meta.get("name", NAME) + "/"
    # the exact policies by name: an allocator's family, or "search/s0" for each of the default search's exports
    cheap = {p["id"].removeprefix(prefix): p for p in policies if p["family"] in ANCHORED}
    lines = [(f"# Headroom at {100 * meta['ratio']:g}% MACs, {meta['model']} "
             f"(lbound {meta['lbound']:g})"), "",
             f"Fine-tuned with seed 0: **{len(done)} of {len(policies)} policies** ({len(sampled)} sampled of "
             f"{sum(p['family'] in SAMPLED for p in policies)}); {len(results)} fine-tunes, {errors} failed; "
             f"precision {', '.join(f'{k}: {n}' for k, n in counts.items() if n) or '-'}"
             + (f"; {statistics.median(seconds) / 60:.1f} min per fine-tune (median)" if seconds else "") + ".", ""]
    if len([n for n in counts.values() if n]) > 1:
        lines += ["**Mixed precisions**: compare fine-tunes of one precision only.", ""]

    # the allocators, with their seed spread
    lines += [("| allocator | test top-1 after FT (seeds) | FT seeds | held-out, no FT | held-out, no FT, no BN recal. "
              "| params kept | keep counts |"), "| --- | --- | --- | --- | --- | --- | --- |"]
    seed_stds = []
    for name, p in cheap.items():
        tests = [p["tests"][s] for s in sorted(p["tests"])]
        if len(tests) > 1 and "same_as" not in p:
            seed_stds.append(statistics.stdev(tests))
        twin = f" (= {p['same_as'].removeprefix(prefix)})" if "same_as" in p else ""
        lines.append(f"| {name}{twin} | {mean_std(tests)} | {len(tests)} | {100 * p['heldout_bn']:.2f} | "
                     f"{100 * p['heldout_nobn']:.2f} | {p['params_ratio']:.3f} | {' '.join(map(str, p['keep']))} |")
    seed_std = statistics.mean(seed_stds) if seed_stds else None
    lines.append("")

    # the best sampled policy against each allocator
    if sampled:
        best = max(sampled, key=lambda p: p["tests"][0])
        tests = np.array([p["tests"][0] for p in sampled])
        lines += [(f"Sampled policies (seed 0): n = {len(sampled)}, median {100 * np.median(tests):.2f}, "
                  f"90th percentile {100 * np.percentile(tests, 90):.2f}, best {100 * best['tests'][0]:.2f} "
                  f"(`{best['id']}`, keep {' '.join(map(str, best['keep']))}, params {best['params_ratio']:.3f})."), "",
                  ("| against | allocator (mean over its seeds) | best sampled - allocator | seed std of the allocator "
                  "| sampled >= allocator + 0.5 |"), "| --- | --- | --- | --- | --- |"]
        for name in ("shallower", "knapsack", "uniform", "deeper", "reference"):
            if name in cheap and cheap[name]["tests"]:
                ref = list(cheap[name]["tests"].values())
                mean = statistics.mean(ref)
                std = f"{100 * statistics.stdev(ref):.2f}" if len(ref) > 1 else "-"
                lines.append(f"| {name} | {100 * mean:.2f} | **{100 * (best['tests'][0] - mean):+.2f}** | {std} | "
                             f"{int((tests >= mean + 0.005).sum())} of {len(tests)} |")
        searches = {name: p for name, p in cheap.items() if p["family"] == SEARCH and p["tests"]}
        allocators = {name: statistics.mean(p["tests"].values()) for name, p in cheap.items()
                      if p["family"] in CHEAP and p["tests"]}
        if searches and allocators:
            top = max(allocators, key=allocators.get)
            lines += ["", ("| the default search's export | test top-1 after FT (seeds) | held-out, no FT | "
                           f"- best allocator ({top}, {100 * allocators[top]:.2f}) | - best sampled (seed 0) |"),
                      "| --- | --- | --- | --- | --- |"]
            for name, p in searches.items():
                mean = statistics.mean(p["tests"].values())
                lines.append(f"| {name} (`{' '.join(map(str, p['keep']))}`) | {mean_std(list(p['tests'].values()))} "
                             f"| {100 * p['heldout_bn']:.2f} | **{100 * (mean - allocators[top]):+.2f}** | "
                             f"{100 * (mean - best['tests'][0]):+.2f} |")
            means = [statistics.mean(p["tests"].values()) for p in searches.values()]
            lines.append(f"| mean over {len(means)} search seeds | {100 * statistics.mean(means):.2f} | | "
                         f"**{100 * (statistics.mean(means) - allocators[top]):+.2f}** | "
                         f"{100 * (statistics.mean(means) - best['tests'][0]):+.2f} |")
        if seed_std is not None:
            lines += ["", (f"Selection bias: with a fine-tune seed std of {100 * seed_std:.2f} (mean over the "
                      f"allocators), the best of {len(sampled)} single-seed fine-tunes of equally good policies "
                      f"would lie about {100 * seed_std * _expected_max(len(sampled)):.2f} above their mean; a "
                      "margin of that size needs `bundle --confirm-top K` (seeds 1 and 2) before it counts.")]
        confirmed = [p for p in sampled if len(p["tests"]) > 1]
        if confirmed:
            lines += ["", "| confirmed policy | family | seed 0 | all seeds |", "| --- | --- | --- | --- |"]
            for p in sorted(confirmed, key=lambda p: -statistics.mean(p["tests"].values())):
                lines.append(f"| `{p['id']}` | {p['family']} | {100 * p['tests'][0]:.2f} | "
                             f"{mean_std(list(p['tests'].values()))} |")
        lines.append("")

        # by family
        lines += [("| family | n | test top-1, seed 0: mean ± std | best | held-out, no FT (mean) "
                  "| params kept (mean) |"), "| --- | --- | --- | --- | --- | --- |"]
        for family in SAMPLED:
            members = [p for p in sampled if p["family"] == family]
            if members:
                lines.append(f"| {family} | {len(members)} | {mean_std([p['tests'][0] for p in members])} | "
                             f"{100 * max(p['tests'][0] for p in members):.2f} | "
                             f"{100 * statistics.mean(p['heldout_bn'] for p in members):.2f} | "
                             f"{statistics.mean(p['params_ratio'] for p in members):.3f} |")
        lines.append("")

    # what the top decile shares (every policy, ranked by its seed-0 fine-tune)
    if len(done) >= 10:
        ranked = sorted(done, key=lambda p: -p["tests"][0])
        top, rest = ranked[:max(1, len(ranked) // 10)], ranked[max(1, len(ranked) // 10):]
        stages = list(done[0]["stage_params"])

        def row(label: str, ps: list[dict]) -> str:
            keep = np.mean([p["keep"] for p in ps], axis=0)
            return (f"| {label} | {len(ps)} | {100 * statistics.mean(p['tests'][0] for p in ps):.2f} | "
                    + " | ".join(f"{statistics.mean(p['stage_params'][s] for p in ps):.3f}" for s in stages)
                    + f" | {statistics.mean(p['params_ratio'] for p in ps):.3f} | "
                    f"{100 * statistics.mean(p['heldout_bn'] for p in ps):.2f} | "
                    f"{100 * statistics.mean(p['heldout_nobn'] for p in ps):.2f} | "
                    f"{' '.join(f'{k:.1f}' for k in keep)} |")

        lines += [("The top decile by test top-1 (seed 0) against the rest: parameters kept per stage (share of the "
                  "stage), scores without fine-tuning, mean keep counts."), "",
                  "| policies | n | test top-1 | " + " | ".join(f"params {s}" for s in stages)
                  + " | params | held-out | held-out, no BN recal. | keep counts |",
                  "|" + " --- |" * (7 + len(stages)), row("top decile", top), row("the rest", rest)]
        if "shallower" in cheap and 0 in cheap["shallower"]["tests"]:
            lines.append(row("the ramp", [cheap["shallower"]]))
        lines += ["", "Top decile: " + ", ".join(f"`{p['id'].removeprefix(prefix)}`" for p in top), ""]

    # which cheap score ranks the fine-tuned policies
    if len(done) >= 5:
        scores = {"held-out, BN recalibrated": lambda p: p["heldout_bn"],
                  "held-out, no BN recalibration": lambda p: p["heldout_nobn"],
                  "params kept": lambda p: p["params_ratio"]}
        scores.update({f"params kept in {s}": (lambda p, s=s: p["stage_params"][s]) for s in done[0]["stage_params"]})
        steps = sorted({int(n) for curve in curves.values() for n in curve})
        scores.update({f"held-out after a short fine-tune of {n} steps": (lambda p, n=str(n): p["short"].get(n))
                       for n in steps})  # only the policies with a curve: n is given where it is fewer
        subsets = [("all", done)] + [(g, [p for p in done if p["group"] == g]) for g in dict.fromkeys(GROUPS.values())]
        subsets = [(label, ps) for label, ps in subsets if len(ps) >= 5]
        lines += ["Kendall tau (p) of each cheap score (before fine-tuning, or after a short one) against test "
                  "top-1 after the full fine-tune (seed 0):", "",
                  "| score | " + " | ".join(f"{label} (n={len(ps)})" for label, ps in subsets) + " |",
                  "|" + " --- |" * (1 + len(subsets))]
        for label, score in scores.items():
            cells = []
            for _, ps in subsets:
                pairs = [(score(p), p["tests"][0]) for p in ps if score(p) is not None]
                tau, p_value = kendalltau(*zip(*pairs)) if len(pairs) >= 5 else (math.nan, math.nan)
                n = f", n={len(pairs)}" if len(pairs) < len(ps) else ""
                cells.append(f"{tau:.2f} ({p_value:.0e}{n})" if not math.isnan(tau) else "-")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        gaps = [abs(p["rebuilt"] - p["heldout_bn"]) for p in done if p["rebuilt"] is not None]
        if gaps:
            lines += ["", (f"Rebuilt there against scored here (held-out, BN recalibrated): max |difference| "
                      f"{100 * max(gaps):.2f} points over {len(gaps)} policies.")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text)
    if args.figure and done:
        plot(policies, done, cheap, Path(args.figure))


def plot(policies: list[dict], done: list[dict], cheap: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colours = dict(zip(SAMPLED, plt.get_cmap("tab10").colors))
    sampled = [p for p in done if p["family"] in SAMPLED]
    ax = axes[0]
    if sampled:
        values = [100 * p["tests"][0] for p in sampled]
        bins = np.linspace(min(values) - 0.25, max(values) + 0.25, 30)
        stacks = [[100 * p["tests"][0] for p in sampled if p["family"] == f] for f in SAMPLED]
        ax.hist(stacks, bins=bins, stacked=True, color=[colours[f] for f in SAMPLED],
                label=[f"{f} ({len(s)})" for f, s in zip(SAMPLED, stacks)])
    styles = {"shallower": "tab:red", "knapsack": "tab:green", "uniform": "black", "deeper": "tab:gray",
              "reference": "tab:purple", SEARCH: "tab:blue"}
    for name, p in cheap.items():
        if p["tests"]:
            tests = [100 * t for t in p["tests"].values()]
            mean = statistics.mean(tests)
            std = statistics.stdev(tests) if len(tests) > 1 else 0.0
            colour = styles[p["family"]]
            ax.axvline(mean, color=colour, linestyle=":" if p["family"] == SEARCH else "--",
                       label=f"{name} {mean:.2f} ± {std:.2f}")
            ax.axvspan(mean - std, mean + std, color=colour, alpha=0.12)
    ax.set_xlabel("test top-1 after the fine-tune (%), seed 0")
    ax.set_ylabel("policies")
    ax.set_title(f"{len(sampled)} sampled policies at the budget")
    ax.legend(fontsize=7)
    for ax, key, label in ((axes[1], "heldout_nobn", "held-out top-1 before FT, no BN recalibration (%)"),
                           (axes[2], "params_ratio", "share of parameters kept")):
        scale = 100 if key.startswith("heldout") else 1
        for family in (*SAMPLED, *ANCHORED):
            ps = [p for p in done if p["family"] == family]
            if ps:
                cheap_one = family in ANCHORED
                ax.scatter([scale * p[key] for p in ps], [100 * p["tests"][0] for p in ps], s=40 if cheap_one else 14,
                           marker="*" if cheap_one else "o", label=family, color=styles.get(family) or colours[family])
        ax.set_xlabel(label)
        ax.set_ylabel("test top-1 after FT (%), seed 0")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    save_figure(fig, path)
    print(f"figure -> {path}")
