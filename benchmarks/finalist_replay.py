"""Score a policy that was not among a search's finalists as the finalist stage would have: the search's own
settings (read from its run directory: held-out split, least squares, BN recalibration, seed, so the same data
order), the stage's short fine-tune (`amc.finalists`: constant lr 0.01, distilled), held-out top-1 after each
round's steps. So one can ask, after the search: had this policy (the anchor, say) been a finalist, where
would it have stood against the recorded finalists (summary.json's "finalists")?

    python benchmarks/finalist_replay.py --run RUN --keep 1 1 1 5 1 1 11 2 15 --steps 400 800
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def replay(run: str | Path, keep: list[int], steps: list[int], dataset=None) -> dict:
    """The policy's held-out top-1 as the search in `run` scored it ("0") and after each of `steps` short
    fine-tune steps, as its finalist stage scores its candidates; `dataset` where the search was given one
    in Python rather than by name."""
    import torch

    from amc.config import SearchConfig
    from amc.finalists import ShortFinetune, finalist_config, stage_teacher, teacher_copy
    from amc.pipeline import prepare
    from amc.runs import RunDir

    config = SearchConfig.from_dict(RunDir(run).settings("planned"))
    torch.set_num_threads(config.threads or 1)
    setup = prepare(config, dataset=dataset)
    t0 = time.perf_counter()
    pruned = setup.scorer.build(keep)
    teacher = stage_teacher(teacher_copy(setup.model), setup.device)  # as choose_finalist passes it
    short = ShortFinetune(pruned, setup.dataset, teacher, finalist_config(config.seed, config.precision),
                          setup.device)
    scores = {"0": setup.scorer.evaluator.top1(pruned)}
    for n in sorted(steps):
        short.train(n - short.steps)
        scores[str(n)] = setup.scorer.evaluator.top1(short.model)
    return {"run": str(run), "keep": keep, "seed": config.seed, "heldout_top1": scores,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs="+", required=True, help="search run directories (amc search --out)")
    parser.add_argument("--keep", type=int, nargs="+", required=True, help="the policy's keep counts")
    parser.add_argument("--steps", type=int, nargs="+", default=[400, 800], help="short fine-tune steps scored")
    args = parser.parse_args(argv)
    for run in args.run:
        print(json.dumps(replay(run, args.keep, args.steps)), flush=True)


if __name__ == "__main__":
    main()
