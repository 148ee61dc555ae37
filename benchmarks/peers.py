"""Our DDPG search against other ways to reach the same MACs budget, all scored and accounted alike.

    python benchmarks/peers.py --model resnet56 --weights ../shared/data/pretrained/cifar10jpeg/resnet56.pt \
        --data-dir ../shared/data/cifar10-jpeg/cifar10_jpeg.npz --ratio 0.5 --candidates 300 --seeds 0 1 2 \
        --precision bf16 --out runs/bench/peers-r56

Methods (`--methods`, default all; the fastnas ones only where ModelOpt is installed) are the registry
`peer_methods.METHODS`, five kinds:

- fixed allocations (`peer_bench.run_fixed`): `uniform`, `deeper-more`, `shallower-more` (one preserve ratio
  for every decision, or a linear ramp over the decision index `--ramp-spread` wide, its level bisected so that
  the rounded counts meet the budget) and `knapsack` (`amc search --agent knapsack`'s allocation), played
  through the budget as an agent's answers are and pruned by our pruner (magnitude + least squares); their
  `+bn` twins are scored and exported with BN recalibration, as the searchers with recalibration are.
- torch-pruning's global pruning (`peer_torch_pruning`): `tp-magnitude`, `tp-taylor`, each also as `+lsq`
  (its channels, our least-squares reconstruction) and `-counts` (its per-layer counts through our pruner).
- NVIDIA ModelOpt's FastNAS (`peer_fastnas`, `pip install nvidia-modelopt torchprofile==0.0.4`): `fastnas`
  (its model as returned), `fastnas+bn` (BN re-estimated) and `fastnas-counts` (its per-layer counts through our
  pruner), its score top-1 on the first 1,000 held-out images; its search state is checkpointed and resumed.
- searches, `--candidates` scored candidates per seed, all `amc.search` (`peer_bench.run_search`): `random`,
  `tpe` (`--agent tpe`), `ddpg`, and with BN recalibration on `--bn-batches` batches before each score
  `ddpg+bn`, `tpe+bn` and DDPG with other `--agent-option`s (`ddpg+bn-shallower`: anchor=shallower;
  `-knapsack`: anchor=knapsack; `-logit`: noise_space=logit; `-budget`: warmup_noise=budget; `-share`:
  actions=share), with the finalist stage (`-fin4`) or twice the candidates (`-x2`). With `--racing` every
  searcher drops candidates that cannot plausibly beat its own best after a prefix of the held-out split.
- `nni-amc`: NNI's AMC pruner, and `nncf-filter`: NNCF's filter pruning; they are not run
  (`peer_methods.NNI_REASON`, `NNCF_REASON`), their rows carry the reason.

Every model is accounted the same way: held-out top-1 on the 5,000 held-out training images (the seed-0
split of `amc.data.load_dataset`) and test top-1, both fp32 without fine-tuning; MACs counted on the
exported network (`amc.count_macs`); parameters; batch-1 latency on one thread, timed against the original
by the latency guard's interleaving. "search" is the sum of the per-candidate times (setup such as
calibration statistics excluded). Each (method, seed) is a directory under --out holding the exported model
(`amc.load_pruned` reads it, `amc finetune` fine-tunes it) and `peer.json`; finished ones are skipped and
unfinished searches resumed, so the script can be killed and restarted. Writes table.md and search_curves.png
into --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from peer_bench import Bench, plain_from_finalists, run_fixed, run_search
from peer_fastnas import require_modelopt, run_fastnas
from peer_methods import METHODS, FastNAS, FixedPolicy, NotRun, Search, TorchPruning, names
from peer_report import finetune_best, measure_latency, plot, table
from peer_rows import read_row, write_row
from peer_torch_pruning import run_torch_pruning


def not_run(bench: Bench, name: str, method: NotRun, seed: int, run_dir: Path) -> dict:
    return {"reason": method.reason, "short_reason": method.short_reason}


RUNNERS = {FixedPolicy: run_fixed, TorchPruning: run_torch_pruning, FastNAS: run_fastnas, Search: run_search,
           NotRun: not_run}


def run(args: argparse.Namespace) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    rows = []
    for name in args.methods:
        method = METHODS[name]
        for seed in args.seeds if method.seeded else [0]:
            run_dir = out / name / f"seed{seed}"
            cached = read_row(run_dir)
            if cached is not None:
                rows.append(cached)
                continue
            if args.cached_only and not isinstance(method, NotRun):  # a reason alone is no work
                print(f"{name} seed {seed}: not run yet, left out (--cached-only)", flush=True)
                continue
            print(f"{name} seed {seed} ...", flush=True)
            row = {"method": name, "seed": seed, "run_dir": str(run_dir),
                   **RUNNERS[type(method)](bench, name, method, seed, run_dir)}
            write_row(run_dir, row)
            rows.append(row)
            if "heldout_top1" in row:
                print(json.dumps({k: row[k] for k in ("method", "seed", "heldout_top1", "test_top1", "macs_ratio",
                                                      "search_seconds")}), flush=True)
    for row in rows:  # cached ones too: a stop may have come between a finalist row and its plain one
        plain_from_finalists(bench, row, out)
    if args.latency_rounds > 0:
        measure_latency(bench, rows)
    if args.finetune_epochs > 0:
        finetune_best(bench, rows)
    text = table(bench, rows)
    print(text)
    (out / "table.md").write_text(text + "\n")
    if any(r.get("curve") for r in rows):
        plot(rows, out / "search_curves.png", args)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from amc.agents import RAMP_SPREAD
    from amc.config import DEFAULTS, SearchConfig
    from amc.errors import AmcError
    from amc.evaluate import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="zoo name, e.g. resnet20 or resnet56")
    parser.add_argument("--weights", help="trained checkpoint of the model (default: the zoo's bundled weights)")
    parser.add_argument("--data", default="cifar10", help="dataset (default cifar10: the zoo's CIFAR ResNets)")
    parser.add_argument("--data-dir", help="dataset file or folder (none for digits)")
    parser.add_argument("--ratio", type=float, help="MACs budget as a share of the original (default: amc search's)")
    parser.add_argument("--lbound", type=float, help="smallest preserve ratio of any decision (default: amc search's)")
    parser.add_argument("--channel-round", type=int, default=DEFAULTS.channel_round)
    parser.add_argument("--methods", nargs="+", choices=METHODS,
                        help="default: all (the fastnas ones only where ModelOpt is installed)")
    parser.add_argument("--candidates", type=int, default=DEFAULTS.episodes,
                        help="scored candidates per search and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the searchers")
    parser.add_argument("--precision", default=DEFAULTS.precision, choices=PRECISIONS,
                        help="scoring precision during searches (reported figures are always fp32)")
    parser.add_argument("--racing", action="store_true",
                        help="searchers drop hopeless candidates early (amc search --racing); off unless given")
    parser.add_argument("--heldout-limit", type=int, default=DEFAULTS.heldout_limit,
                        help="score candidates on the first N held-out images only")
    parser.add_argument("--calibration-images", type=int, default=DEFAULTS.calibration_images)
    parser.add_argument("--bn-batches", type=int, default=DEFAULTS.bn_recalibration,
                        help="BN recalibration batches of the +bn methods")
    parser.add_argument("--ramp-spread", type=float, default=RAMP_SPREAD,
                        help="difference of preserve ratio between first and last decision of the ramps")
    parser.add_argument("--taylor-batches", type=int, default=8, help="training batches of 64 for Taylor grads")
    parser.add_argument("--latency-rounds", type=int, default=10, help="interleaved rounds (0: no latency)")
    parser.add_argument("--latency-repeats", type=int, default=20,
                        help="accepted for older command lines; each round times as the latency guard does")
    parser.add_argument("--finetune-epochs", type=int, default=0,
                        help="fine-tune the best three methods' models for N epochs (0: off)")
    parser.add_argument("--finetune-all", action="store_true",
                        help="fine-tune the best seed of every method, not only of the best three")
    parser.add_argument("--finetune-seed", type=int, default=0,
                        help="seed of the fine-tune (data order); another seed needs its own --out")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cached-only", action="store_true",
                        help="run nothing new: tabulate (measure, fine-tune) only the methods and seeds finished")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:  # validated as amc search validates them; the budget the model gets where none is given
        config = SearchConfig(model=args.model, ratio=args.ratio, lbound=args.lbound, episodes=args.candidates,
                              channel_round=args.channel_round, calibration_images=args.calibration_images,
                              bn_recalibration=args.bn_batches, heldout_limit=args.heldout_limit)
    except AmcError as e:
        parser.error(str(e))
    args.ratio, args.lbound = config.ratio, config.lbound
    args.methods = _available(parser, args.methods)
    return args


def _available(parser: argparse.ArgumentParser, requested: list[str] | None) -> list[str]:
    """The requested methods (default: all), refused with the install line where a fastnas one is asked for and
    ModelOpt is missing; left out of the default with a note."""
    from amc.errors import AmcError

    methods = list(METHODS) if requested is None else requested
    if not set(methods) & set(names(FastNAS)):
        return methods
    try:
        require_modelopt()
    except AmcError as e:
        if requested is not None:
            parser.error(str(e))
        print(f"fastnas methods left out: {e}", flush=True)
        return [m for m in methods if m not in names(FastNAS)]
    return methods


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
