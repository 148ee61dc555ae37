"""Fine-tune a headroom.py sample here, in one process, for networks small enough that finetune_grid.py's
machinery (a packed dataset, builder and trainer processes, a memoised teacher) costs more than the fine-tunes:
the embedded digits CNN, whose fine-tune takes seconds.

    python benchmarks/headroom.py sample --dataset digits --model digits_cnn --ratio 0.05 --lbound 0.05 \\
        --name headroom-digits-r0.05 --searches 3 --scale 1.5 --out benchmarks/results/issue30_headroom_digits_policies.json
    python benchmarks/headroom_local.py --policies benchmarks/results/issue30_headroom_digits_policies.json \\
        --results benchmarks/results/issue30_headroom_digits_results.jsonl --confirm-top 5
    python benchmarks/headroom.py report --policies ... --results ... --figure ... --md ...

Every policy is rebuilt by the sample's own scorer (same calibration images, least squares, BN recalibration),
checked against the held-out top-1 the sample recorded, and fine-tuned with `amc finetune --distill`'s recipe
(finetune_grid.recipe, fp32) for `--epochs` (default: amc finetune's). The seeds are headroom.py's: three for the
allocators, the reference and the searches, one for sampled policies, three for the best `--confirm-top` of them.
Records go to `--results` in finetune_grid's format, so that the report reads them; a pair already there is
skipped (run it again to resume).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from finetune_grid import recipe
from grid_files import append_record, fine_tunes, read_records
from headroom import ANCHORED, CHEAP_FT_SEEDS, SAMPLED, SAMPLED_FT_SEEDS, read_policies, sample_config


def _seeds(policies: list[dict], results: dict, confirm_top: int) -> list[tuple[dict, int]]:
    """(policy, fine-tune seed) pairs in order: the exact policies, the sampled ones, then the best K to confirm."""
    exact = [(p, s) for p in policies if p["family"] in ANCHORED for s in CHEAP_FT_SEEDS]
    sampled = [p for p in policies if p["family"] in SAMPLED]
    pairs = exact + [(p, s) for p in sampled for s in SAMPLED_FT_SEEDS]
    if confirm_top:
        ranked = sorted((p for p in sampled if (p["id"], 0) in results), key=lambda p: -results[(p["id"], 0)]["test_top1"])
        pairs += [(p, s) for p in ranked[:confirm_top] for s in CHEAP_FT_SEEDS if s not in SAMPLED_FT_SEEDS]
    return pairs


def run(args: argparse.Namespace) -> None:
    import torch

    from amc.finetune import DEFAULT_CONFIG
    from amc.pipeline import prepare
    from amc.train import train
    torch.set_num_threads(1)
    meta, policies = read_policies(args.policies)
    config = sample_config(meta.get("dataset", "cifar10"), meta["model"], meta["ratio"], meta["lbound"], meta["seed"],
                           meta["data"], meta["weights_dir"])
    setup = prepare(config)
    teacher = copy.deepcopy(setup.model).eval()
    epochs = args.epochs or DEFAULT_CONFIG.epochs
    # the sampled policies first; the best of them are confirmed once all have a seed-0 fine-tune
    for confirm in dict.fromkeys((0, args.confirm_top)):
        results = fine_tunes(read_records([args.results]))
        todo = [(p, s) for p, s in _seeds(policies, results, confirm) if (p["id"], s) not in results]
        for n, (policy, ft_seed) in enumerate(todo):
            t0 = time.perf_counter()
            model = setup.scorer.build(policy["keep"])
            model.amc_info = setup.info
            rebuilt = setup.scorer.evaluator.top1(model)
            if abs(rebuilt - policy["heldout_bn"]) > 1e-9:
                raise SystemExit(f"{policy['id']} rebuilds to held-out {rebuilt:.4f}, not the sample's "
                                 f"{policy['heldout_bn']:.4f}: not the sample's setup (data, weights or amc changed)")
            torch.manual_seed(ft_seed)
            with tempfile.TemporaryDirectory() as tmp:
                final = train(model, setup.dataset, Path(tmp) / "ckpt.pt", recipe(epochs, "fp32", ft_seed),
                              teacher=teacher)
            record = {"id": policy["id"], "ft_seed": ft_seed, "device": "cpu", "heldout_rebuilt": rebuilt,
                      "epochs": epochs, "precision": "fp32", "test_top1": final["test_top1"],
                      "heldout_top1": final["heldout_top1"], "seconds": round(time.perf_counter() - t0, 1)}
            append_record(args.results, record)
            print(f"[{n + 1}/{len(todo)}] {policy['id']} seed {ft_seed}: test {100 * record['test_top1']:.2f} "
                  f"({record['seconds']:.0f}s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", required=True, help="headroom.py sample's output")
    parser.add_argument("--results", required=True, help="results.jsonl, appended to (resumable)")
    parser.add_argument("--epochs", type=int, help="fine-tune epochs (default: amc finetune's)")
    parser.add_argument("--confirm-top", type=int, default=5, help="the best K sampled policies get seeds 1 and 2")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
