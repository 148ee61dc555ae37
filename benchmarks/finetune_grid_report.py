"""Tables and the figure of `finetune_grid.py collect`: methods after the same fine-tune per budget, the spread
of the fixed allocations, the ranking study (Kendall tau of each cheap score against the full fine-tune), the
finalist stage replayed on every search's top candidates, and where DDPG's best policy came from."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from common import mean_std, pyplot, save_figure
from grid_files import fine_tunes, read_jobs, read_records
from peer_methods import TORCH_PRUNING_BEST, FixedPolicy, Search, names
from peer_rows import rows_under
from scipy.stats import kendalltau

FIXED = names(FixedPolicy, recalibrate=True)
CHEAP = FIXED + (TORCH_PRUNING_BEST,)
SEARCHERS = names(Search, recalibrate=True)


def _budget(name: str) -> tuple[str, float]:
    """'budgets-r20-r0.2' -> ('resnet20', 0.2)."""
    _, net, ratio = name.split("-")
    return f"resnet{net[1:]}", float(ratio[1:])


def load(bundle: Path, result_files: list[str]) -> tuple[list[dict], dict]:
    jobs, records = read_jobs(bundle), read_records(result_files)
    results = fine_tunes(records)
    curves = {r["id"]: r for r in records if "short" in r}  # a study curve: from a fine-tune's record or its own
    for (job_id, _), r in results.items():  # each fine-tune record sees its policy's curve
        if job_id in curves:
            r.update({k: curves[job_id][k] for k in ("short", "heldout_nobn") if k in curves[job_id]})
    return jobs, results


def rows_by_budget(jobs: list[dict], results: dict) -> dict[str, list[dict]]:
    """One entry per (budget, method, seed) row of peers.py, with its fine-tune results by FT seed."""
    out: dict[str, list[dict]] = {}
    for job in jobs:
        tests = {s: results[(job["id"], s)]["test_top1"] for s in job["ft_seeds"] if (job["id"], s) in results}
        first = results.get((job["id"], job["ft_seeds"][0]), {})
        for tag in job["tags"]:
            if tag["role"] == "row":
                out.setdefault(tag["budget"], []).append({
                    **tag, "job": job["id"], "tests": tests, "heldout": job["heldout_expected"],
                    "heldout_rebuilt": first.get("heldout_rebuilt"), "macs_ratio": job["macs_ratio"],
                    "exact": first.get("data_exact")})
    return out


def finalist_choice(candidates: list[dict], steps: int, k: int) -> dict | None:
    """Successive halving replayed on recorded short fine-tune curves: all at `steps`, the better half at
    2x`steps`, ... (as amc.finalists.successive_halving; ties keep the search's better candidate). None
    unless all `k` candidates have their curve and fine-tune."""
    if len(candidates) < k:
        return None
    alive = sorted(candidates, key=lambda c: c["rank"])
    total = steps
    while len(alive) > 1:
        if any(str(total) not in c["short"] for c in alive):
            return None
        alive = sorted(alive, key=lambda c: (-c["short"][str(total)], c["rank"]))[:math.ceil(len(alive) / 2)]
        total += steps
    return alive[0]


def finalists_by_run(jobs: list[dict], results: dict) -> dict[tuple, list[dict]]:
    runs: dict[tuple, list[dict]] = {}
    for job in jobs:
        r = results.get((job["id"], 0))
        if not r or "short" not in r:
            continue
        for tag in job["tags"]:
            if tag["role"] == "finalist":
                runs.setdefault((tag["budget"], tag["method"], tag["seed"]), []).append(
                    {"rank": tag["rank"], "short": r["short"], "test": r["test_top1"]})
    return runs


def methods_table(rows: list[dict], finalist_rows: dict[str, list[float]], peers: dict) -> list[str]:
    lines = ["| method | seeds | held-out top-1, no FT | test top-1 after FT | FT runs | MACs | search time |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    order = [m for m in CHEAP + SEARCHERS if m in by_method]
    for method in order:
        rs = by_method[method]
        tests = [t for r in rs for t in ([r["tests"].get(0)] if method in SEARCHERS else r["tests"].values())
                 if t is not None]
        seconds = [peers.get((r["budget"], method, r["seed"]), {}).get("search_seconds") for r in rs]
        seconds = [s for s in seconds if s is not None]
        lines.append(f"| {method} | {len(rs)} | {mean_std([r['heldout'] for r in rs])} | **{mean_std(tests)}** | "
                     f"{len(tests)} | {statistics.mean(r['macs_ratio'] for r in rs):.3f} | "
                     f"{statistics.mean(seconds):.0f} s |" if seconds else " - |")
    for name, tests in finalist_rows.items():
        lines.append(f"| {name} | {len(tests)} | - | **{mean_std(tests)}** | {len(tests)} | - | - |")
    return lines


def spread_table(by_budget: dict[str, list[dict]]) -> list[str]:
    lines = [("| budget | best fixed (FT seed 0 / 1) | worst fixed | best - worst, seed 0 / 1 | FT seed noise "
             "(mean abs. seed 0 - seed 1) |"), "| --- | --- | --- | --- | --- |"]
    for budget, rows in sorted(by_budget.items()):
        fixed = [r for r in rows if r["method"] in FIXED and 0 in r["tests"] and 1 in r["tests"]]
        if len(fixed) < 2:
            continue
        spreads, bests, worsts = [], [], []
        for s in (0, 1):
            ranked = sorted(fixed, key=lambda r: -r["tests"][s])
            bests.append(f"{ranked[0]['method']} {100 * ranked[0]['tests'][s]:.2f}")
            worsts.append(f"{ranked[-1]['method']} {100 * ranked[-1]['tests'][s]:.2f}")
            spreads.append(100 * (ranked[0]["tests"][s] - ranked[-1]["tests"][s]))
        noise = statistics.mean(abs(r["tests"][0] - r["tests"][1]) for r in fixed) * 100
        lines.append(f"| {budget} | {' / '.join(bests)} | {' / '.join(worsts)} | "
                     f"{spreads[0]:.2f} / {spreads[1]:.2f} | {noise:.2f} |")
    return lines


def study_table(jobs: list[dict], results: dict, budget: str) -> list[str]:
    points = []
    for job in jobs:
        r = results.get((job["id"], 0))
        if not r or "short" not in r or not any(t["budget"] == budget for t in job["tags"]):
            continue
        tag = next(t for t in job["tags"] if t["budget"] == budget)
        points.append({"test": r["test_top1"], "bn": r["heldout_rebuilt"], "nobn": r.get("heldout_nobn"),
                       "search": tag.get("search_score"), **{f"s{k}": v for k, v in r["short"].items()}})
    if len(points) < 5:
        return [f"(only {len(points)} policies with a study curve at {budget})"]
    lines = [(f"{len(points)} policies at {budget}; Kendall tau of each score with test top-1 after the full "
             "fine-tune (seed 0):"), "", "| score | Kendall tau | p |", "| --- | --- | --- |"]
    names = [("nobn", "held-out, no FT, no BN recalibration"), ("bn", "held-out, no FT, BN recalibrated (fp32)"),
             ("search", "the search's own score (bf16)")]
    names += [(k, f"held-out after {k[1:]} short-FT steps") for k in points[0] if k.startswith("s") and
              k[1:].isdigit()]
    for key, label in names:
        pairs = [(p[key], p["test"]) for p in points if p.get(key) is not None]
        if len(pairs) >= 5:
            tau, p = kendalltau(*zip(*pairs))
            lines.append(f"| {label} | {tau:.3f} | {p:.1e} |")
    return lines


def phase_table(root: Path = Path("runs/bench")) -> list[str]:
    """Where each DDPG search's best candidate came from: its anchor (episode 0), the warm-up around it, or
    the learned phase; and the best reward of each phase (fully scored candidates)."""
    lines = [("| budget | method | seed | warm-up episodes | best episode | from | best reward: anchor / warm-up / "
             "learned | last decision at the lower bound: warm-up / learned |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    from amc.config import SearchConfig
    from amc.run_names import EPISODES_FILE
    from amc.runs import RunDir

    for log_file in sorted(root.glob(f"budgets-*/ddpg*/seed*/{EPISODES_FILE}")):
        run = RunDir(log_file.parent)
        if not run.has_summary():
            continue
        config = SearchConfig.from_dict(run.settings("tabulated"))
        warmup = config.warmup_episodes
        log, summary = run.read_episodes(), run.read_summary()
        full = max(r.get("scored_images", 0) for r in log)
        best = (summary.finalists or {}).get("search_best_episode")
        if best is None:
            best = summary.best_episode
        phase = "anchor" if best == 0 else "warm-up" if best < warmup else "learned"

        def top(rs: list[dict], full: int = full) -> str:
            rs = [r["reward"] for r in rs if r.get("scored_images", full) >= full]
            return f"{100 * max(rs):.2f}" if rs else "-"

        # the budget's clipping starving the last decision
        def at_bound(rs: list[dict], lbound: float = config.lbound) -> str:
            lowest = lbound + 1 / 64 + 1e-9  # within one channel of the bound at 64 channels
            return f"{100 * statistics.mean(r['ratios'][-1] <= lowest for r in rs):.0f}%" if rs else "-"

        path = run.path
        lines.append(f"| {path.parent.parent.name} | {path.parent.name} | {path.name[4:]} | {warmup} | {best} | "
                     f"**{phase}** | {top(log[:1])} / {top(log[1:warmup])} / {top(log[warmup:])} | "
                     f"{at_bound(log[1:warmup])} / {at_bound(log[warmup:])} |")
    return lines


def curves_table(by_budget: dict[str, list[dict]], results: dict) -> list[str]:
    """Would a short fine-tune order the fixed allocations as the full one does? Held-out top-1 after N
    short-FT steps beside the mean test top-1 after the full fine-tune."""
    lines = []
    for budget, rows in sorted(by_budget.items()):
        rows = [r for r in rows if r["method"] in CHEAP and (r["job"], 0) in results
                and "short" in results[(r["job"], 0)]]
        if len(rows) < 2:
            continue
        steps = list(results[(rows[0]["job"], 0)]["short"])
        lines += [f"{budget}:", "", "| allocation | held-out, no FT | " + " | ".join(f"{s} steps" for s in steps)
                  + " | test after full FT |", "|" + " --- |" * (len(steps) + 3)]
        for r in sorted(rows, key=lambda r: -statistics.mean(r["tests"].values())):
            short = results[(r["job"], 0)]["short"]
            lines.append(f"| {r['method']} | {100 * r['heldout']:.2f} | "
                         + " | ".join(f"{100 * short[s]:.2f}" for s in steps)
                         + f" | {100 * statistics.mean(r['tests'].values()):.2f} |")
        lines.append("")
    return lines


def collect(args) -> None:
    bundle, out = Path(args.bundle), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs, results = load(bundle, args.results)
    by_budget = rows_by_budget(jobs, results)
    finalist_runs = finalists_by_run(jobs, results)
    peers = {(budget, row["method"], row["seed"]): row for budget in by_budget
             for _, row in rows_under(Path("runs/bench", budget))}
    for budget, rows in by_budget.items():  # a row merged into a finalist's job: its figure from peer.json
        for r in rows:
            if r["heldout"] is None:
                r["heldout"] = peers[(budget, r["method"], r["seed"])]["heldout_top1"]
    text = [(f"{len(results)} fine-tunes from {len(jobs)} policies; devices: "
            f"{sorted({r.get('gpu') or r['device'] for r in results.values()})}; data bit-identical: "
            f"{sorted({r['data_exact'] for r in results.values()})}")]
    drift = [abs(r["heldout_rebuilt"] - j["heldout_expected"]) for j in jobs for s in j["ft_seeds"]
             if (r := results.get((j["id"], s))) and j["heldout_expected"] is not None]
    if drift:
        text.append(f"rebuilt policies against their recorded held-out top-1: max |diff| {100 * max(drift):.2f} "
                    f"points over {len(drift)} fine-tunes")
    for budget, rows in sorted(by_budget.items()):
        finalist_rows = {}
        for method in SEARCHERS:
            for steps in (50, 100, 200):
                tests = []
                for (b, m, seed), cands in finalist_runs.items():
                    if b == budget and m == method and (pick := finalist_choice(cands, steps, args.k)):
                        tests.append(pick["test"])
                if tests:
                    finalist_rows[f"{method} + finalists (K={args.k}, {steps} steps)"] = tests
        text += ["", f"### {budget}", ""] + methods_table(rows, finalist_rows, peers)
    text += ["", "### Spread of the fixed allocations", ""] + spread_table(by_budget)
    for budget in sorted({t["budget"] for j in jobs for t in j["tags"] if t["role"] == "study"}):
        text += ["", "### Ranking study", ""] + study_table(jobs, results, budget)
    text += ["", "### Short fine-tunes of the fixed allocations against their full fine-tune", ""]
    text += curves_table(by_budget, results)
    text += ["", "### Where DDPG's best candidate came from", ""] + phase_table()
    (out / "grid.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    plot(by_budget, out / "pareto.png")


def plot(by_budget: dict[str, list[dict]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, net in zip(axes, ("resnet20", "resnet56")):
        lines: dict[str, list[tuple[float, float, float]]] = {}
        for budget, rows in by_budget.items():
            model, ratio = _budget(budget)
            if model != net:
                continue
            for method in CHEAP + SEARCHERS:
                rs = [r for r in rows if r["method"] == method]
                tests = [t for r in rs for t in ([r["tests"].get(0)] if method in SEARCHERS else r["tests"].values())
                         if t is not None]
                if tests:
                    lines.setdefault(method, []).append(
                        (ratio, 100 * statistics.mean(tests), 100 * statistics.stdev(tests) if len(tests) > 1 else 0))
        colours = plt.get_cmap("tab20").colors
        for i, (method, pts) in enumerate(lines.items()):
            pts.sort()
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="os^vD<>"[i % 7],
                        capsize=3, label=method, linestyle="--" if method in CHEAP else "-", color=colours[i % 20])
        ax.set_title(f"{net}: test top-1 after the same fine-tune")
        ax.set_xlabel("MACs kept (share of the original)")
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize=7)
    save_figure(fig, path)
