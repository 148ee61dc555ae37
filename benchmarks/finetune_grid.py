"""Fine-tune many pruned policies the same way, on a GPU when one is lent, and tabulate what they give.

Issue 17 judges every method after the same fine-tune, with seeds, at several budgets, and ranks the
no-fine-tune and short-fine-tune scores against the full fine-tune on many policies. On this 2-core CPU that
is days of fine-tuning; on one GPU it is minutes. Three steps:

    # 1. here: choose the jobs from finished peers.py directories and pack them with the data
    python benchmarks/finetune_grid.py plan --budgets runs/bench/budgets-r20-r0.2 runs/bench/budgets-r20-r0.3 \\
        --study runs/bench/budgets-r20-r0.3 --bundle .gpu
    # 2. there (or here, slowly, with --device cpu): rebuild every policy, fine-tune it, write results.jsonl
    python benchmarks/finetune_grid.py run --bundle .gpu --out OUT --device cuda --workers 12
    # 3. here: merge results into tables and a figure
    python benchmarks/finetune_grid.py collect --bundle .gpu --results OUT/results.jsonl --out runs/bench/grid

Policies travel as keep counts, not as weights: the other machine rebuilds each one with amc's own scorer
(same calibration images by seed, least squares, BN recalibration) from the same data, and checks the
rebuilt model's held-out top-1 against the one recorded here. The data travels as JPEG streams re-encoded at
quality 75 plus the exact residual, so the decoded pixels are bit-identical (checked by SHA-256 there).
torch-pruning's own channel choices (tp-*) cannot be rebuilt from counts: those models travel as files.

Every job fine-tunes with the recipe of `peers.py --finetune-epochs` and `amc finetune --distill`: SGD lr 0.01
cosine, Nesterov, batch 128, distillation from the original (alpha 0.5, T 4), bf16 autocast (`run --precision fp32`
on a CPU without fast bf16), augmentation, `epochs` and `seed` as planned. Study jobs also get a short fine-tune
curve (amc.finalists.ShortFinetune: constant lr 0.01, distilled) scored on the held-out split at several step
counts, and the held-out top-1 without BN recalibration.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import shutil
import time
from pathlib import Path

import numpy as np

STUDY_STEPS = [25, 50, 100, 200, 400]
FIXED = ("uniform+bn", "shallower-more+bn", "deeper-more+bn", "knapsack+bn")
SEARCHERS = ("ddpg+bn", "tpe+bn", "ddpg+bn-knapsack", "ddpg+bn-logit", "ddpg+bn-shallower", "ddpg+bn-budget",
             "ddpg+bn-shallower-budget", "ddpg+bn-shallower-budget-fin4", "ddpg+bn-shallower-budget-x2",
             "ddpg+bn-uniform-budget-share", "ddpg+bn-shallower-budget-share")
EPOCHS = {"resnet20": 3, "resnet56": 2, "vgg16": 2}


# ---- data: JPEG streams (common header once) + exact residual --------------------------------------------
def pack_images(x: np.ndarray) -> dict:
    from PIL import Image
    streams, residual = [], np.empty(x.shape, np.int8)
    for i, im in enumerate(x):
        b = io.BytesIO()
        Image.fromarray(im).save(b, "JPEG", quality=75, subsampling=2)
        streams.append(b.getvalue())
        decoded = np.asarray(Image.open(io.BytesIO(streams[-1])).convert("RGB"))
        diff = im.astype(np.int16) - decoded
        assert np.abs(diff).max() < 128
        residual[i] = diff
    header = os.path.commonprefix(streams[:2000])
    header = header[:header.rfind(b"\xff\xda")]  # up to the start-of-scan marker, which every stream has
    assert all(s.startswith(header) for s in streams)
    return {"header": header, "lengths": np.array([len(s) - len(header) for s in streams], np.int32),
            "bodies": b"".join(s[len(header):] for s in streams), "residual": lzma.compress(residual.tobytes()),
            "shape": x.shape, "sha256": hashlib.sha256(x.tobytes()).hexdigest()}


def unpack_images(p: dict) -> tuple[np.ndarray, bool]:
    from PIL import Image
    residual = np.frombuffer(lzma.decompress(p["residual"]), np.int8).reshape(p["shape"])
    out = np.empty(p["shape"], np.uint8)
    offset = 0
    for i, n in enumerate(p["lengths"]):
        stream = p["header"] + p["bodies"][offset:offset + n]
        offset += n
        out[i] = (np.asarray(Image.open(io.BytesIO(stream)).convert("RGB")).astype(np.int16) + residual[i])
    return out, hashlib.sha256(out.tobytes()).hexdigest() == p["sha256"]


def pack_dataset(npz: Path, dest: Path) -> None:
    import pickle
    d = np.load(npz)
    packed = {k: pack_images(d[k]) for k in ("train_x", "test_x")}
    packed.update(train_y=d["train_y"], test_y=d["test_y"])
    dest.write_bytes(pickle.dumps(packed))


def unpack_dataset(src: Path, npz: Path) -> bool:
    import pickle
    packed = pickle.loads(src.read_bytes())
    arrays, exact = {}, True
    for k in ("train_x", "test_x"):
        arrays[k], ok = unpack_images(packed[k])
        exact &= ok
    np.savez(npz, train_x=arrays["train_x"], train_y=packed["train_y"], test_x=arrays["test_x"],
             test_y=packed["test_y"])
    return exact


# ---- plan (here) ------------------------------------------------------------------------------------------
def _setup_spec(row: dict, run_dir: Path) -> dict:
    """What the other machine needs to rebuild this row's scorer: the search's own settings, or peers.py's."""
    config = json.loads((run_dir / "config.json").read_text())
    search = config.get("search", config)
    model = search["model"]
    if "agent" in search:  # an amc search run
        return {"model": model, "seed": search["seed"], "bn": search["bn_recalibration"],
                "calibration_images": search["calibration_images"], "points_per_image": search["points_per_image"]}
    return {"model": model, "seed": 0, "bn": 2 if row["method"].endswith("+bn") else 0,
            "calibration_images": 3000, "points_per_image": 10}


def _distinct(records: list[dict]) -> list[dict]:
    """Distinct policies by reward; a raced-out candidate by its score on the prefix it was scored on (as the
    finalist stage ranks them: at harsh budgets racing stops all but the anchor early)."""
    seen, out = set(), []
    for r in sorted(records, key=lambda r: -r["reward"]):
        if tuple(r["keep"]) not in seen:
            seen.add(tuple(r["keep"]))
            out.append(r)
    return out


def plan(args: argparse.Namespace) -> None:
    bundle = Path(args.bundle)
    (bundle / "models").mkdir(parents=True, exist_ok=True)
    jobs: dict[str, dict] = {}

    earlier = json.loads(Path(args.keep_jobs).read_text()) if args.keep_jobs else []
    earlier_ids = {job["key"]: job["id"] for job in earlier}

    def add(job_id: str, priority: float, **job) -> dict:
        key = json.dumps([job["setup"], job["keep"], job.get("model_file")])
        job_id = earlier_ids.get(key, job_id)  # the id an earlier call's results know this policy by
        for existing in jobs.values():  # one policy, one job: merge what each use asks of it
            if existing["key"] == key:
                existing["ft_seeds"] = sorted(set(existing["ft_seeds"]) | set(job["ft_seeds"]))
                existing["study"] = existing["study"] or job["study"]
                existing["priority"] = min(existing["priority"], priority)
                existing["tags"] += [t for t in job["tags"] if t not in existing["tags"]]
                if existing["heldout_expected"] is None:  # a row's recorded figure, whichever use came first
                    existing["heldout_expected"] = job["heldout_expected"]
                return existing
        jobs[job_id] = {"id": job_id, "key": key, "priority": priority, **job}
        return jobs[job_id]

    for order, budget_dir in enumerate(map(Path, args.budgets)):
        for cache in sorted(budget_dir.glob("*/seed*/peer.json")):
            row = json.loads(cache.read_text())
            if "keep" not in row or row["method"] not in FIXED + SEARCHERS + ("tp-magnitude+lsq",):
                continue  # torch-pruning's best variant stands for it (peers.py, issue 8)
            if args.methods and row["method"] not in args.methods:
                continue
            run_dir, method, seed = cache.parent, row["method"], row["seed"]
            setup = _setup_spec(row, run_dir)
            base = dict(setup=setup, keep=row["keep"], heldout_expected=row["heldout_top1"],
                        macs_ratio=row["macs_ratio"], study=False)
            tag = {"budget": budget_dir.name, "method": method, "seed": seed, "role": "row"}
            if method.startswith("tp-"):
                shutil.copytree(run_dir, bundle / "models" / f"{budget_dir.name}-{method}", dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("finetune.pt", "model_finetuned.pt"))
                base["model_file"] = f"models/{budget_dir.name}-{method}"
            searcher = method in SEARCHERS
            add(f"{budget_dir.name}/{method}/s{seed}", order,
                ft_seeds=args.searcher_ft_seeds if searcher else args.ft_seeds,
                tags=[tag], **base)
            if (searcher and args.finalists > 1 and method in (args.finalist_methods or SEARCHERS)
                    and (run_dir / "episodes.jsonl").exists()):
                log = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
                for rank, r in enumerate(_distinct(log)[:args.finalists]):
                    add(f"{budget_dir.name}/{method}/s{seed}/f{rank}", 10 + order,
                        setup=setup, keep=r["keep"], heldout_expected=None, macs_ratio=r["macs_ratio"],
                        study=True, ft_seeds=[0], tags=[{**tag, "role": "finalist", "rank": rank,
                                                         "search_score": r["accuracy"]}])
    if args.keep_jobs:  # the study set of an earlier call stays what it was, whatever finished since
        for job in earlier:
            if any(t["role"] == "study" for t in job["tags"]):
                add(job["id"], 5, **{k: v for k, v in job.items() if k not in ("id", "key", "priority")})
    for study_dir in map(Path, args.study or []):
        pool = []
        for config_file in sorted(study_dir.glob("*/seed*/episodes.jsonl")):
            run_dir = config_file.parent
            setup = _setup_spec({"method": run_dir.parent.name}, run_dir)
            for r in _distinct([json.loads(x) for x in config_file.read_text().splitlines()]):
                pool.append((r, setup, run_dir))
        pool.sort(key=lambda t: -t[0]["reward"])
        # spread over the whole range of search scores: evenly spaced ranks
        picks = [pool[round(i * (len(pool) - 1) / max(1, args.study_policies - 1))] for i in range(args.study_policies)]
        for i, (r, setup, run_dir) in enumerate(picks):
            add(f"{study_dir.name}/study{i}", 5, setup=setup, keep=r["keep"], heldout_expected=None,
                macs_ratio=r["macs_ratio"], study=True, ft_seeds=[0],
                tags=[{"budget": study_dir.name, "method": run_dir.parent.name, "seed": int(run_dir.name[4:]),
                       "role": "study", "search_score": r["accuracy"], "episode": r["episode"]}])
        for job in jobs.values():  # the fixed allocations of that budget join the study too
            if any(t["budget"] == study_dir.name and t["role"] == "row" for t in job["tags"]):
                job["study"] = True
    for job in jobs.values():  # the rows of these budgets get study curves too (no extra policies)
        if any(t["budget"] in (args.curves or []) and t["role"] == "row" for t in job["tags"]):
            job["study"] = True
    for name in {j["setup"]["model"] for j in jobs.values()}:
        shutil.copy(Path(args.weights_dir) / f"{name}.pt", bundle / f"{name}.pt")
    ordered = sorted(jobs.values(), key=lambda j: j["priority"])
    (bundle / "jobs.json").write_text(json.dumps(ordered, indent=1))
    data = bundle / "data.pkl"
    if not data.exists():
        pack_dataset(Path(args.data), data)
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    print(f"{len(ordered)} policies, {sum(len(j['ft_seeds']) for j in ordered)} fine-tunes, "
          f"{sum(j['study'] for j in ordered)} study curves; bundle {size / 2**20:.1f} MiB")


# ---- run (there) ------------------------------------------------------------------------------------------
def _setup_key(spec: dict) -> str:
    return "-".join(f"{k}{spec[k]}" for k in sorted(spec))


def _build(args, key: str, jobs: list[dict], npz: str) -> None:
    """One process per scorer setting: rebuild its policies, save them for the trainers."""
    import torch
    from amc.config import SearchConfig
    from amc.export import save_pruned
    from amc.pipeline import prepare
    torch.set_num_threads(args.build_threads)
    spec = jobs[0]["setup"]
    config = SearchConfig(model=spec["model"], weights=str(Path(args.bundle) / f"{spec['model']}.pt"),
                          data="cifar10", data_dir=npz, seed=spec["seed"], bn_recalibration=spec["bn"],
                          calibration_images=spec["calibration_images"], points_per_image=spec["points_per_image"],
                          threads=args.build_threads)
    setup = prepare(config)
    plain = setup.scorer.variant(recalibration=[])
    for job in jobs:
        dest = Path(args.work) / "models" / job["id"].replace("/", "__")
        tmp = dest.parent / (dest.name + ".tmp")
        if dest.exists():  # built by an earlier call in this --work (the build is deterministic): reused
            continue
        try:
            if "model_file" in job:
                shutil.copytree(Path(args.bundle) / job["model_file"], tmp, dirs_exist_ok=True)
            else:
                model = setup.scorer.build(job["keep"])
                model.amc_info = setup.info
                tmp.mkdir(parents=True, exist_ok=True)
                save_pruned(model, tmp)
                if job["study"]:
                    nobn = plain.build(job["keep"])
                    (tmp / "nobn.json").write_text(json.dumps(
                        {"heldout_nobn": setup.scorer.evaluator.top1(nobn) if spec["bn"] else None}))
            tmp.rename(dest)
        except Exception as e:  # noqa: BLE001 - the trainer records it; the other policies go on
            (dest.parent / (dest.name + ".failed")).write_text(f"{type(e).__name__}: {e}")


def _train_worker(args, queue, results_path: str, npz: str, exact: bool, curved: set) -> None:
    import torch
    from amc import models
    from amc.data import load_dataset
    from amc.evaluate import Evaluator
    from amc.export import load_pruned
    from amc.finalists import SHORT_FINETUNE, ShortFinetune
    from amc.train import TrainConfig, train
    torch.set_num_threads(1)
    device = torch.device(args.device)
    dataset = load_dataset("cifar10", npz, seed=0)
    teachers: dict[str, torch.nn.Module] = {}
    while True:
        task = queue.get()
        if task is None:
            return
        job, ft_seed = task
        name = job["setup"]["model"]
        if name not in teachers:
            teachers[name] = models.create(name, num_classes=10, weights=str(Path(args.bundle) / f"{name}.pt"))
        teacher = teachers[name]
        model_dir = Path(args.work) / "models" / job["id"].replace("/", "__")
        failed = model_dir.parent / (model_dir.name + ".failed")
        while not model_dir.exists() and not failed.exists():
            time.sleep(0.2)
        if not model_dir.exists():  # failed (a stale .failed beside a built model is an earlier call's)
            with open(results_path, "a") as f:
                f.write(json.dumps({"id": job["id"], "ft_seed": ft_seed, "error": failed.read_text()}) + "\n")
            continue
        t0 = time.time()
        model = load_pruned(model_dir)
        info = models.model_info(model)
        heldout = Evaluator(dataset.heldout, info.mean, info.std)
        record = {"id": job["id"], "ft_seed": ft_seed, "data_exact": exact, "device": str(device),
                  "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                  "heldout_rebuilt": heldout.top1(model.to(device))}
        if job["study"] and (ft_seed is None or ft_seed == job["ft_seeds"][0] and job["id"] not in curved):
            nobn = model_dir / "nobn.json"
            record.update(json.loads(nobn.read_text()) if nobn.exists() else {})
            short = ShortFinetune(load_pruned(model_dir), dataset, teacher.to(device).eval(),
                                  SHORT_FINETUNE, device)  # seed 0, constant lr 0.01, distilled, fp32
            curve = {}
            for steps in args.study_steps:
                short.train(steps - short.steps)
                curve[str(steps)] = heldout.top1(short.model)
            record["short"] = curve
        if ft_seed is None:  # the fine-tunes are done: only the study's curve was missing
            with open(results_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            continue
        epochs = EPOCHS.get(name, 3) if args.epochs is None else args.epochs
        config = TrainConfig(epochs=epochs, lr=0.01, precision=args.precision, seed=ft_seed, distill_alpha=0.5)
        torch.manual_seed(ft_seed)
        final = train(model, dataset, Path(args.work) / f"ckpt-{os.getpid()}.pt", config, teacher=teacher,
                      device=device)
        record.update(epochs=epochs, precision=args.precision, test_top1=final["test_top1"],
                      heldout_top1=final["heldout_top1"], seconds=round(time.time() - t0, 1))
        with open(results_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps({k: record[k] for k in ("id", "ft_seed", "heldout_rebuilt", "test_top1", "seconds")}),
              flush=True)


def run(args: argparse.Namespace) -> None:
    import multiprocessing as mp
    work = Path(args.work)
    (work / "models").mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    npz = work / "cifar10_jpeg.npz"
    exact = unpack_dataset(Path(args.bundle) / "data.pkl", npz)
    print(f"data unpacked in {time.time() - t0:.0f}s, bit-identical: {exact}", flush=True)
    jobs = json.loads((Path(args.bundle) / "jobs.json").read_text())
    if args.limit:
        jobs = jobs[:args.limit]
    results = out / "results.jsonl"
    earlier = [json.loads(line) for f in [results, *map(Path, args.done or [])] if f.exists()
               for line in f.read_text().splitlines()]
    done = {(r["id"], r["ft_seed"]) for r in earlier if "test_top1" in r}
    curved = {r["id"] for r in earlier if "short" in r}
    ctx = mp.get_context("spawn")
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        groups.setdefault(_setup_key(job["setup"]), []).append(job)
    builders = [ctx.Process(target=_build, args=(args, key, group, str(npz))) for key, group in groups.items()]
    for p in builders:
        p.start()
    queue = ctx.Queue()
    # by priority (the rows of the first budgets, their second fine-tune seeds, the study, the finalists)
    tasks = [(job["priority"] + 2 * i, n, job, seed) for n, job in enumerate(jobs)
             for i, seed in enumerate(job["ft_seeds"]) if (job["id"], seed) not in done]
    # a study policy whose fine-tunes were done earlier, without its curve: the curve alone
    tasks += [(job["priority"], n, job, None) for n, job in enumerate(jobs) if job["study"] and
              job["id"] not in curved and all((job["id"], s) in done for s in job["ft_seeds"])]
    for *_, job, seed in sorted(tasks, key=lambda t: t[:2]):
        queue.put((job, seed))
    workers = [ctx.Process(target=_train_worker, args=(args, queue, str(results), str(npz), exact, curved))
               for _ in range(args.workers)]
    for p in workers:
        queue.put(None)
        p.start()
    for p in builders + workers:
        p.join()
    print(f"all done in {time.time() - t0:.0f}s", flush=True)


# ---- collect (here) ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--budgets", nargs="+", required=True, help="peers.py output directories")
    p.add_argument("--study", nargs="*", help="budget directories whose search logs give the ranking study")
    p.add_argument("--study-policies", type=int, default=24)
    p.add_argument("--curves", nargs="*", help="budget names (e.g. budgets-r20-r0.2) whose rows get study curves")
    p.add_argument("--keep-jobs", help="an earlier jobs.json: its study policies are kept, and a policy it holds keeps "
                   "its id (so that the results of that call count)")
    p.add_argument("--finalists", type=int, default=4, help="top-K distinct candidates of every search")
    p.add_argument("--finalist-methods", nargs="*", help="searchers whose top-K are fine-tuned (default: all)")
    p.add_argument("--methods", nargs="*", help="only these methods' rows (default: every method)")
    p.add_argument("--ft-seeds", type=int, nargs="+", default=[0, 1], help="fine-tune seeds of fixed rows")
    p.add_argument("--searcher-ft-seeds", type=int, nargs="+", default=[0], help="fine-tune seeds of searchers' rows")
    p.add_argument("--data", default="../shared/data/cifar10-jpeg/cifar10_jpeg.npz")
    p.add_argument("--weights-dir", default="../shared/data/pretrained/cifar10jpeg")
    p.add_argument("--bundle", default=".gpu")
    r = sub.add_parser("run")
    r.add_argument("--bundle", default=".gpu")
    r.add_argument("--out", required=True)
    r.add_argument("--work", default="/tmp/grid")
    r.add_argument("--device", default="cuda")
    r.add_argument("--workers", type=int, default=12)
    r.add_argument("--build-threads", type=int, default=2)
    r.add_argument("--epochs", type=int, help="override the per-model fine-tune epochs (a smoke test)")
    r.add_argument("--limit", type=int, help="only the first N policies (a smoke test)")
    r.add_argument("--precision", default="bf16", choices=["bf16", "fp32"],
                   help="fine-tune autocast precision: bf16 is the recipe; fp32 where the CPU has no fast bf16 "
                        "(an AVX2-only CPU ran a bf16 step about 9x slower than fp32)")
    r.add_argument("--done", nargs="*", help="results.jsonl files of earlier calls: what they hold is skipped")
    r.add_argument("--study-steps", type=int, nargs="+", default=STUDY_STEPS,
                   help="short fine-tune lengths scored on the study's policies")
    c = sub.add_parser("collect")
    c.add_argument("--bundle", default=".gpu")
    c.add_argument("--results", nargs="+", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--k", type=int, default=4, help="finalists per search replayed (as planned)")
    args = parser.parse_args(argv)
    if args.command == "plan":
        plan(args)
    elif args.command == "run":
        run(args)
    else:
        from finetune_grid_report import collect  # noqa: PLC0415 - the tables live beside this file
        collect(args)


if __name__ == "__main__":
    main()
