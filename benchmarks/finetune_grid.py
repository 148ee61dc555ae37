"""Fine-tune many pruned policies the same way, on a GPU when one is lent, and tabulate what they give.

Issue 17 judges every method after the same fine-tune, with seeds, at several budgets, and ranks the
no-fine-tune and short-fine-tune scores against the full fine-tune on many policies. On this 2-core CPU that
is days of fine-tuning; on one GPU it is minutes. Three steps:

    # 1. here: choose the jobs from finished peers.py directories and pack them with the data
    python benchmarks/finetune_grid.py plan --budgets runs/bench/budgets-r20-r0.2 runs/bench/budgets-r20-r0.3 \\
        --study runs/bench/budgets-r20-r0.3 --bundle .gpu
    #    (or policies given as keep counts: finetune_grid.py pack --policies FILE.json --bundle .gpu)
    # 2. there (or here, slowly, with --device cpu): rebuild every policy, fine-tune it, write results.jsonl
    python benchmarks/finetune_grid.py run --bundle .gpu --out OUT --device cuda --workers 12
    # 3. here: merge results into tables and a figure
    python benchmarks/finetune_grid.py collect --bundle .gpu --results OUT/results.jsonl --out runs/bench/grid

Policies travel as keep counts, not as weights: the other machine rebuilds each one with amc's own scorer
(same calibration images by seed, least squares, BN recalibration) from the same data, and checks the
rebuilt model's held-out top-1 against the one recorded here. The data travels packed, its pixels bit-identical
(`grid_files`, which owns the bundle's and the results' formats).
torch-pruning's own channel choices (tp-*) cannot be rebuilt from counts: those models travel as files.

Every job fine-tunes with the recipe of `peers.py --finetune-epochs` and `amc finetune --distill`
(`amc.finetune.DEFAULT_CONFIG`: SGD lr 0.01 cosine, Nesterov, batch 128, augmentation; distillation from the
original, alpha 0.5, T 4), in bf16 autocast (`run --precision fp32` on a CPU without fast bf16), `epochs` and
`seed` as planned. Study jobs also get a short fine-tune
curve (amc.finalists.ShortFinetune: constant lr 0.01, distilled) scored on the held-out split at several step
counts, and the held-out top-1 without BN recalibration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from common import SHARED_DATA, SHARED_WEIGHTS
from grid_files import (
    DATA_FILE,
    RESULTS_FILE,
    append_record,
    fine_tunes,
    job_key,
    pack_dataset,
    read_jobs,
    read_records,
    setup_config,
    setup_key,
    setup_spec,
    unpack_dataset,
    write_jobs,
)
from peer_methods import (
    FASTNAS_CHECKPOINT,
    METHODS,
    TORCH_PRUNING_BEST,
    FastNAS,
    FixedPolicy,
    Search,
    TorchPruning,
    names,
)
from peer_rows import rows_under

from amc.run_names import EPISODES_FILE

STUDY_STEPS = [25, 50, 100, 200, 400]
FIXED, SEARCHERS = names(FixedPolicy, recalibrate=True), names(Search, recalibrate=True)  # the rows fine-tuned
FASTNAS = names(FastNAS)  # ModelOpt's three rows of one search (issue 31)
EPOCHS = {"resnet20": 3, "resnet56": 2, "vgg16": 2}
PRECISION = "bf16"  # the grid's recipe: amc finetune's, in bf16 autocast (--precision fp32 where bf16 is slow)


def recipe(epochs: int, precision: str, seed: int):
    """`amc finetune --distill`'s recipe (`amc.finetune.DEFAULT_CONFIG`, distilled with the weight the short
    fine-tune shares with it) for `epochs`, at `precision`, with data order `seed`."""
    from amc.finalists import SHORT_FINETUNE
    from amc.finetune import DEFAULT_CONFIG

    return replace(DEFAULT_CONFIG, epochs=epochs, precision=precision, seed=seed,
                   distill_alpha=SHORT_FINETUNE.distill_alpha)


# ---- plan (here) ------------------------------------------------------------------------------------------
def _setup_spec(method: str, run_dir: Path) -> dict:
    """What the other machine needs to rebuild a row's scorer, from the settings its config.json records (a
    search's own, or what peers.py records of its scorer). A peer row written before peers.py recorded its BN
    batches was recalibrated as its method says, on amc's default batches."""
    from amc.config import SearchConfig
    from amc.runs import RunDir

    settings = RunDir(run_dir).settings("planned")
    config = SearchConfig.from_dict(settings)
    if "agent" not in settings and "bn_recalibration" not in settings:
        config = replace(config, bn_recalibration=config.bn_recalibration if METHODS[method].recalibrate else 0)
    return setup_spec(config)


def _distinct(run_dir: Path, k: int | None = None) -> list[dict]:
    """The best `k` (default: all) distinct policies of a search's log by reward; a raced-out candidate by its
    score on the prefix it was scored on (as the finalist stage ranks them: at harsh budgets racing stops all
    but the anchor early)."""
    from amc.finalists import distinct_best
    from amc.runs import RunDir

    log = RunDir(run_dir).read_episodes()
    return distinct_best(log, k or len(log))


def _own_weights(method) -> bool:
    """Rows whose network cannot be rebuilt from its keep counts by our pruner: torch-pruning's channel choices,
    FastNAS's model as it returns it (its own weights, BN re-estimated or not)."""
    return isinstance(method, TorchPruning) or isinstance(method, FastNAS) and method.variant != "counts"


def plan(args: argparse.Namespace) -> None:
    bundle = Path(args.bundle)
    (bundle / "models").mkdir(parents=True, exist_ok=True)
    jobs: dict[str, dict] = {}

    earlier = read_jobs(args.keep_jobs) if args.keep_jobs else []
    earlier_ids = {job["key"]: job["id"] for job in earlier}

    def add(job_id: str, priority: float, **job) -> dict:
        key = job_key(job["setup"], job["keep"], job.get("model_file"))
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
        for run_dir, row in rows_under(budget_dir):
            if "keep" not in row or row["method"] not in FIXED + SEARCHERS + (TORCH_PRUNING_BEST, *FASTNAS):
                continue
            if args.methods and row["method"] not in args.methods:
                continue
            method, seed = row["method"], row["seed"]
            setup, name, expected = _setup_spec(method, run_dir), method, row["heldout_top1"]
            if args.no_reconstruct:
                if _own_weights(METHODS[method]):
                    continue  # its own weights: nothing of ours to switch off
                setup, name, expected = {**setup, "lsq": False}, f"{method}-nolsq", None
            base = {"setup": setup, "keep": row["keep"], "heldout_expected": expected,
                    "macs_ratio": row["macs_ratio"], "study": False}
            tag = {"budget": budget_dir.name, "method": name, "seed": seed, "role": "row"}
            if _own_weights(METHODS[method]):  # its own channels or weights: the model travels as files
                shutil.copytree(run_dir, bundle / "models" / f"{budget_dir.name}-{method}", dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("finetune.pt", "model_finetuned.pt", FASTNAS_CHECKPOINT))
                base["model_file"] = f"models/{budget_dir.name}-{method}"
            searcher = method in SEARCHERS
            add(f"{budget_dir.name}/{name}/s{seed}", order,
                ft_seeds=args.searcher_ft_seeds if searcher else args.ft_seeds,
                tags=[tag], **base)
            if (searcher and args.finalists > 1 and method in (args.finalist_methods or SEARCHERS)
                    and (run_dir / EPISODES_FILE).exists()):
                for rank, r in enumerate(_distinct(run_dir, args.finalists)):
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
        for run_dir in sorted(log.parent for log in study_dir.glob(f"*/seed*/{EPISODES_FILE}")):
            setup = _setup_spec(run_dir.parent.name, run_dir)
            pool += [(r, setup, run_dir) for r in _distinct(run_dir)]
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
    write_jobs(bundle, ordered)
    data = bundle / DATA_FILE
    if not data.exists():
        pack_dataset(Path(args.data), data)
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    print(f"{len(ordered)} policies, {sum(len(j['ft_seeds']) for j in ordered)} fine-tunes, "
          f"{sum(j['study'] for j in ordered)} study curves; bundle {size / 2**20:.1f} MiB")


def pack(args: argparse.Namespace) -> None:
    """Policies found elsewhere (a rule written by hand, a search's export), given as keep counts with the setup
    that rebuilds them (a JSON object of id: {"keep": [...], "setup": {...}}, as
    benchmarks/results/issue30_r10_policies.json), as a bundle of the same form as `plan`'s: so that they get the
    grid's fine-tune, and results from other calls join them by id (`run --done`)."""
    policies = json.loads(Path(args.policies).read_text())
    chosen = {pid: p for pid, p in policies.items() if not args.only or any(pid.startswith(o) for o in args.only)}
    if not chosen:
        raise SystemExit(f"no policy of {args.policies} starts with {' or '.join(args.only)}: give --only a prefix "
                         f"of its ids ({', '.join(list(policies)[:3])}, ...)")
    bundle = Path(args.bundle)
    jobs = [{"id": pid, "key": job_key(p["setup"], p["keep"]), "priority": order, "setup": p["setup"],
             "keep": p["keep"], "heldout_expected": None, "macs_ratio": None, "study": args.study,
             "ft_seeds": args.ft_seeds, "tags": [{"budget": pid.split("/")[0], "method": pid.split("/")[1],
                                                  "role": "row"}]}
            for order, (pid, p) in enumerate(chosen.items())]
    write_jobs(bundle, jobs)
    for name in {job["setup"]["model"] for job in jobs}:
        if not (bundle / f"{name}.pt").exists():
            shutil.copy(Path(args.weights_dir) / f"{name}.pt", bundle / f"{name}.pt")
    if not (bundle / DATA_FILE).exists():
        pack_dataset(Path(args.data), bundle / DATA_FILE)
    print(f"{len(jobs)} policies, {len(jobs) * len(args.ft_seeds)} fine-tunes, "
          f"{len(jobs) if args.study else 0} study curves -> {bundle}")


# ---- run (there) ------------------------------------------------------------------------------------------
def _build(args, key: str, jobs: list[dict], npz: str) -> None:
    """One process per scorer setting: rebuild its policies, save them for the trainers."""
    import torch

    from amc.export import save_pruned
    from amc.pipeline import prepare
    torch.set_num_threads(args.build_threads)
    spec = jobs[0]["setup"]
    setup = prepare(setup_config(spec, weights=str(Path(args.bundle) / f"{spec['model']}.pt"), data_dir=npz,
                                 threads=args.build_threads))
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
    from amc.train import train
    torch.set_num_threads(1)
    device = torch.device(args.device)
    dataset = load_dataset("cifar10", npz, seed=0)
    originals: dict[str, torch.nn.Module] = {}
    while True:
        task = queue.get()
        if task is None:
            return
        job, ft_seed = task
        name = job["setup"]["model"]
        if name not in originals:
            originals[name] = models.create(name, num_classes=10, weights=str(Path(args.bundle) / f"{name}.pt"))
        teacher = _teacher(args, name, originals[name])  # with the logits every worker has saved so far
        model_dir = Path(args.work) / "models" / job["id"].replace("/", "__")
        failed = model_dir.parent / (model_dir.name + ".failed")
        while not model_dir.exists() and not failed.exists():
            time.sleep(0.2)
        if not model_dir.exists():  # failed (a stale .failed beside a built model is an earlier call's)
            append_record(results_path, {"id": job["id"], "ft_seed": ft_seed, "error": failed.read_text()})
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
            append_record(results_path, record)
            continue
        epochs = EPOCHS.get(name, 3) if args.epochs is None else args.epochs
        torch.manual_seed(ft_seed)
        final = train(model, dataset, Path(args.work) / f"ckpt-{os.getpid()}.pt",
                      recipe(epochs, args.precision, ft_seed), teacher=teacher, device=device)
        record.update(epochs=epochs, precision=args.precision, test_top1=final["test_top1"],
                      heldout_top1=final["heldout_top1"], seconds=round(time.time() - t0, 1))
        append_record(results_path, record)
        _save_teacher_logits(args, name, teacher)
        print(json.dumps({k: record[k] for k in ("id", "ft_seed", "heldout_rebuilt", "test_top1", "seconds")}),
              flush=True)


def _teacher_logits_files(args, name: str) -> list[Path]:
    return sorted((Path(args.work) / "teacher-logits").glob(f"{name}-*.pt"))


def _teacher(args, name: str, original):
    """`original` as a memoised teacher: jobs with one data order (fine-tune seed) see the same batches, so its
    logits are computed once for all of them (~40% of a ResNet-20 step at 20% MACs) and kept under --work
    for the other workers and later calls (a grid whose --work links the same folder shares them too). The
    fine-tunes are the same as with the bare teacher."""
    import torch

    from amc.train import MemoizedTeacher
    logits: dict = {}
    for path in _teacher_logits_files(args, name):
        try:
            logits.update(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:  # noqa: BLE001 - a torn or foreign file is only a lost shortcut
            print(f"ignoring {path} ({type(e).__name__}); its logits are computed again", flush=True)
    return MemoizedTeacher(original, logits)


def _save_teacher_logits(args, name: str, teacher) -> None:
    """The logits this job computed, in a file of their own (atomic: a kill leaves no torn file)."""
    import io

    import torch

    from amc.atomic import write_bytes_atomic
    new = teacher.computed()
    if new:
        buffer = io.BytesIO()
        torch.save(new, buffer)
        folder = Path(args.work) / "teacher-logits"
        folder.mkdir(exist_ok=True)
        write_bytes_atomic(folder / f"{name}-{os.getpid()}-{time.time_ns()}.pt", buffer.getvalue())


def run(args: argparse.Namespace) -> None:
    import multiprocessing as mp
    work = Path(args.work)
    (work / "models").mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    npz = work / "cifar10_jpeg.npz"
    exact = unpack_dataset(Path(args.bundle) / DATA_FILE, npz)
    print(f"data unpacked in {time.time() - t0:.0f}s, bit-identical: {exact}", flush=True)
    jobs = read_jobs(args.bundle)
    if args.limit:
        jobs = jobs[:args.limit]
    results = out / RESULTS_FILE
    earlier = read_records([results, *(args.done or [])])
    done = set(fine_tunes(earlier))
    curved = {r["id"] for r in earlier if "short" in r}
    ctx = mp.get_context("spawn")
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        groups.setdefault(setup_key(job["setup"]), []).append(job)
    # --builders processes per scorer setting, each rebuilding every n-th policy in priority order, so that
    # the trainers are not kept waiting for one process's least squares
    shards = [(key, group[i::args.builders]) for key, group in groups.items() for i in range(args.builders)]
    builders = [ctx.Process(target=_build, args=(args, key, shard, str(npz))) for key, shard in shards if shard]
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
    from amc.evaluate import PRECISIONS

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
    p.add_argument("--no-reconstruct", action="store_true",
                   help="rebuild the rows without least-squares reconstruction (ids and methods end in -nolsq): "
                        "whether least squares helps after fine-tuning")
    p.add_argument("--data", default=SHARED_DATA)
    p.add_argument("--weights-dir", default=SHARED_WEIGHTS)
    p.add_argument("--bundle", default=".gpu")
    k = sub.add_parser("pack", help="policies given as keep counts (a JSON of id: {keep, setup}) as a bundle")
    k.add_argument("--policies", required=True)
    k.add_argument("--only", nargs="*", help="only the policies whose id starts with one of these")
    k.add_argument("--ft-seeds", type=int, nargs="+", default=[0, 1, 2])
    k.add_argument("--study", action="store_true", help="also a short fine-tune curve per policy")
    k.add_argument("--data", default=SHARED_DATA)
    k.add_argument("--weights-dir", default=SHARED_WEIGHTS)
    k.add_argument("--bundle", default=".gpu")
    r = sub.add_parser("run")
    r.add_argument("--bundle", default=".gpu")
    r.add_argument("--out", required=True)
    r.add_argument("--work", default="/tmp/grid")
    r.add_argument("--device", default="cuda")
    r.add_argument("--workers", type=int, default=12)
    r.add_argument("--build-threads", type=int, default=2)
    r.add_argument("--builders", type=int, default=1, help="processes rebuilding the policies of one setting")
    r.add_argument("--epochs", type=int, help="override the per-model fine-tune epochs (a smoke test)")
    r.add_argument("--limit", type=int, help="only the first N policies (a smoke test)")
    r.add_argument("--precision", default=PRECISION, choices=PRECISIONS,
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
    elif args.command == "pack":
        pack(args)
    elif args.command == "run":
        run(args)
    else:
        from finetune_grid_report import collect  # the tables live beside this file
        collect(args)


if __name__ == "__main__":
    main()
