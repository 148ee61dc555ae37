"""What peers.py does with finished rows: latency against the original, the fine-tune of the best methods,
the markdown table and the figure of the search curves."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import latency_pair, mean_std, pyplot, save_figure
from peer_bench import Bench
from peer_rows import write_row

import amc
from amc.runs import RunDir


def measure_latency(bench: Bench, rows: list[dict]) -> None:
    """Batch-1, one-thread torch latency of every exported model not measured yet, against the original."""
    torch_threads = torch.get_num_threads()
    for row in rows:
        if "heldout_top1" in row and "latency" not in row:
            pruned = amc.load_pruned(row["run_dir"])
            row["latency"] = latency_pair(bench.model, pruned, bench.info.input_shape, bench.args.latency_rounds)
            write_row(row["run_dir"], row)
    torch.set_num_threads(torch_threads)


def finetune_best(bench: Bench, rows: list[dict]) -> None:
    """Fine-tune the best seed of the three methods with the highest held-out top-1 (or of every method) with
    `amc finetune --distill`'s recipe (`amc.finetune.DEFAULT_CONFIG`) for `--finetune-epochs`."""
    from amc.finetune import DEFAULT_CONFIG, finetune

    args = bench.args
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        if "heldout_top1" in r:
            by_method.setdefault(r["method"], []).append(r)
    ranked = sorted(by_method, key=lambda m: -statistics.mean(r["heldout_top1"] for r in by_method[m]))
    for method in ranked if args.finetune_all else ranked[:3]:
        row = max(by_method[method], key=lambda r: r["heldout_top1"])
        done = row.get("finetune", {})
        if done.get("epochs") == args.finetune_epochs and done.get("seed", 0) == args.finetune_seed:
            continue
        run_dir = Path(row["run_dir"])
        print(f"fine-tuning {method} seed {row['seed']} ({run_dir}) for {args.finetune_epochs} epochs", flush=True)
        config = replace(DEFAULT_CONFIG, epochs=args.finetune_epochs, precision=args.precision, seed=args.finetune_seed)
        resume = RunDir(run_dir).has_finetune_checkpoint()  # an interrupted (or finished but unrecorded) fine-tune
        record = finetune(run_dir, config, distill=True, data=bench.dataset, resume=resume, overwrite=not resume)
        row["finetune"] = {"epochs": record["epochs"], "seed": args.finetune_seed,
                           "test_top1": record["test_top1"], "heldout_top1": record["heldout_top1"]}
        write_row(run_dir, row)


def table(bench: Bench, rows: list[dict]) -> str:
    args = bench.args
    tuned = any("finetune" in r for r in rows)
    header = ["method", "seeds", "held-out top-1 (no FT)", "test top-1", "MACs (ratio)", "params (ratio)",
              "latency ms (speed-up)", "search time"] + (["test top-1 after FT"] if tuned else [])
    original_ms = [r["latency"]["original_ms"] for r in rows if "latency" in r]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines.append(f"| original | - | {100 * bench.heldout.top1(bench.model):.2f} | "
                 f"{100 * bench.test.top1(bench.model):.2f} "
                 f"| {bench.original_macs / 1e6:.2f}M (1.000) | {bench.original_params / 1e3:.1f}K (1.000) | "
                 f"{f'{statistics.median(original_ms):.2f}' if original_ms else '-'} | - |" + (" - |" if tuned else ""))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        if "reason" in rs[0]:
            lines.append(f"| {method} | - | {rs[0]['short_reason']} |" + " - |" * (len(header) - 3))
            continue
        latency = [r["latency"] for r in rs if "latency" in r]
        latency_cell = (f"{statistics.mean(x['pruned_ms'] for x in latency):.2f} "
                        f"({statistics.mean(x['speedup'] for x in latency):.2f}x)") if latency else "-"
        seconds = statistics.mean(r["search_seconds"] for r in rs)

        def mean(key: str, rs: list[dict] = rs) -> float:
            return statistics.mean(r[key] for r in rs)

        cells = [method, str(len(rs)), mean_std([r["heldout_top1"] for r in rs]),
                 mean_std([r["test_top1"] for r in rs]),
                 f"{mean('macs') / 1e6:.2f}M ({mean('macs_ratio'):.3f})",
                 f"{mean('params') / 1e3:.1f}K ({mean('params_ratio'):.3f})", latency_cell,
                 f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"]
        if tuned:
            ft = [r["finetune"] for r in rs if "finetune" in r]
            cells.append(f"{100 * ft[0]['test_top1']:.2f} ({ft[0]['epochs']} ep.)" if ft else "-")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"\n{args.model}, MACs budget {args.ratio:g} of {bench.original_macs / 1e6:.2f}M, "
             f"lower bound {args.lbound:g}, {args.candidates} candidates per search, "
             f"search scores in {args.precision}"
             + (f" on the first {args.heldout_limit} held-out images" if args.heldout_limit else "")
             + (", searchers racing (hopeless candidates dropped after a prefix)" if args.racing else "")
             + "; every reported figure fp32 on the full splits, no fine-tuning unless stated. "
             "Mean ± std over seeds where there are several."]
    reasons = {r["method"]: r["reason"] for r in rows if "reason" in r}  # each not-run peer's own, in full
    notes += [f"\n{method}: {reason}." for method, reason in reasons.items()]
    return "\n".join(lines) + "\n" + "\n".join(notes)


def plot(rows: list[dict], path: Path, args: argparse.Namespace) -> None:
    plt = pyplot()
    colors = {"random": "tab:gray", "tpe": "tab:green", "ddpg": "tab:blue", "ddpg+bn": "tab:purple",
              "tpe+bn": "tab:olive", "ddpg+bn-shallower": "tab:red", "ddpg+bn-knapsack": "tab:cyan"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, color in colors.items():
        for i, r in enumerate(r for r in rows if r["method"] == method and r.get("curve")):
            c = np.asarray(r["curve"])
            ax.step(c[:, 0] / 60, 100 * c[:, 1], where="post", color=color, alpha=0.8,
                    label=method if i == 0 else None)
    references = {"uniform": ("black", "--"), "uniform+bn": ("black", ":"), "shallower-more+bn": ("tab:brown", ":")}
    for r in rows:  # the fixed policies as horizontal lines: what a search must beat
        if r["method"] in references and "search_score" in r:
            color, style = references[r["method"]]
            ax.axhline(100 * r["search_score"], color=color, linestyle=style, linewidth=1, label=r["method"])
    ax.set_xlabel("search wall time (min, sum of candidate times)")
    subset = f"first {args.heldout_limit}" if args.heldout_limit else "5,000"
    ax.set_ylabel(f"best held-out top-1 so far (%, {subset} images, {args.precision})")
    ax.set_title(f"{args.model} at {args.ratio:g} of the MACs, no fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
