"""DDPG against the uniform and random baselines on one model, budget and data, over several seeds.

    python benchmarks/compare_agents.py --model resnet20 --weights ../shared/data/pretrained/cifar10jpeg/resnet20.pt \
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --episodes 300 --seeds 0 1 2 --out runs/bench/r20

Each (agent, seed) is an ordinary run directory; finished runs are skipped and unfinished ones resumed, so
the script can be killed and restarted. Prints a markdown table (mean and spread over seeds) at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench_args import add_model_and_data  # run as a script: benchmarks/ is on sys.path
from common import mean_std, search_resumably

from amc.config import SearchConfig
from amc.data import load_dataset
from amc.runs import RunDir


def run_all(args: argparse.Namespace) -> list[dict]:
    dataset = load_dataset(args.data, args.data_dir)
    rows = []
    for agent in args.agents:
        for seed in ([0] if agent == "uniform" else args.seeds):
            out = Path(args.out) / f"{agent}-seed{seed}"
            if RunDir(out).has_summary():
                summary = RunDir(out).read_summary().to_dict()
            else:
                config = SearchConfig(model=args.model, weights=args.weights, data=args.data, data_dir=args.data_dir,
                                      ratio=args.ratio, agent=agent, episodes=args.episodes, seed=seed,
                                      warmup=args.warmup, bn_recalibration=args.bn_recalibration,
                                      channel_round=args.channel_round, heldout_limit=args.heldout_limit,
                                      racing=args.racing,
                                      precision=args.precision, threads=args.threads,
                                      agent_options=json.loads(args.agent_options) if agent == "ddpg" else {})
                t0, resume = time.time(), RunDir(out).has_state()
                summary = search_resumably(config, dataset, out, f"{agent} seed {seed}").summary
                if not resume:  # setup, all episodes and the export, in this process
                    print(f"  {agent} seed {seed}: wall time {time.time() - t0:.0f}s", flush=True)
            rows.append({"agent": agent, "seed": seed, **summary})
            print(json.dumps({k: rows[-1][k] for k in ("agent", "seed", "heldout_top1", "test_top1", "macs_ratio",
                                                       "search_seconds")}), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| agent | seeds | held-out top-1 (no fine-tune) | test top-1 | MACs ratio | search time / run |",
             "| --- | --- | --- | --- | --- | --- |"]
    for agent in dict.fromkeys(r["agent"] for r in rows):
        rs = [r for r in rows if r["agent"] == agent]

        def fmt(key: str, rs: list[dict] = rs) -> str:
            values = [r[key] for r in rs]
            spread = f" (min {100 * min(values):.2f}, max {100 * max(values):.2f})" if len(values) > 1 else ""
            return mean_std(values) + spread

        lines.append(f"| {agent} | {len(rs)} | {fmt('heldout_top1')} | {fmt('test_top1')} | "
                     f"{statistics.mean(r['macs_ratio'] for r in rs):.4f} | "
                     f"{statistics.mean(r['search_seconds'] for r in rs) / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_and_data(parser)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--agents", nargs="+", default=["uniform", "random", "ddpg"])
    parser.add_argument("--bn-recalibration", type=int, default=0)
    parser.add_argument("--channel-round", type=int, default=1)
    parser.add_argument("--heldout-limit", type=int)
    parser.add_argument("--racing", action="store_true", help="stop scoring hopeless candidates early")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--agent-options", default="{}", help="JSON dict of DDPG settings")
    parser.add_argument("--threads", type=int, help="torch CPU threads per search")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = run_all(args)
    print(table(rows))
    Path(args.out, "table.md").write_text(table(rows) + "\n")


if __name__ == "__main__":
    main()
