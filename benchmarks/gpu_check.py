"""The device's GPU figures in one call, each with the card's name beside it; with --quick --device cpu, a rehearsal of
the very same code on tiny sizes (how it is tested where there is no GPU).

    python benchmarks/gpu_check.py --out "$OUT" --device cuda \\
        [--cifar cifar10_jpeg.npz --weights resnet56.pt]          # GPU against CPU on a real search
    python benchmarks/gpu_check.py --out /tmp/gpu-rehearsal --device cpu --quick

Parts, in order, each written to OUT/gpu_check.jsonl as it finishes (a part that fails is recorded, the next runs):
- speed: episode / bare forward of ResNet-56 at 32 px and tv:resnet50 at 224 px over 10,000 held-out images
  (benchmarks/search_scaling.py's measurement on its generated ImageFolder; random weights: time only);
- search: wall time of a 400-episode ResNet-56 search and a 300-episode tv:resnet50 224-px search (defaults of
  `amc search`, racing on, 5,000 held-out images);
- same: with --cifar and --weights, the same 50-episode ResNet-56 search on the device and on the CPU: the exported
  policy's held-out and test top-1 and MACs share, which should agree within 0.2 points with the budget exact;
- ray: two Ray actors sharing the card (--workers 2 --gpus-per-worker 0.5) against one process, episodes per second
  (skipped where Ray is not installed);
- mobilenet: batch-1 latency of mobilenet_v1_224 against its uniform 50%-MACs pruning, interleaved, on the device
  (the paper: 1.53x on a Titan Xp).
The machine lent here has no Ray, torch-pruning or gymnasium: carry them as wheels (/work/.library/device).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from pathlib import Path

import torch

import amc
from amc import models
from amc.config import SearchConfig
from amc.data import load_dataset
from amc.pipeline import prepare
from amc.search import build_env
from search_scaling import CLASSES, device_name, make_folder, measure, synchronize  # benchmarks/ is on sys.path


def sizes(quick: bool) -> dict:
    if quick:
        return {"train": 40, "heldout": 100, "r56_episodes": 3, "r50_episodes": 2, "same_episodes": 3,
                "ray_episodes": 4, "search_heldout": 10, "latency_runs": 5, "calibration": 50, "same_heldout": 200}
    return {"train": 1060, "heldout": 10_000, "r56_episodes": 400, "r50_episodes": 300, "same_episodes": 50,
            "ray_episodes": 40, "search_heldout": 500, "latency_runs": 200, "calibration": 500, "same_heldout": None}


def timed_search(out: Path, **settings) -> dict:
    t0 = time.perf_counter()
    settings.setdefault("agent", "ddpg")  # episodes a second is what is measured: the search of many episodes
    result = amc.search(out=out, random_init=settings.pop("random_init", True), overwrite=True, **settings)
    seconds = time.perf_counter() - t0
    summary = result.summary
    return {"seconds": round(seconds, 1), "episodes": settings["episodes"], "summary": summary,
            "test_top1": summary.get("test_top1"), "best_keep": list(result.policy.keep)}


def part_speed(args, size) -> dict:
    scaling = argparse.Namespace(folder=args.folder, ratio=0.5, episodes=2, calibration_images=size["calibration"],
                                 precision=args.precision, threads=args.threads, device=args.device)
    rows = [f"resnet56:32:{size['heldout']}", f"tv:resnet50:224:{size['heldout']}"]
    return {"rows": [measure(row, scaling) for row in rows]}


def part_search(args, size) -> dict:
    common = {"device": args.device, "precision": args.precision, "seed": 0, "calibration_images": size["calibration"]}
    out = {}
    for name, pixels, episodes in (("resnet56", 32, size["r56_episodes"]), ("tv:resnet50", 224, size["r50_episodes"])):
        data = load_dataset("imagefolder", args.folder, image_size=pixels, heldout_per_class=size["search_heldout"])
        out[name] = timed_search(args.out / "runs" / name.replace(":", "_"), model=name, data=data,
                                 episodes=episodes, **common)
    return out


def part_same(args, size) -> dict:
    if not (args.cifar and args.weights):
        return {"skipped": "needs --cifar and --weights (the trained ResNet-56 and its data)"}
    data = load_dataset("cifar10", args.cifar)
    runs = {}
    for device in dict.fromkeys((args.device, "cpu")):  # once where the rehearsal's device is the CPU
        runs[device] = timed_search(args.out / "runs" / f"same-{device.replace(':', '_')}", model="resnet56",
                                    data=data, weights=str(args.weights), random_init=False,
                                    episodes=size["same_episodes"], device=device, seed=0,
                                    heldout_limit=size["same_heldout"])
    a, b = runs[args.device], runs["cpu"]
    runs["test_difference_points"] = round(100 * abs(a["test_top1"] - b["test_top1"]), 2)
    runs["same_policy"] = a["best_keep"] == b["best_keep"]
    return runs


def part_ray(args, size) -> dict:
    try:
        import ray  # noqa: F401
    except ImportError:
        return {"skipped": "Ray is not installed (pip install 'amc-compress[distributed]')"}
    data = load_dataset("imagefolder", args.folder, image_size=32, heldout_per_class=size["search_heldout"])
    settings = {"model": "resnet56", "data": data, "episodes": size["ray_episodes"], "device": args.device,
                "seed": 0, "calibration_images": size["calibration"]}
    one = timed_search(args.out / "runs" / "ray-1", workers=1, **settings)
    gpu = {"gpus_per_worker": 0.5} if torch.device(args.device).type == "cuda" else {}
    two = timed_search(args.out / "runs" / "ray-2", workers=2, **gpu, **settings)
    return {"one_process_s": one["seconds"], "two_actors_s": two["seconds"],
            "throughput_ratio": round(one["seconds"] / two["seconds"], 2)}


def batch1_seconds(model: torch.nn.Module, x: torch.Tensor, runs: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        synchronize(x.device)
        t0 = time.perf_counter()
        for _ in range(runs):
            model(x)
        synchronize(x.device)
    return (time.perf_counter() - t0) / runs


def part_mobilenet(args, size) -> dict:
    data = load_dataset("imagefolder", args.folder, image_size=224, heldout_per_class=2)
    config = SearchConfig(model="mobilenet_v1_224", data="imagefolder", ratio=0.5, device=args.device,
                          calibration_images=size["calibration"], bn_recalibration=0)
    setup = prepare(config, model=models.create("mobilenet_v1_224", num_classes=CLASSES).eval(), dataset=data)
    env, _ = build_env(setup, config)
    budget = env.budget
    keep = budget.uniform_counts(budget.uniform_ratio())
    pruned = setup.scorer.build(keep).eval()
    original = setup.model.eval()
    x = torch.randn(1, 3, 224, 224, device=setup.device)
    rounds = {"original": [], "pruned": []}
    for _ in range(5):  # interleaved, so that a change of clocks or load hits both
        rounds["original"].append(batch1_seconds(original, x, size["latency_runs"]))
        rounds["pruned"].append(batch1_seconds(pruned, x, size["latency_runs"]))
    original_ms, pruned_ms = (1000 * statistics.median(rounds[k]) for k in ("original", "pruned"))
    return {"macs_ratio": round(budget.cost(keep) / budget.total_cost, 3), "original_ms": round(original_ms, 3),
            "pruned_ms": round(pruned_ms, 3), "speedup": round(original_ms / pruned_ms, 2)}


PARTS = {"speed": part_speed, "search": part_search, "same": part_same, "ray": part_ray, "mobilenet": part_mobilenet}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a rehearsal of the code path")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--folder", type=Path, help="generated ImageFolder (default: OUT/folder)")
    parser.add_argument("--cifar", type=Path)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    size = sizes(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    args.folder = args.folder or args.out / "folder"
    if not (args.folder / "train").is_dir():
        make_folder(args.folder, train_per_class=size["train"])
    card = device_name(torch.device(args.device))
    for name in args.parts:
        t0 = time.perf_counter()
        try:
            result = PARTS[name](args, size)
        except Exception as e:  # a broken part is a finding; the next part still runs
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
        record = {"part": name, "device": card, "quick": args.quick, "seconds": round(time.perf_counter() - t0, 1),
                  "date": time.strftime("%Y-%m-%d"), **result}
        print(json.dumps(record, default=str), flush=True)
        with (args.out / "gpu_check.jsonl").open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")


if __name__ == "__main__":
    main()
