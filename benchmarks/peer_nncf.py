"""NNCF's unstructured magnitude pruning against amc's fine-grained mode, at the same share of the parameters.

    PYTHONPATH=src:benchmarks python benchmarks/peer_nncf.py --model resnet56 \
        --weights ../shared/data/pretrained/cifar10jpeg/resnet56.pt \
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --ratio 0.2 --episodes 100 \
        --out runs/bench/nncf-r56-p0.2 [--finetune-epochs 20]

The budget is amc's (`amc search --method fine-grained --target params`): `--ratio` of *all* the parameters,
biases and BatchNorm included, while only conv and linear weights are pruned. So every row aims at the same
number of kept weights, the most that budget allows (`target_weights`); each records how far it is from it.
Rows (`--methods`, default all; the nncf ones only where NNCF is installed):

- `nncf-global`, `nncf-local`: `nncf.prune` in UNSTRUCTURED_MAGNITUDE_GLOBAL / _LOCAL mode (`nncf_masks`: its
  masks read into a plain copy). Global mode gets the ratio that keeps exactly the target; local mode, one
  ratio for every tensor, the one keeping the most weights at or under it.
- `amc-uniform`: every layer at the same density (`amc search --agent uniform`'s allocation through the budget),
  magnitude pruning per layer: NNCF's local mode up to rounding.
- `amc-search+bn`: `amc.search(method="fine-grained", target="params")`, `--episodes` candidates of amc's
  DDPG (its warm-up drawn at random, no anchor), each scored with BN recalibration (amc's default); resumed if
  stopped. `amc-search+bn-uniform`: the same with `--agent-option anchor=uniform` (warm-up around the uniform
  density, the actor starting there). `amc-default+bn`: the search amc runs when no agent is named, the
  knapsack (one allocation from each layer's sensitivity; its `--episodes` is 1).
- `+bn`: the row's model with BatchNorm re-estimated by amc's recalibration (`amc.evaluate.recalibrate_batchnorm`:
  statistics reset, then averaged) on the images amc's search recalibrates on (`--bn-batches` batches of 100
  seed-0 calibration images). NNCF's own `nncf.batch_norm_adaptation` updates the running statistics with each
  layer's momentum (0.1) instead, so two batches would leave them mostly stale.

Each row: kept weights and non-zero parameters (amc's count: every parameter except the pruned weights),
fp32 held-out and test top-1 on amc's seed-0 splits, seconds to prune (or search). `--finetune-epochs N`
fine-tunes every row with finetune_grid.py's recipe (`amc.finetune.DEFAULT_CONFIG` distilled from the original,
fp32) with its mask held (`amc.train.train(masks=...)`), one memoized teacher for all rows, and checks that every
pruned weight is still zero. Each row is a directory under --out (peer.json, pruned.pt: its state dict and masks,
the fine-tune checkpoint); finished rows and fine-tunes are skipped on a rerun. Writes table.md into --out.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from nncf_masks import MODES, apply_masks, global_ratio, local_ratio, nncf_masks, require_nncf
from peer_rows import read_row, write_row
from torch import nn

SEARCH_DIR = "search"  # the amc search's run directory, inside its row's
PRUNED_FILE = "pruned.pt"  # {"state_dict", "masks"}: what a fine-tune starts from


@dataclass(frozen=True)
class Row:
    """One row: its masks come from `source` ("nncf" with `mode`, "uniform" or "search" by `agent` with
    `agent_options`), its BatchNorm re-estimated where `recalibrate`."""

    source: str
    mode: str | None = None
    recalibrate: bool = False
    agent: str = "ddpg"
    agent_options: tuple[tuple[str, str], ...] = ()


ROWS: dict[str, Row] = {
    **{f"nncf-{mode}{suffix}": Row("nncf", mode, bn) for mode in MODES for suffix, bn in (("", False), ("+bn", True))},
    "amc-uniform": Row("uniform"),
    "amc-uniform+bn": Row("uniform", recalibrate=True),
    "amc-search+bn": Row("search", recalibrate=True),  # amc's search scores every candidate recalibrated
    "amc-search+bn-uniform": Row("search", recalibrate=True, agent_options=(("anchor", "uniform"),)),
    # what `amc search --method fine-grained --target params` runs when no agent is named (config.default_agent)
    "amc-default+bn": Row("search", recalibrate=True, agent="knapsack"),
}
NNCF_ROWS = tuple(name for name, row in ROWS.items() if row.source == "nncf")


class ParamsBench:
    """The model, data, weight graph, params budget, scorer and report evaluators shared by every row."""

    def __init__(self, args: argparse.Namespace):
        from amc.budget import Budget
        from amc.evaluate import Evaluator
        from amc.pipeline import prepare

        self.args = args
        self.config = self.search_config(episodes=1)
        self.setup = prepare(self.config)
        self.dataset, self.model, self.info, self.graph = (self.setup.dataset, self.setup.model, self.setup.info,
                                                           self.setup.graph)
        self.budget = Budget(self.graph, self.config.env_config)
        self.prunable = sum(d.channels for d in self.graph.decisions)
        fixed = self.graph.total_params - self.prunable  # biases and norms: never pruned, always counted
        self.target_weights = int(self.budget.limit - fixed)  # the most kept weights the budget allows
        self.heldout = Evaluator(self.dataset.heldout, self.info.mean, self.info.std)  # fp32, the whole split
        self.test = Evaluator(self.dataset.test, self.info.mean, self.info.std)

    def search_config(self, agent: str = "ddpg", **extra):
        from amc.config import SearchConfig, episodes_to_run

        a = self.args
        episodes = episodes_to_run(agent, extra.pop("episodes", a.episodes))
        return SearchConfig(model=a.model, weights=a.weights, data=a.data, data_dir=a.data_dir, method="fine-grained",
                            agent=agent, target="params", ratio=a.ratio, lbound=a.lbound, episodes=episodes,
                            seed=0, bn_recalibration=a.bn_batches, heldout_limit=a.heldout_limit, threads=a.threads,
                            device="cpu", **extra)  # NNCF's masks and the report evaluators work on the CPU

    @property
    def example(self) -> torch.Tensor:
        return torch.zeros(1, *self.info.input_shape)

    def masks_of(self, keep: list[int]) -> dict[str, torch.Tensor]:
        return {name: mask.cpu() for name, mask in self.setup.scorer.pruner.masks(keep).items()}

    def account(self, name: str, pruned: nn.Module, masks: dict[str, torch.Tensor], seconds: float,
                extra: dict) -> dict:
        """The row of a pruned model: kept weights against the target, non-zero parameters, top-1, seconds. The
        masks are checked against the weights: every pruned weight zero, every other as in the original."""
        check_masks(self.model, pruned, masks, self.graph)
        kept = [int(masks[d.consumer].sum()) for d in self.graph.decisions]
        params = self.graph.params(kept)
        return {"method": name, "target_weights": self.target_weights, "kept_weights": sum(kept),
                "weights_off_target": sum(kept) - self.target_weights, "prunable_weights": self.prunable,
                "params": params, "params_ratio": params / self.graph.total_params,
                "budget_params": self.budget.limit, "recalibrated": ROWS[name].recalibrate, "keep": kept,
                "densities": [round(k / d.channels, 6) for k, d in zip(kept, self.graph.decisions)],
                "heldout_top1": self.heldout.top1(pruned), "test_top1": self.test.top1(pruned),
                "seconds": seconds, **extra}


def check_masks(original: nn.Module, pruned: nn.Module, masks: dict[str, torch.Tensor], graph) -> None:
    """AssertionError unless `masks` cover exactly the graph's layers and `pruned`'s weights are the original's
    with the masked-out entries zero."""
    layers = {d.consumer for d in graph.decisions}
    if set(masks) != layers:
        raise AssertionError(f"masks cover {sorted(set(masks) ^ layers)} unlike amc's fine-grained layers")
    before, after = dict(original.named_modules()), dict(pruned.named_modules())
    for name, mask in masks.items():
        weight, reference = after[name].weight.detach().cpu(), before[name].weight.detach().cpu()
        if weight[~mask].count_nonzero() or not torch.equal(weight[mask], reference[mask]):
            raise AssertionError(f"{name}: its weights are not the original's under its mask")


def recalibrated(bench: ParamsBench, model: nn.Module) -> nn.Module:
    from amc.evaluate import recalibrate_batchnorm

    recalibrate_batchnorm(model, bench.setup.scorer.recalibration)
    return model.to(memory_format=torch.contiguous_format)


def prune_nncf(bench: ParamsBench, row: Row) -> tuple[dict[str, torch.Tensor], dict]:
    sizes = [d.channels for d in bench.graph.decisions]
    ratio = (global_ratio(bench.prunable, bench.target_weights) if row.mode == "global"
             else local_ratio(sizes, bench.target_weights))
    return nncf_masks(bench.model, row.mode, ratio, bench.example), {"nncf_ratio": ratio, "nncf_mode": row.mode}


def prune_uniform(bench: ParamsBench, row: Row) -> tuple[dict[str, torch.Tensor], dict]:
    from common import fixed_ratios

    ratios = fixed_ratios(bench.budget, "uniform", 0.0)
    return bench.masks_of(bench.budget.play(ratios)), {"uniform_density": ratios[0]}


def prune_search(bench: ParamsBench, row: Row, run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """amc's fine-grained search (resumed where it stopped); its best policy's masks. "search_seconds" is the sum
    of its candidates' times, as peers.py reports searches; "wall_seconds" includes its setup and final report
    (of this process only, where it was resumed)."""
    from common import search_resumably

    config = bench.search_config(row.agent, agent_options=dict(row.agent_options))
    t0 = time.perf_counter()
    result = search_resumably(config, bench.dataset, run_dir / SEARCH_DIR, "amc fine-grained search")
    s = result.summary
    return bench.masks_of(result.policy.keep), {
        "agent": config.agent, "episodes": config.episodes, "agent_options": config.agent_options,
        "heldout_limit": config.heldout_limit,
        "search_seconds": s["search_seconds"],
        "wall_seconds": time.perf_counter() - t0, "search_score": s["best_search_score"],
        "search_dir": str(run_dir / SEARCH_DIR), "search_test_top1": s["test_top1"]}


PRUNERS = {"nncf": prune_nncf, "uniform": prune_uniform}


def run_row(bench: ParamsBench, name: str, run_dir: Path) -> dict:
    """Prune (or search), apply the masks to a plain copy, recalibrate if the row says so, account and save."""
    row = ROWS[name]
    t0 = time.perf_counter()
    if row.source == "search":
        masks, extra = prune_search(bench, row, run_dir)
    else:
        masks, extra = PRUNERS[row.source](bench, row)
    pruned = apply_masks(bench.model, masks)
    if row.recalibrate:
        pruned = recalibrated(bench, pruned)
    seconds = extra.get("search_seconds", time.perf_counter() - t0)  # a search's own time, without its final report
    record = {**bench.account(name, pruned.eval(), masks, seconds, extra), "run_dir": str(run_dir)}
    run_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"state_dict": {k: v.cpu() for k, v in pruned.state_dict().items()}, "masks": masks}, buffer)
    (run_dir / PRUNED_FILE).write_bytes(buffer.getvalue())
    return record


def load_pruned(bench: ParamsBench, run_dir: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    saved = torch.load(run_dir / PRUNED_FILE, map_location="cpu", weights_only=True)
    model = copy.deepcopy(bench.model)
    model.load_state_dict(saved["state_dict"])
    return model, saved["masks"]


def finetune_key(epochs: int, seed: int) -> str:
    return f"epochs{epochs}-seed{seed}"


def finetune_row(bench: ParamsBench, record: dict, teacher: nn.Module) -> dict:
    """Fine-tune a row's model with finetune_grid.py's recipe, its mask held; the pruned weights checked zero
    and the kept ones checked changed. Resumed from its checkpoint."""
    from finetune_grid import recipe

    from amc.train import train

    run_dir, epochs, seed = Path(record["run_dir"]), bench.args.finetune_epochs, bench.args.finetune_seed
    model, masks = load_pruned(bench, run_dir)
    start = {name: module.weight.detach().clone() for name, module in model.named_modules() if name in masks}
    t0 = time.perf_counter()
    final = train(model, bench.dataset, run_dir / f"finetune-{finetune_key(epochs, seed)}.pt",
                  recipe(epochs, "fp32", seed), teacher=teacher, masks=masks, resume=True, device=bench.args.device)
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = modules[name].weight.detach().cpu()
        if weight[~mask].count_nonzero():
            raise AssertionError(f"{record['method']}: fine-tuning revived pruned weights of {name}")
        if torch.equal(weight[mask], start[name][mask]):
            raise AssertionError(f"{record['method']}: fine-tuning left the kept weights of {name} unchanged")
    return {"epochs": epochs, "seed": seed, "precision": "fp32", "heldout_top1": final["heldout_top1"],
            "test_top1": final["test_top1"], "seconds": time.perf_counter() - t0, "mask_held": True}


def original_row(bench: ParamsBench, out: Path) -> dict:
    cached = read_row(out / "original")
    if cached is None:
        cached = {"method": "original", "kept_weights": bench.prunable, "prunable_weights": bench.prunable,
                  "params": bench.graph.total_params, "params_ratio": 1.0,
                  "heldout_top1": bench.heldout.top1(copy.deepcopy(bench.model)),
                  "test_top1": bench.test.top1(copy.deepcopy(bench.model))}
        write_row(out / "original", cached)
    return cached


def table(bench: ParamsBench, original: dict, rows: list[dict]) -> str:
    a = bench.args
    key = finetune_key(a.finetune_epochs, a.finetune_seed)
    tuned = any(key in r.get("finetune", {}) for r in rows)
    head = ["method", "kept weights (off target)", "non-zero params (share)", "held-out top-1 (no FT)",
            "test top-1 (no FT)", "seconds to prune / search",
            *([f"test top-1 after {a.finetune_epochs}-epoch FT"] if tuned else [])]
    lines = [(f"{a.model}, {a.ratio:g} of the parameters: at most {int(bench.budget.limit)} non-zero parameters, "
              f"{bench.target_weights} of its {bench.prunable} conv/linear weights"), "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in [original, *rows]:
        off = f" ({r['weights_off_target']:+d})" if "weights_off_target" in r else ""
        cells = [r["method"], f"{r['kept_weights']}{off}", f"{r['params']} ({r['params_ratio']:.4f})",
                 f"{100 * r['heldout_top1']:.2f}", f"{100 * r['test_top1']:.2f}",
                 f"{r['seconds']:.1f}" if "seconds" in r else "-"]
        if tuned:
            ft = r.get("finetune", {}).get(key)
            cells.append(f"{100 * ft['test_top1']:.2f}" if ft else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict]:
    from amc.train import MemoizedTeacher

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = ParamsBench(args)
    original = original_row(bench, out)
    rows = []
    for name in args.methods:
        run_dir = out / name
        record = read_row(run_dir)
        if record is None:
            print(f"{name} ...", flush=True)
            record = run_row(bench, name, run_dir)
            write_row(run_dir, record)
            print(json.dumps({k: record[k] for k in ("method", "kept_weights", "weights_off_target", "params_ratio",
                                                     "heldout_top1", "test_top1", "seconds")}), flush=True)
        rows.append(record)
    if args.finetune_epochs > 0:
        teacher = MemoizedTeacher(copy.deepcopy(bench.model)).eval()  # one data order: its logits computed once
        key = finetune_key(args.finetune_epochs, args.finetune_seed)
        for record in rows:
            if key not in record.get("finetune", {}):
                print(f"{record['method']}: fine-tuning {args.finetune_epochs} epochs ...", flush=True)
                record.setdefault("finetune", {})[key] = finetune_row(bench, record, teacher)
                write_row(record["run_dir"], record)
    text = table(bench, original, rows)
    print(text)
    (out / "table.md").write_text(text + "\n")
    return rows


def available(requested: list[str] | None) -> list[str]:
    """The rows asked for (default: all). An nncf row asked for without NNCF is an AmcError naming the install
    line; left out of the default with a note."""
    from amc.errors import AmcError

    methods = list(ROWS) if requested is None else requested
    if not set(methods) & set(NNCF_ROWS):
        return methods
    try:
        require_nncf()
    except AmcError as e:
        if requested is not None:
            raise
        print(f"nncf rows left out: {e}", flush=True)
        return [m for m in methods if m not in NNCF_ROWS]
    return methods


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="zoo name, e.g. resnet56")
    parser.add_argument("--weights", help="trained checkpoint of the model (default: the zoo's bundled weights)")
    parser.add_argument("--data", default="cifar10", help="dataset (default cifar10)")
    parser.add_argument("--data-dir", help="dataset file or folder (none for digits)")
    parser.add_argument("--ratio", type=float, default=0.2, help="share of all parameters kept (default 0.2)")
    parser.add_argument("--lbound", type=float, default=0.05,
                        help="smallest density of any layer in amc's rows (default 0.05: 0.2 of the parameters "
                             "cannot be met with every layer at amc's default 0.2)")
    parser.add_argument("--methods", nargs="+", choices=ROWS,
                        help="default: all (the nncf ones only where NNCF is installed)")
    parser.add_argument("--episodes", type=int, default=100, help="candidates of amc's fine-grained search")
    parser.add_argument("--heldout-limit", type=int, help="amc's search scores on the first N held-out images")
    parser.add_argument("--bn-batches", type=int, default=2,
                        help="BN recalibration batches of 100 calibration images (the +bn rows and amc's search)")
    parser.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune every row N epochs (0: off)")
    parser.add_argument("--finetune-seed", type=int, default=0, help="data order of the fine-tunes")
    parser.add_argument("--device", default="cpu", help="where the fine-tunes train (cpu, cuda); rows are pruned "
                        "and scored on the CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.finetune_epochs < 0 or args.episodes < 1 or args.bn_batches < 1:
        parser.error("--finetune-epochs must be >= 0, --episodes and --bn-batches >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    from amc.errors import AmcError

    args = parse_args(argv)
    try:
        args.methods = available(args.methods)
    except AmcError as e:
        raise SystemExit(f"error: {e}") from None
    torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
