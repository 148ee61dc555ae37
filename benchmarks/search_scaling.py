"""How a search episode's time grows with resolution and held-out size, against its physical limit: one bare forward
pass of the same pruned network over the same images.

    python benchmarks/search_scaling.py --folder /tmp/scaling/folder --out benchmarks/results/issue29_scaling_cpu.jsonl \\
        --rows tv:mobilenet_v2:32:1000 tv:mobilenet_v2:32:10000 tv:mobilenet_v2:224:1000 ...

Each row is MODEL:PIXELS:HELDOUT. The first call writes a generated ImageFolder (10 classes of random smooth JPEGs,
enough training images for 10,000 held-out ones plus the calibration images); random weights, since only time is
measured. Per row: loading (decode or amc's image cache), the one-off setup (`amc.pipeline.prepare`: model, graph,
feature sampling), then `--episodes` DDPG warm-up episodes through the search's own loop (`serial_episodes`: agent,
clipping, pruning with least squares, BN recalibration, full held-out scoring, racing off so that every image is
scored), each followed by a bare forward pass of that episode's pruned network over the same images (float batches
normalised beforehand, channels-last, inference mode, the same precision and threads). Rows already in `--out`
are skipped, so the same command resumes. `--report` prints the markdown table of `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from amc.agents import make_agent
from amc.config import SearchConfig
from amc.data import batches, load_dataset
from amc.pipeline import prepare
from amc.rollout import serial_episodes
from amc.search import build_env

CLASSES = 10
TRAIN_PER_CLASS = 1060   # 1,000 held-out + room for the calibration images
VAL_PER_CLASS = 5
SOURCE_SIDE = 256        # what the loader resizes (shorter side to 1.14 x the crop) and centre-crops


def make_folder(root: Path, seed: int = 0, train_per_class: int = TRAIN_PER_CLASS) -> None:
    """train/ and val/ with one folder per class of random smooth RGB JPEGs (decode cost like a photo's)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", VAL_PER_CLASS)):
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
                small.resize((SOURCE_SIDE, SOURCE_SIDE), Image.BILINEAR).save(folder / f"{i}.jpg", quality=90)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward_seconds(model: torch.nn.Module, images: list[torch.Tensor], precision: str) -> float:
    """Forward passes only: no argmax, no accuracy bookkeeping, batches normalised, laid out and placed on the
    model's device beforehand."""
    model.eval().to(memory_format=torch.channels_last)
    device = images[0].device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    synchronize(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast:
        for x in images:
            model(x)
    synchronize(device)
    return time.perf_counter() - t0


def device_name(device: torch.device) -> str:
    """What a figure was measured on: the card's name for a GPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def measure(row: str, args: argparse.Namespace) -> dict:
    model_name, pixels, heldout = row.rsplit(":", 2)
    pixels, heldout = int(pixels), int(heldout)
    t0 = time.perf_counter()
    dataset = load_dataset("imagefolder", args.folder, image_size=pixels, heldout_per_class=heldout // CLASSES)
    loading = time.perf_counter() - t0
    config = SearchConfig(model=model_name, data="imagefolder", ratio=args.ratio, episodes=args.episodes,
                          warmup=args.episodes, racing=False, calibration_images=args.calibration_images,
                          precision=args.precision, threads=args.threads, seed=0, device=args.device)
    t0 = time.perf_counter()
    setup = prepare(config, dataset=dataset)
    setup_seconds = time.perf_counter() - t0
    env, _ = build_env(setup, config)
    agent = make_agent("ddpg", env.budget, seed=0, warmup_episodes=args.episodes)
    info = setup.info
    images = [x.to(setup.device).contiguous(memory_format=torch.channels_last)
              for x, _ in batches(dataset.heldout, config.eval_batch_size, mean=info.mean, std=info.std)]
    episodes = []
    for _, record, _, seconds, timing in serial_episodes(env, agent, setup.scorer, range(args.episodes), False):
        pruned = setup.scorer.build(record["keep"])
        bare = bare_forward_seconds(pruned, images, args.precision)
        episodes.append({"seconds": seconds, "timing": timing, "bare": bare, "macs_ratio": record["macs_ratio"]})
        print(f"{row}: episode {seconds:.1f} s, bare forward {bare:.1f} s", flush=True)
    stats = dataset.load_stats or {}
    return {"row": row, "model": model_name, "pixels": pixels, "heldout": len(dataset.heldout),
            "loading_seconds": round(loading, 2), "decoded": not stats.get("cached", True),
            "setup_seconds": round(setup_seconds, 2), "calibration_images": args.calibration_images,
            "precision": args.precision, "threads": args.threads, "device": device_name(setup.device),
            "episodes": episodes,
            "date": time.strftime("%Y-%m-%d")}


def report(rows: list[dict]) -> str:
    lines = ["| network | pixels | held-out | episode s | of which scoring | bare forward s | episode / bare | "
             "ms per image (episode) | setup s | loading s |", "|" + " --- |" * 10]
    for r in rows:
        e = r["episodes"]
        seconds = statistics.mean(x["seconds"] for x in e)
        scoring = statistics.mean(x["timing"]["evaluate"] for x in e)
        bare = statistics.mean(x["bare"] for x in e)
        ratios = [x["seconds"] / x["bare"] for x in e]
        load = f"{r['loading_seconds']:.0f} ({'decoded' if r['decoded'] else 'cache'})"
        lines.append(f"| {r['model']} | {r['pixels']} | {r['heldout']:,} | {seconds:.1f} | {scoring / seconds:.0%} | "
                     f"{bare:.1f} | {statistics.median(ratios):.2f} | {1000 * seconds / r['heldout']:.2f} | "
                     f"{r['setup_seconds']:.0f} | {load} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True, help="generated ImageFolder (written if missing)")
    parser.add_argument("--out", type=Path, required=True, help="results, one JSON line per row")
    parser.add_argument("--rows", nargs="*", default=[], help="MODEL:PIXELS:HELDOUT")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--calibration-images", type=int, default=500)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    if not (args.folder / "train").is_dir() and args.rows:
        make_folder(args.folder)
    for row in args.rows:
        if any(r["row"] == row for r in done):
            continue
        result = measure(row, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(result) + "\n")
        done.append(result)
    if args.report:
        print(report(done))


if __name__ == "__main__":
    main()
