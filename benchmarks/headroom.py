"""Is there headroom over the cheap allocators? Many policies at one budget, each given the same fine-tune.

At 20% of ResNet-20's MACs (CIFAR-10 JPEG, lbound 0.1) the cheap allocators (uniform, the "prune shallower layers
more" ramp that DDPG is anchored at, the knapsack) tie after fine-tuning, and no search beat them (issue 17 in
benchmarks/RESULTS.md). Here >= 100 distinct per-layer policies that meet the budget exactly (played through
the environment's rounding and clipping, as an agent's answers are) are drawn around the ramp, around the
knapsack and broadly, scored without fine-tuning, fine-tuned by `finetune_grid.py` with its standard recipe,
and the distribution of test top-1 is set against the allocators'. Three steps:

    # 1. here: draw the policies and score them without fine-tuning (held-out top-1 with and without BN recalibration)
    python benchmarks/headroom.py sample --out benchmarks/results/issue30_headroom_r20_policies.json
    # 2. pack them as a finetune_grid bundle, then fine-tune: here on one thread in fp32 (bf16 autocast is about 9x
    #    slower on this AVX2-only CPU), resumable (what --out's results.jsonl holds is skipped); or on a GPU with
    #    --device cuda --workers 12 and the recipe's bf16
    python benchmarks/headroom.py bundle --policies benchmarks/results/issue30_headroom_r20_policies.json \\
        --bundle /tmp/headroom/bundle
    python benchmarks/finetune_grid.py run --bundle /tmp/headroom/bundle --out /tmp/headroom/out \\
        --work /tmp/headroom/work --device cpu --workers 1 --build-threads 1 --precision fp32
    # 3. the histogram, the table, the top decile's traits and the rank correlations (a partial results file is fine)
    python benchmarks/headroom.py report --policies benchmarks/results/issue30_headroom_r20_policies.json \\
        --results /tmp/headroom/out/results.jsonl

Families (each policy is stepped through the environment, so the budget's clipping has the last word):
- the cheap allocators: `uniform`, `shallower` (the ramp, DDPG's default anchor), `deeper` (the reverse ramp) and
  `knapsack` (amc's allocator), fine-tuned with three seeds each;
- `near-shallower`, `near-knapsack`: the anchor's ratios each multiplied by exp(N(0, sigma)), sigma cycling over
  SIGMAS, then shifted onto the budget by `CompressionEnv.fit_to_budget` (the policy's shape kept);
- `ddpg-shallower`, `ddpg-knapsack`: DDPG's own budget warm-up episodes anchored there (`make_agent("ddpg", ...)`,
  its default `anchor_sigma`, logit noise, `fit_to_budget`), as a search explores. They are not near the anchor:
  a decision the anchor holds at the lower bound (the ramp's first four) gets a logit spread of hundreds
  (`logit_normal` clips the position to 1e-3), so each such draw is nearly a coin flip between lbound and 1,
  and the fit to the budget then takes the rest down; hence the near-* families beside them;
- `broad`: per stage a random level and a random tilt over depth (plus a little per-decision noise) in the logit
  of the ratio's position in [lbound, 1], then `fit_to_budget`: random shares per stage, different depth profiles.
Sampled policies are fine-tuned with one seed; `bundle --confirm-top K` adds seeds 1 and 2 to the best K so far.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

NAME = "headroom-r20-r0.2"  # job ids are NAME/family[/index]
CHEAP = ("uniform", "shallower", "deeper", "knapsack")
SAMPLED = {"near-shallower": 20, "ddpg-shallower": 10, "near-knapsack": 20, "ddpg-knapsack": 10, "broad": 40}
GROUPS = {"near-shallower": "around the ramp", "ddpg-shallower": "around the ramp",
          "near-knapsack": "around the knapsack", "ddpg-knapsack": "around the knapsack", "broad": "broad"}
SIGMAS = (0.15, 0.3, 0.45)  # log-ratio noise of the near-* families, cycled
CHEAP_FT_SEEDS, SAMPLED_FT_SEEDS = [0, 1, 2], [0]
DATA = "../shared/data/cifar10-jpeg/cifar10_jpeg.npz"
WEIGHTS_DIR = "../shared/data/pretrained/cifar10jpeg"


# ---- sample (here) ----------------------------------------------------------------------------------------
def _stage(layer_name: str) -> str:
    """'layer2.1.conv1' -> 'layer2': the top-level module a layer sits in (a ResNet stage)."""
    return layer_name.split(".")[0]


class Sampler:
    """The environment at the budget and the draws of every family; `distinct` refuses a policy seen before."""

    def __init__(self, env, seed: int, spread: float):
        self.env, self.seed, self.spread = env, seed, abs(spread)
        self.lbound = env.config.lbound
        self.stages = [_stage(d.consumer) for d in env.decisions]
        self.seen: set[tuple[int, ...]] = set()

    def play(self, ratios) -> list[int]:
        from amc.baselines import play
        return play(self.env, ratios)

    def distinct(self, keep: list[int]) -> bool:
        if tuple(keep) in self.seen:
            return False
        self.seen.add(tuple(keep))
        return True

    def cheap(self, name: str, knapsack_ratios) -> list[int]:
        env = self.env
        if name == "knapsack":
            ratios = knapsack_ratios
        elif name == "uniform":
            ratios = [env.uniform_ratio()] * len(env.channels)
        else:
            ratios = env.ramp_ratios(-self.spread if name == "shallower" else self.spread)
        keep = self.play(ratios)
        self.distinct(keep)
        return keep

    def near(self, family: str, anchor: list[float], count: int) -> list[tuple[list[int], dict]]:
        """The anchor's ratios times exp(N(0, sigma)), fitted to the budget (its shape kept), then played."""
        rng = np.random.default_rng([self.seed, list(SAMPLED).index(family)])
        out, tries = [], 0
        while len(out) < count and tries < 100 * count:
            sigma = SIGMAS[tries % len(SIGMAS)]
            tries += 1
            drawn = np.clip(np.asarray(anchor) * np.exp(rng.normal(0.0, sigma, len(anchor))), self.lbound, 1.0)
            keep = self.play(self.env.fit_to_budget(drawn.tolist()))
            if self.distinct(keep):
                out.append((keep, {"sigma": sigma, "draw": tries - 1}))
        return out

    def ddpg(self, anchor, count: int) -> list[tuple[list[int], dict]]:
        """DDPG's budget warm-up episodes around `anchor`, as `amc search` plays them (episode 0 is the anchor)."""
        from amc.agents import make_agent
        env = self.env
        agent = make_agent("ddpg", env, self.seed, anchor=anchor, warmup_episodes=10**6)
        out, episode = [], 0
        while len(out) < count and episode < 100 * count:
            episode += 1
            agent.begin_episode(episode)
            obs, _ = env.reset()
            with env.deferred_scoring():
                done = False
                while not done:
                    obs, _, done, _, info = env.step(np.array([agent.act(obs)], dtype=np.float32))
            if self.distinct(info["keep_counts"]):
                out.append((list(info["keep_counts"]), {"episode": episode, "anchor_sigma": agent.config.anchor_sigma}))
        return out

    def broad(self, count: int) -> list[tuple[list[int], dict]]:
        """Per stage a level in [-3, 3] and a tilt over the stage's depth in [-1.5, 1.5] (logit of the position in
        [lbound, 1]), per decision noise 0.25, fitted to the budget and played."""
        rng = np.random.default_rng([self.seed, list(SAMPLED).index("broad")])
        names = list(dict.fromkeys(self.stages))
        members = {s: [i for i, t in enumerate(self.stages) if t == s] for s in names}
        out, tries = [], 0
        while len(out) < count and tries < 100 * count:
            tries += 1
            levels, tilts = rng.uniform(-3.0, 3.0, len(names)), rng.uniform(-1.5, 1.5, len(names))
            logits = np.empty(len(self.stages))
            for s, (level, tilt) in enumerate(zip(levels, tilts)):
                index = members[names[s]]
                depth = np.linspace(-1.0, 1.0, len(index)) if len(index) > 1 else np.zeros(1)
                logits[index] = level + tilt * depth
            logits += rng.normal(0.0, 0.25, len(logits))
            ratios = self.lbound + (1 - self.lbound) / (1 + np.exp(-logits))
            keep = self.play(self.env.fit_to_budget(ratios.tolist()))
            if self.distinct(keep):
                out.append((keep, {"levels": np.round(levels, 3).tolist(), "tilts": np.round(tilts, 3).tolist(),
                                   "draw": tries - 1}))
        return out


def _stage_shares(setup, keep: list[int], pruned) -> tuple[dict, dict]:
    """Per stage of decisions: parameters kept (share of that stage's original parameters, BN included) and the
    stage's conv/linear MACs as a share of the original network's."""
    stages = list(dict.fromkeys(_stage(d.consumer) for d in setup.graph.decisions))

    def params_by_stage(model) -> dict[str, int]:
        counts = dict.fromkeys(stages, 0)
        for name, p in model.named_parameters():
            if _stage(name) in counts:
                counts[_stage(name)] += p.numel()
        return counts

    original, kept = params_by_stage(setup.model), params_by_stage(pruned)
    macs = dict.fromkeys(stages, 0.0)
    for term, cin, cout in setup.graph.layer_channels(keep):
        if _stage(term.name) in macs:
            macs[_stage(term.name)] += term.macs_per_pair * (cout if term.depthwise else cin / term.groups * cout)
    total = setup.graph.total_macs
    return ({s: round(kept[s] / original[s], 5) for s in stages}, {s: round(macs[s] / total, 5) for s in stages})


def sample(args: argparse.Namespace) -> None:
    import torch
    from amc.agents.knapsack import knapsack_ratios
    from amc.config import SearchConfig
    from amc.pipeline import prepare
    from amc.search import build_env
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    # the scorer finetune_grid.py rebuilds (the setup of peers.py's +bn rows): seed 0, 3000 calibration images,
    # 10 points each, BN recalibrated on 2 batches of 100
    spec = {"model": args.model, "seed": args.seed, "bn": 2, "calibration_images": 3000, "points_per_image": 10}
    config = SearchConfig(model=args.model, weights=str(Path(args.weights_dir) / f"{args.model}.pt"), data="cifar10",
                          data_dir=args.data, ratio=args.ratio, lbound=args.lbound, seed=spec["seed"],
                          bn_recalibration=spec["bn"], calibration_images=spec["calibration_images"],
                          points_per_image=spec["points_per_image"], threads=1)
    setup = prepare(config)
    env, _ = build_env(setup, config)  # scores with BN recalibration (the knapsack's sensitivity uses it)
    sampler = Sampler(env, args.seed, args.ramp_spread)
    t_setup = time.perf_counter()
    knapsack = knapsack_ratios(env)
    t_knapsack = time.perf_counter()

    drawn: list[tuple[str, str, list[int], dict]] = []  # (id, family, keep, draw)
    for name in CHEAP:
        drawn.append((f"{NAME}/{name}", name, sampler.cheap(name, knapsack), {}))
    anchors = {"shallower": env.ramp_ratios(-abs(args.ramp_spread)), "knapsack": knapsack}
    for family, count in SAMPLED.items():
        count = round(count * args.scale)
        kind, _, anchor = family.partition("-")
        found = (sampler.broad(count) if family == "broad" else sampler.near(family, anchors[anchor], count)
                 if kind == "near" else sampler.ddpg(anchors[anchor], count))
        if len(found) < count:
            print(f"{family}: only {len(found)} distinct policies of {count} asked", flush=True)
        drawn += [(f"{NAME}/{family}/{i:02d}", family, keep, draw) for i, (keep, draw) in enumerate(found)]
    t_drawn = time.perf_counter()

    plain = setup.scorer.variant(recalibration=[])
    evaluator = setup.scorer.evaluator  # fp32, the whole held-out split
    policies = []
    for n, (job_id, family, keep, draw) in enumerate(drawn):
        summary = env.summarize(keep)
        if summary["macs"] > env.budget + 1e-6:
            raise AssertionError(f"{job_id} breaks the budget: {summary['macs_ratio']:.4f}")
        pruned = setup.scorer.build(keep)
        stage_params, stage_macs = _stage_shares(setup, keep, pruned)
        record = {"id": job_id, "family": family, "group": GROUPS.get(family, "cheap"), "keep": keep,
                  "ratios": summary["ratios"], "macs_ratio": round(summary["macs_ratio"], 6),
                  "params_ratio": round(summary["params_ratio"], 6), "stage_params": stage_params,
                  "stage_macs": stage_macs, "heldout_bn": evaluator.top1(pruned),
                  "heldout_nobn": evaluator.top1(plain.build(keep)), "draw": draw}
        policies.append(record)
        print(f"[{n + 1}/{len(drawn)}] {job_id} {keep} macs {record['macs_ratio']:.4f} "
              f"params {record['params_ratio']:.3f} held-out {100 * record['heldout_bn']:.2f} "
              f"(no BN recal. {100 * record['heldout_nobn']:.2f})", flush=True)
    t_end = time.perf_counter()
    meta = {"model": args.model, "ratio": args.ratio, "lbound": args.lbound, "seed": args.seed,
            "ramp_spread": args.ramp_spread, "setup": spec, "data": args.data, "weights_dir": args.weights_dir,
            "policies": len(policies), "families": {f: sum(p["family"] == f for p in policies)
                                                    for f in (*CHEAP, *SAMPLED)},
            "macs_ratio_range": [min(p["macs_ratio"] for p in policies), max(p["macs_ratio"] for p in policies)],
            "seconds": {"setup": round(t_setup - t_start, 1), "knapsack": round(t_knapsack - t_setup, 1),
                        "draws": round(t_drawn - t_knapsack, 1), "scoring": round(t_end - t_drawn, 1),
                        "total": round(t_end - t_start, 1)},
            "threads": 1}
    from amc.atomic import write_json_atomic
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, {"meta": meta, "policies": policies})
    print(f"{len(policies)} policies -> {out}; seconds: {meta['seconds']}")


# ---- bundle (here) ----------------------------------------------------------------------------------------
def _load_results(files: list[str]) -> dict[tuple[str, int], dict]:
    """Fine-tune records of finetune_grid.py by (id, fine-tune seed); a later file's record of a pair wins."""
    results = {}
    for path in files:
        if Path(path).exists():
            for line in Path(path).read_text().splitlines():
                r = json.loads(line)
                if "test_top1" in r:
                    results[(r["id"], r["ft_seed"])] = r
    return results


def _mixed_order(policies: list[dict]) -> list[dict]:
    """Sampled policies interleaved by family in proportion to its size, so that any prefix mixes the families."""
    position = {}
    for family in SAMPLED:
        members = [p for p in policies if p["family"] == family]
        for i, p in enumerate(members):
            position[p["id"]] = ((i + 0.5) / len(members), list(SAMPLED).index(family))
    return sorted((p for p in policies if p["family"] in SAMPLED), key=lambda p: position[p["id"]])


def bundle(args: argparse.Namespace) -> None:
    import shutil
    from finetune_grid import pack_dataset  # noqa: PLC0415 - the bundle format lives beside this file
    data = json.loads(Path(args.policies).read_text())
    meta, policies = data["meta"], data["policies"]
    confirm: set[str] = set()
    if args.confirm_top:
        results = _load_results(args.results or [])
        scored = [p for p in policies if p["family"] in SAMPLED and (p["id"], 0) in results]
        scored.sort(key=lambda p: -results[(p["id"], 0)]["test_top1"])
        confirm = {p["id"] for p in scored[:args.confirm_top]}
    jobs = []
    # cheap allocators first (all their seeds: priority + 2 x seed index stays under the sampled ones' 10), then
    # the policies to confirm, then the sampled ones, families mixed
    for priority, group in ((0, [p for p in policies if p["family"] in CHEAP]),
                            (1, [p for p in _mixed_order(policies) if p["id"] in confirm]),
                            (10, [p for p in _mixed_order(policies) if p["id"] not in confirm])):
        for p in group:
            seeds = CHEAP_FT_SEEDS if p["family"] in CHEAP or p["id"] in confirm else SAMPLED_FT_SEEDS
            jobs.append({"id": p["id"], "key": json.dumps([meta["setup"], p["keep"], None]), "priority": priority,
                         "setup": meta["setup"], "keep": p["keep"], "heldout_expected": p["heldout_bn"],
                         "macs_ratio": p["macs_ratio"], "study": args.curves, "ft_seeds": seeds,
                         "tags": [{"budget": NAME, "method": p["family"], "role": "headroom"}]})
    out = Path(args.bundle)
    out.mkdir(parents=True, exist_ok=True)
    (out / "jobs.json").write_text(json.dumps(jobs, indent=1))
    weights = out / f"{meta['model']}.pt"
    if not weights.exists():
        shutil.copy(Path(meta["weights_dir"]) / f"{meta['model']}.pt", weights)
    if not (out / "data.pkl").exists():
        t0 = time.time()
        pack_dataset(Path(meta["data"]), out / "data.pkl")
        print(f"data packed in {time.time() - t0:.0f}s")
    print(f"{len(jobs)} policies, {sum(len(j['ft_seeds']) for j in jobs)} fine-tunes "
          f"({len(confirm)} confirmed with 3 seeds) -> {out}")


# ---- report (here; numpy, scipy and matplotlib only) ----------------------------------------------------------
def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def _expected_max(n: int) -> float:
    """Expected maximum of n standard normal draws (Blom's approximation)."""
    return statistics.NormalDist().inv_cdf((n - 0.375) / (n + 0.25)) if n > 1 else 0.0


def report(args: argparse.Namespace) -> None:
    from scipy.stats import kendalltau
    data = json.loads(Path(args.policies).read_text())
    policies = data["policies"]
    results = _load_results(args.results)
    errors = sum(1 for path in args.results if Path(path).exists()
                 for line in Path(path).read_text().splitlines() if '"error"' in line)
    for p in policies:
        p["tests"] = {s: results[(p["id"], s)]["test_top1"] for s in (0, 1, 2) if (p["id"], s) in results}
        p["rebuilt"] = results[(p["id"], 0)].get("heldout_rebuilt") if (p["id"], 0) in results else None
    counts = {k: sum(r.get("precision", "bf16") == k for r in results.values()) for k in ("bf16", "fp32")}
    seconds = [r["seconds"] for r in results.values() if "seconds" in r]
    done = [p for p in policies if 0 in p["tests"]]
    sampled = [p for p in done if p["family"] in SAMPLED]
    cheap = {p["family"]: p for p in policies if p["family"] in CHEAP}
    lines = [f"# Headroom at {100 * data['meta']['ratio']:g}% MACs, {data['meta']['model']} "
             f"(lbound {data['meta']['lbound']:g})", "",
             f"Fine-tuned with seed 0: **{len(done)} of {len(policies)} policies** ({len(sampled)} sampled of "
             f"{sum(p['family'] in SAMPLED for p in policies)}); {len(results)} fine-tunes, {errors} failed; "
             f"precision {', '.join(f'{k}: {n}' for k, n in counts.items() if n) or '-'}"
             + (f"; {statistics.median(seconds) / 60:.1f} min per fine-tune (median)" if seconds else "") + ".", ""]
    if len([n for n in counts.values() if n]) > 1:
        lines += ["**Mixed precisions**: compare fine-tunes of one precision only.", ""]

    # the allocators, with their seed spread
    lines += ["| allocator | test top-1 after FT (seeds) | FT seeds | held-out, no FT | held-out, no FT, no BN recal. "
              "| params kept | keep counts |", "| --- | --- | --- | --- | --- | --- | --- |"]
    seed_stds = []
    for name, p in cheap.items():
        tests = [p["tests"][s] for s in sorted(p["tests"])]
        if len(tests) > 1:
            seed_stds.append(statistics.stdev(tests))
        lines.append(f"| {name} | {_mean_std(tests)} | {len(tests)} | {100 * p['heldout_bn']:.2f} | "
                     f"{100 * p['heldout_nobn']:.2f} | {p['params_ratio']:.3f} | {' '.join(map(str, p['keep']))} |")
    seed_std = statistics.mean(seed_stds) if seed_stds else None
    lines.append("")

    # the best sampled policy against each allocator
    if sampled:
        best = max(sampled, key=lambda p: p["tests"][0])
        tests = np.array([p["tests"][0] for p in sampled])
        lines += [f"Sampled policies (seed 0): n = {len(sampled)}, median {100 * np.median(tests):.2f}, "
                  f"90th percentile {100 * np.percentile(tests, 90):.2f}, best {100 * best['tests'][0]:.2f} "
                  f"(`{best['id']}`, keep {' '.join(map(str, best['keep']))}, params {best['params_ratio']:.3f}).", "",
                  "| against | allocator (mean over its seeds) | best sampled - allocator | seed std of the allocator "
                  "| sampled >= allocator + 0.5 |", "| --- | --- | --- | --- | --- |"]
        for name in ("shallower", "knapsack", "uniform", "deeper"):
            if name in cheap and cheap[name]["tests"]:
                ref = list(cheap[name]["tests"].values())
                mean = statistics.mean(ref)
                std = f"{100 * statistics.stdev(ref):.2f}" if len(ref) > 1 else "-"
                lines.append(f"| {name} | {100 * mean:.2f} | **{100 * (best['tests'][0] - mean):+.2f}** | {std} | "
                             f"{int((tests >= mean + 0.005).sum())} of {len(tests)} |")
        if seed_std is not None:
            lines += ["", f"Selection bias: with a fine-tune seed std of {100 * seed_std:.2f} (mean over the "
                      f"allocators), the best of {len(sampled)} single-seed fine-tunes of equally good policies "
                      f"would lie about {100 * seed_std * _expected_max(len(sampled)):.2f} above their mean; a "
                      "margin of that size needs `bundle --confirm-top K` (seeds 1 and 2) before it counts."]
        confirmed = [p for p in sampled if len(p["tests"]) > 1]
        if confirmed:
            lines += ["", "| confirmed policy | family | seed 0 | all seeds |", "| --- | --- | --- | --- |"]
            for p in sorted(confirmed, key=lambda p: -statistics.mean(p["tests"].values())):
                lines.append(f"| `{p['id']}` | {p['family']} | {100 * p['tests'][0]:.2f} | "
                             f"{_mean_std(list(p['tests'].values()))} |")
        lines.append("")

        # by family
        lines += ["| family | n | test top-1, seed 0: mean ± std | best | held-out, no FT (mean) "
                  "| params kept (mean) |", "| --- | --- | --- | --- | --- | --- |"]
        for family in SAMPLED:
            members = [p for p in sampled if p["family"] == family]
            if members:
                lines.append(f"| {family} | {len(members)} | {_mean_std([p['tests'][0] for p in members])} | "
                             f"{100 * max(p['tests'][0] for p in members):.2f} | "
                             f"{100 * statistics.mean(p['heldout_bn'] for p in members):.2f} | "
                             f"{statistics.mean(p['params_ratio'] for p in members):.3f} |")
        lines.append("")

    # what the top decile shares (every policy, ranked by its seed-0 fine-tune)
    if len(done) >= 10:
        ranked = sorted(done, key=lambda p: -p["tests"][0])
        top, rest = ranked[:max(1, len(ranked) // 10)], ranked[max(1, len(ranked) // 10):]
        stages = list(done[0]["stage_params"])

        def row(label: str, ps: list[dict]) -> str:
            keep = np.mean([p["keep"] for p in ps], axis=0)
            return (f"| {label} | {len(ps)} | {100 * statistics.mean(p['tests'][0] for p in ps):.2f} | "
                    + " | ".join(f"{statistics.mean(p['stage_params'][s] for p in ps):.3f}" for s in stages)
                    + f" | {statistics.mean(p['params_ratio'] for p in ps):.3f} | "
                    f"{100 * statistics.mean(p['heldout_bn'] for p in ps):.2f} | "
                    f"{100 * statistics.mean(p['heldout_nobn'] for p in ps):.2f} | "
                    f"{' '.join(f'{k:.1f}' for k in keep)} |")

        lines += ["The top decile by test top-1 (seed 0) against the rest: parameters kept per stage (share of the "
                  "stage), scores without fine-tuning, mean keep counts.", "",
                  "| policies | n | test top-1 | " + " | ".join(f"params {s}" for s in stages)
                  + " | params | held-out | held-out, no BN recal. | keep counts |",
                  "|" + " --- |" * (7 + len(stages)), row("top decile", top), row("the rest", rest)]
        if "shallower" in cheap and 0 in cheap["shallower"]["tests"]:
            lines.append(row("the ramp", [cheap["shallower"]]))
        lines += ["", "Top decile: " + ", ".join(f"`{p['id'].removeprefix(NAME + '/')}`" for p in top), ""]

    # which cheap score ranks the fine-tuned policies
    if len(done) >= 5:
        scores = {"held-out, BN recalibrated": lambda p: p["heldout_bn"],
                  "held-out, no BN recalibration": lambda p: p["heldout_nobn"],
                  "params kept": lambda p: p["params_ratio"]}
        scores.update({f"params kept in {s}": (lambda p, s=s: p["stage_params"][s]) for s in done[0]["stage_params"]})
        subsets = [("all", done)] + [(g, [p for p in done if p["group"] == g]) for g in dict.fromkeys(GROUPS.values())]
        subsets = [(label, ps) for label, ps in subsets if len(ps) >= 5]
        lines += ["Kendall tau (p) of each score without fine-tuning against test top-1 after it (seed 0):", "",
                  "| score | " + " | ".join(f"{label} (n={len(ps)})" for label, ps in subsets) + " |",
                  "|" + " --- |" * (1 + len(subsets))]
        for label, score in scores.items():
            cells = []
            for _, ps in subsets:
                tau, p_value = kendalltau([score(p) for p in ps], [p["tests"][0] for p in ps])
                cells.append(f"{tau:.2f} ({p_value:.0e})" if not math.isnan(tau) else "-")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        gaps = [abs(p["rebuilt"] - p["heldout_bn"]) for p in done if p["rebuilt"] is not None]
        if gaps:
            lines += ["", f"Rebuilt there against scored here (held-out, BN recalibrated): max |difference| "
                      f"{100 * max(gaps):.2f} points over {len(gaps)} policies."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text)
    if args.figure and done:
        plot(policies, done, cheap, Path(args.figure))


def plot(policies: list[dict], done: list[dict], cheap: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colours = dict(zip(SAMPLED, plt.get_cmap("tab10").colors))
    sampled = [p for p in done if p["family"] in SAMPLED]
    ax = axes[0]
    if sampled:
        values = [100 * p["tests"][0] for p in sampled]
        bins = np.linspace(min(values) - 0.25, max(values) + 0.25, 30)
        stacks = [[100 * p["tests"][0] for p in sampled if p["family"] == f] for f in SAMPLED]
        ax.hist(stacks, bins=bins, stacked=True, color=[colours[f] for f in SAMPLED],
                label=[f"{f} ({len(s)})" for f, s in zip(SAMPLED, stacks)])
    styles = {"shallower": "tab:red", "knapsack": "tab:green", "uniform": "black", "deeper": "tab:gray"}
    for name, p in cheap.items():
        if p["tests"]:
            tests = [100 * t for t in p["tests"].values()]
            mean = statistics.mean(tests)
            std = statistics.stdev(tests) if len(tests) > 1 else 0.0
            ax.axvline(mean, color=styles[name], linestyle="--", label=f"{name} {mean:.2f} ± {std:.2f}")
            ax.axvspan(mean - std, mean + std, color=styles[name], alpha=0.12)
    ax.set_xlabel("test top-1 after the fine-tune (%), seed 0")
    ax.set_ylabel("policies")
    ax.set_title(f"{len(sampled)} sampled policies at the budget")
    ax.legend(fontsize=7)
    for ax, key, label in ((axes[1], "heldout_nobn", "held-out top-1 before FT, no BN recalibration (%)"),
                           (axes[2], "params_ratio", "share of parameters kept")):
        scale = 100 if key.startswith("heldout") else 1
        for family in (*SAMPLED, *CHEAP):
            ps = [p for p in done if p["family"] == family]
            if ps:
                cheap_one = family in CHEAP
                ax.scatter([scale * p[key] for p in ps], [100 * p["tests"][0] for p in ps], s=40 if cheap_one else 14,
                           marker="*" if cheap_one else "o", label=family, color=styles.get(family) or colours[family])
        ax.set_xlabel(label)
        ax.set_ylabel("test top-1 after FT (%), seed 0")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"figure -> {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="draw the policies and score them without fine-tuning")
    s.add_argument("--out", default="benchmarks/results/issue30_headroom_r20_policies.json")
    s.add_argument("--model", default="resnet20")
    s.add_argument("--ratio", type=float, default=0.2, help="MACs budget as a share of the original")
    s.add_argument("--lbound", type=float, default=0.1, help="smallest preserve ratio of any decision")
    s.add_argument("--ramp-spread", type=float, default=0.5, help="spread of the shallower/deeper ramps")
    s.add_argument("--seed", type=int, default=0, help="seed of the draws and of the scorer's calibration images")
    s.add_argument("--scale", type=float, default=1.0, help="multiply every sampled family's size (a smoke test)")
    s.add_argument("--data", default=DATA)
    s.add_argument("--weights-dir", default=WEIGHTS_DIR)
    b = sub.add_parser("bundle", help="pack the policies as a finetune_grid.py bundle")
    b.add_argument("--policies", required=True)
    b.add_argument("--bundle", required=True)
    b.add_argument("--curves", action="store_true",
                   help="also short fine-tune curves per policy (finetune_grid's study; a GPU's job)")
    b.add_argument("--confirm-top", type=int, default=0, help="the best K sampled policies so far get seeds 1, 2")
    b.add_argument("--results", nargs="*", help="results.jsonl files that rank them (with --confirm-top)")
    r = sub.add_parser("report", help="histogram, tables and rank correlations")
    r.add_argument("--policies", required=True)
    r.add_argument("--results", nargs="+", required=True, help="finetune_grid.py results.jsonl files")
    r.add_argument("--figure", default="benchmarks/figures/issue30_headroom.png")
    r.add_argument("--md", default="benchmarks/figures/issue30_headroom.md")
    args = parser.parse_args(argv)
    {"sample": sample, "bundle": bundle, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
