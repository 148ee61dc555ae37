"""Is there headroom over the cheap allocators? Many policies at one budget, each given the same fine-tune.

At 20% of ResNet-20's MACs (CIFAR-10 JPEG, lbound 0.1) the cheap allocators (uniform, the "prune shallower layers
more" ramp that DDPG is anchored at, the knapsack) tie after fine-tuning, and no search beat them (issue 17 in
benchmarks/RESULTS.md). Here >= 100 distinct per-layer policies that meet the budget exactly (played through
the budget's rounding and clipping, as an agent's answers are) are drawn around the ramp, around the
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

Families (each policy is played through the budget as an agent's answers are, so its clipping has the last word):
- the cheap allocators: `uniform`, `shallower` (the ramp, DDPG's default anchor), `deeper` (the reverse ramp) and
  `knapsack` (amc's allocator), fine-tuned with three seeds each;
- `near-shallower`, `near-knapsack`: the anchor's ratios each multiplied by exp(N(0, sigma)), sigma cycling over
  SIGMAS, then shifted onto the budget by `Budget.fit_to_budget` (the policy's shape kept);
- `ddpg-shallower`, `ddpg-knapsack`: DDPG's own budget warm-up episodes anchored there (`make_agent("ddpg", ...)`,
  its default `anchor_sigma`, `fit_to_budget`), as a search explores. In the first sample (session 12) they were
  not near the anchor: the warm-up then drew in the logit, where a decision the anchor holds at the lower bound
  (the ramp's first four) got a spread of hundreds, nearly a coin flip between lbound and 1, and the fit to the
  budget took the rest down; hence the near-* families beside them. It still does by default; with
  `--agent-option warmup_noise=relative` (session 16) it draws relative noise and these episodes sit near the
  anchor (`sample --warmup-noise relative`);
- `near-reference`: as near-*, around `--reference` (keep counts found elsewhere, e.g. FastNAS's widths);
- `broad`: per stage a random level and a random tilt over depth (plus a little per-decision noise) in the logit
  of the ratio's position in [lbound, 1], then `fit_to_budget`: random shares per stage, different depth profiles.
Sampled policies are fine-tuned with one seed; `bundle --confirm-top K` adds seeds 1 and 2 to the best K so far.
The report is `headroom_report.py`'s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from common import SHARED_DATA, SHARED_WEIGHTS, fixed_ratios
from grid_files import (
    DATA_FILE,
    fine_tunes,
    job_key,
    pack_dataset,
    read_records,
    setup_spec,
    write_jobs,
)

NAME = "headroom-r20-r0.2"  # job ids are NAME/family[/index]
CHEAP = ("uniform", "shallower", "deeper", "knapsack")  # amc's anchors (`amc.agents.ANCHORS`)
REFERENCE = "reference"  # a policy found elsewhere (`sample --reference`), e.g. FastNAS's widths: 3 seeds, as CHEAP
# the sampled families and their default sizes (their order seeds their draws: append, never reorder)
SAMPLED = {"near-shallower": 20, "ddpg-shallower": 10, "near-knapsack": 20, "ddpg-knapsack": 10, "broad": 40,
           "near-reference": 0}
GROUPS = {"near-shallower": "around the ramp", "ddpg-shallower": "around the ramp",
          "near-knapsack": "around the knapsack", "ddpg-knapsack": "around the knapsack", "broad": "broad",
          "near-reference": "around the reference"}
SEARCH = "search"  # DDPG's `amc search` exports at the same budget, one per search seed (`sample --searches`)
ANCHORED = (*CHEAP, REFERENCE, SEARCH)  # exact policies, fine-tuned with every seed of CHEAP_FT_SEEDS
SIGMAS = (0.15, 0.3, 0.45)  # log-ratio noise of the near-* families, cycled
CHEAP_FT_SEEDS, SAMPLED_FT_SEEDS = [0, 1, 2], [0]


# ---- sample (here) ----------------------------------------------------------------------------------------
def _stage(layer_name: str) -> str:
    """'layer2.1.conv1' -> 'layer2': the top-level module a layer sits in (a ResNet stage)."""
    return layer_name.split(".")[0]


STAGE_RULES = ("modules", "resolution")


def stage_names(graph, model, rule: str) -> tuple[list[str], dict[str, str]]:
    """(each decision's stage, each parameterised module's stage) under `rule`: `modules`, the top-level module
    (a ResNet's layer1..3; a plain chain such as vgg16 is all one `features`), or `resolution`, the feature map the
    layer writes ('16x16'), where a BatchNorm joins the conv before it and a linear layer the last conv's stage
    (a ResNet's stages either way; vgg16's five blocks between its max-pools)."""
    if rule == "modules":
        return ([_stage(d.consumer) for d in graph.decisions],
                {name: _stage(name) for name, _ in model.named_modules() if name})
    if rule not in STAGE_RULES:
        raise ValueError(f"stage rule {rule!r}: one of {', '.join(STAGE_RULES)}")
    module_stage, current = {}, None
    for name, _ in model.named_modules():  # forward order for these models: a norm follows its conv
        cost = graph.costs.get(name)
        if cost is not None and cost.kind == "conv":
            current = f"{cost.out_hw[0]}x{cost.out_hw[1]}"
        if name and current is not None:
            module_stage[name] = current
    return [module_stage.get(d.producer, "head") for d in graph.decisions], module_stage


class Sampler:
    """The draws of every family at one budget (the environment `env` walks it); `distinct` refuses a policy
    seen before."""

    def __init__(self, env, seed: int, warmup_noise: str = "budget", stages: list[str] | None = None):
        self.env, self.budget, self.seed, self.warmup_noise = env, env.budget, seed, warmup_noise
        self.lbound = self.budget.config.lbound
        self.stages = stages or [_stage(d.consumer) for d in env.decisions]
        self.seen: set[tuple[int, ...]] = set()

    def distinct(self, keep: list[int]) -> bool:
        if tuple(keep) in self.seen:
            return False
        self.seen.add(tuple(keep))
        return True

    def cheap(self, ratios: list[float]) -> list[int]:
        keep = self.budget.play(ratios)
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
            keep = self.budget.play(self.budget.fit_to_budget(drawn.tolist()))
            if self.distinct(keep):
                out.append((keep, {"sigma": sigma, "draw": tries - 1}))
        return out

    def ddpg(self, anchor, count: int) -> list[tuple[list[int], dict]]:
        """DDPG's budget warm-up episodes around `anchor`, as `amc search` plays them (episode 0 is the anchor)."""
        from amc.agents import make_agent
        from amc.rollout import run_episode
        agent = make_agent("ddpg", self.budget, self.seed, anchor=anchor, warmup_episodes=10**6,
                           warmup_noise=self.warmup_noise)
        out, episode = [], 0
        while len(out) < count and episode < 100 * count:
            episode += 1
            with self.env.deferred_scoring():
                record, _, _ = run_episode(self.env, agent, episode)
            if self.distinct(record["keep"]):
                out.append((list(record["keep"]), {"episode": episode, "anchor_sigma": agent.config.anchor_sigma}))
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
            keep = self.budget.play(self.budget.fit_to_budget(ratios.tolist()))
            if self.distinct(keep):
                out.append((keep, {"levels": np.round(levels, 3).tolist(), "tilts": np.round(tilts, 3).tolist(),
                                   "draw": tries - 1}))
        return out


def sample_config(dataset: str, model: str, ratio: float, lbound: float, seed: int, data: str, weights_dir: str,
                  device: str = "auto"):
    """The search settings a sample is drawn and scored with: CIFAR-10 from `data` with `weights_dir`'s
    `model`.pt, or the embedded digits and the digits CNN's bundled weights; scored on `device`."""
    from amc.config import SearchConfig
    shared = {"model": model, "ratio": ratio, "lbound": lbound, "seed": seed, "threads": 1, "device": device}
    if dataset == "digits":
        return SearchConfig(data="digits", **shared)
    return SearchConfig(data="cifar10", data_dir=data, weights=str(Path(weights_dir) / f"{model}.pt"), **shared)


def _searches(config, count: int) -> list[tuple[list[int], dict]]:
    """The keep counts `amc search --agent ddpg` exports with `config` and seeds 0..count-1 (DDPG: the searcher
    whose seeds differ; it was the default until session 18)."""
    import tempfile
    from dataclasses import replace

    from amc.search import search
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(count):
            t0 = time.perf_counter()
            result = search(out=Path(tmp) / f"s{seed}", config=replace(config, seed=seed, agent="ddpg"))
            seconds = round(time.perf_counter() - t0, 1)
            found.append((list(result.policy.keep), {"seed": seed, "agent": "ddpg", "seconds": seconds,
                                                     "search_heldout": result.best_val_top1}))
            print(f"search seed {seed}: {found[-1][0]} in {seconds:.0f}s", flush=True)
    return found


def _stage_shares(graph, original, keep: list[int], pruned, rule: str = "modules") -> tuple[dict, dict]:
    """Per stage of `graph`'s decisions (`stage_names`' rule): parameters kept (share of that stage's parameters in
    the `original` network, BN included) and the stage's conv/linear MACs as a share of the original's."""
    decision_stages, module_stage = stage_names(graph, original, rule)
    stages = list(dict.fromkeys(decision_stages))

    def params_by_stage(model) -> dict[str, int]:
        counts = dict.fromkeys(stages, 0)
        for name, p in model.named_parameters():
            stage = module_stage.get(name.rpartition(".")[0])
            if stage in counts:
                counts[stage] += p.numel()
        return counts

    before, kept = params_by_stage(original), params_by_stage(pruned)
    macs = dict.fromkeys(stages, 0.0)
    for term, cin, cout in graph.layer_channels(keep):
        if module_stage.get(term.name) in macs:
            macs[module_stage[term.name]] += term.macs_per_pair * (cout if term.depthwise else cin / term.groups * cout)
    total = graph.total_macs
    return ({s: round(kept[s] / before[s], 5) for s in stages}, {s: round(macs[s] / total, 5) for s in stages})


def sample(args: argparse.Namespace) -> None:
    import torch

    from amc.agents import RAMP_SPREAD
    from amc.pipeline import prepare
    from amc.search import build_env
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    args.ramp_spread = RAMP_SPREAD if args.ramp_spread is None else args.ramp_spread
    # the scorer finetune_grid.py rebuilds, that of peers.py's +bn rows: amc search's calibration images and BN
    # recalibration (its defaults), calibrated by --seed
    config = sample_config(args.dataset, args.model, args.ratio, args.lbound, args.seed, args.data, args.weights_dir,
                           args.device)
    spec = setup_spec(config)
    setup = prepare(config)
    env, _ = build_env(setup, config)  # scores with BN recalibration (the knapsack's sensitivity uses it)
    sampler = Sampler(env, args.seed, args.warmup_noise, stage_names(setup.graph, setup.model, args.stages)[0])
    t_setup = time.perf_counter()
    anchors = {name: fixed_ratios(env.budget, name, args.ramp_spread, setup.scorer) for name in CHEAP}
    t_knapsack = time.perf_counter()  # the knapsack's sensitivities: the rest is instant
    sizes = _family_sizes(args.families)
    if args.reference:
        reference = [int(c) for c in args.reference.replace(",", " ").split()]
        if len(reference) != len(env.budget.channels):
            raise SystemExit(f"--reference has {len(reference)} counts; {args.model} has {len(env.budget.channels)} "
                             "decisions: give one keep count per decision")
        anchors[REFERENCE] = [k / c for k, c in zip(reference, env.budget.channels)]
    elif sizes.get("near-reference"):
        raise SystemExit("near-reference needs --reference: the keep counts to sample around")
    searches = _searches(config, args.searches)  # the default search's exports, one per seed

    sample_name = args.name
    drawn: list[tuple[str, str, list[int], dict]] = []  # (id, family, keep, draw)
    for name in [n for n in ANCHORED if n in anchors]:
        keep = sampler.cheap(anchors[name])
        if name == REFERENCE and keep != reference:
            print(f"reference {reference} plays as {keep} under this budget and lbound", flush=True)
        drawn.append((f"{sample_name}/{name}", name, keep, {}))
    for seed, (keep, draw) in enumerate(searches):
        sampler.distinct(keep)
        drawn.append((f"{sample_name}/{SEARCH}/s{seed}", SEARCH, keep, draw))
    for family, count in sizes.items():
        count = round(count * args.scale)
        if not count:
            continue
        kind, _, anchor = family.partition("-")
        found = (sampler.broad(count) if family == "broad" else sampler.near(family, anchors[anchor], count)
                 if kind == "near" else sampler.ddpg(anchors[anchor], count))
        if len(found) < count:
            print(f"{family}: only {len(found)} distinct policies of {count} asked", flush=True)
        drawn += [(f"{sample_name}/{family}/{i:02d}", family, keep, draw) for i, (keep, draw) in enumerate(found)]
    t_drawn = time.perf_counter()

    plain = setup.scorer.variant(recalibration=[])
    evaluator = setup.scorer.evaluator  # fp32, the whole held-out split
    policies = []
    for n, (job_id, family, keep, draw) in enumerate(drawn):
        summary = env.budget.summarize(keep)
        if summary["macs"] > env.budget.limit + 1e-6:
            raise AssertionError(f"{job_id} breaks the budget: {summary['macs_ratio']:.4f}")
        pruned = setup.scorer.build(keep)
        stage_params, stage_macs = _stage_shares(setup.graph, setup.model, keep, pruned, args.stages)
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
    meta = {"name": sample_name, "dataset": args.dataset, "model": args.model, "ratio": args.ratio, "lbound": args.lbound, "seed": args.seed,
            "ramp_spread": args.ramp_spread, "stages": args.stages, "setup": spec, "data": args.data, "weights_dir": args.weights_dir,
            "policies": len(policies), "families": {f: sum(p["family"] == f for p in policies)
                                                    for f in (*ANCHORED, *SAMPLED)},
            "searches": len(searches),
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


def read_policies(path: str | Path) -> tuple[dict, list[dict]]:
    """The (meta, policies) of a file `sample` wrote."""
    data = json.loads(Path(path).read_text())
    return data["meta"], data["policies"]


def _family_sizes(pairs: list[str] | None) -> dict[str, int]:
    """SAMPLED's sizes, or those of `family=count` pairs (the families not named get none)."""
    if not pairs:
        return dict(SAMPLED)
    sizes = dict.fromkeys(SAMPLED, 0)
    for pair in pairs:
        family, _, count = pair.partition("=")
        if family not in SAMPLED or not count.isdigit():
            raise SystemExit(f"--families {pair!r}: give family=count with a family of {', '.join(SAMPLED)}")
        sizes[family] = int(count)
    return sizes


# ---- bundle (here) ----------------------------------------------------------------------------------------
def _mixed_order(policies: list[dict]) -> list[dict]:
    """Sampled policies interleaved by family in proportion to its size, so that any prefix mixes the families."""
    position = {}
    for family in SAMPLED:
        members = [p for p in policies if p["family"] == family]
        for i, p in enumerate(members):
            position[p["id"]] = ((i + 0.5) / len(members), list(SAMPLED).index(family))
    return sorted((p for p in policies if p["family"] in SAMPLED), key=lambda p: position[p["id"]])


def bundle(args: argparse.Namespace) -> None:
    meta, policies = read_policies(args.policies)
    confirm: set[str] = set()
    if args.confirm_top:
        results = fine_tunes(read_records(args.results or []))
        scored = [p for p in policies if p["family"] in SAMPLED and (p["id"], 0) in results]
        scored.sort(key=lambda p: -results[(p["id"], 0)]["test_top1"])
        confirm = {p["id"] for p in scored[:args.confirm_top]}
    policies = [p for p in policies if p["family"] not in (args.exclude or [])]
    first: dict[tuple[int, ...], str] = {}
    for p in list(policies):  # an allocator that lands on another's policy (vgg16's knapsack kept uniform's)
        if first.setdefault(tuple(p["keep"]), p["id"]) != p["id"]:
            print(f"{p['id']}: the same policy as {first[tuple(p['keep'])]}, fine-tuned once (the report shows it "
                  "under both)", flush=True)
            policies.remove(p)
    jobs = []
    # cheap allocators first (all their seeds: priority + 2 x seed index stays under the sampled ones' 10), then
    # the policies to confirm, then the sampled ones, families mixed
    for priority, group in ((0, [p for p in policies if p["family"] in ANCHORED]),
                            (1, [p for p in _mixed_order(policies) if p["id"] in confirm]),
                            (10, [p for p in _mixed_order(policies) if p["id"] not in confirm])):
        for p in group:
            seeds = CHEAP_FT_SEEDS if p["family"] in ANCHORED or p["id"] in confirm else SAMPLED_FT_SEEDS
            jobs.append({"id": p["id"], "key": job_key(meta["setup"], p["keep"]), "priority": priority,
                         "setup": meta["setup"], "keep": p["keep"], "heldout_expected": p["heldout_bn"],
                         "macs_ratio": p["macs_ratio"], "study": args.curves, "ft_seeds": seeds,
                         "tags": [{"budget": meta.get("name", NAME), "method": p["family"], "role": "headroom"}]})
    out = Path(args.bundle)
    write_jobs(out, jobs)
    weights = out / f"{meta['model']}.pt"
    if not weights.exists():
        shutil.copy(Path(meta["weights_dir"]) / f"{meta['model']}.pt", weights)
    if not (out / DATA_FILE).exists():
        t0 = time.time()
        pack_dataset(Path(meta["data"]), out / DATA_FILE)
        print(f"data packed in {time.time() - t0:.0f}s")
    print(f"{len(jobs)} policies, {sum(len(j['ft_seeds']) for j in jobs)} fine-tunes "
          f"({len(confirm)} confirmed with 3 seeds) -> {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="draw the policies and score them without fine-tuning")
    s.add_argument("--out", default="benchmarks/results/issue30_headroom_r20_policies.json")
    s.add_argument("--model", default="resnet20")
    s.add_argument("--ratio", type=float, default=0.2, help="MACs budget as a share of the original")
    s.add_argument("--lbound", type=float, default=0.1, help="smallest preserve ratio of any decision")
    s.add_argument("--ramp-spread", type=float, help="spread of the shallower/deeper ramps (default: amc's)")
    s.add_argument("--seed", type=int, default=0, help="seed of the draws and of the scorer's calibration images")
    s.add_argument("--name", default=NAME, help="the sample's name: its job ids are NAME/family[/index]")
    s.add_argument("--families", nargs="*", metavar="FAMILY=COUNT",
                   help=f"sampled families and sizes (default: {' '.join(f'{k}={v}' for k, v in SAMPLED.items())})")
    s.add_argument("--reference", help="keep counts of a policy found elsewhere (e.g. FastNAS's widths), one per "
                                       "decision: fine-tuned with 3 seeds, and the anchor of near-reference")
    s.add_argument("--warmup-noise", default="budget", choices=("budget", "relative"),
                   help="DDPG's warm-up draw for the ddpg-* families (its warmup_noise option)")
    s.add_argument("--stages", default="modules", choices=STAGE_RULES,
                   help="what a stage is, for the broad family's levels and the report's per-stage shares: the "
                        "top-level module (a ResNet's layer1..3) or the feature map's size (a plain chain: vgg16)")
    s.add_argument("--scale", type=float, default=1.0, help="multiply every sampled family's size (a smoke test)")
    s.add_argument("--searches", type=int, default=0,
                   help=f"also `amc search --agent ddpg`'s export with seeds 0..N-1 (family {SEARCH}, 3 fine-tune "
                        "seeds)")
    s.add_argument("--dataset", default="cifar10", choices=("cifar10", "digits"),
                   help="cifar10 (--data, --weights-dir) or the embedded digits with the digits CNN's own weights")
    s.add_argument("--data", default=SHARED_DATA)
    s.add_argument("--device", default="auto", help="where the policies are scored (auto: a GPU where there is one)")
    s.add_argument("--weights-dir", default=SHARED_WEIGHTS)
    b = sub.add_parser("bundle", help="pack the policies as a finetune_grid.py bundle")
    b.add_argument("--policies", required=True)
    b.add_argument("--bundle", required=True)
    b.add_argument("--exclude", nargs="*", help="families left out of the bundle (e.g. deeper)")
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
    if args.command == "report":
        from headroom_report import (
            report,  # the tables and the figure, beside this file
        )
        report(args)
    else:
        {"sample": sample, "bundle": bundle}[args.command](args)


if __name__ == "__main__":
    main()
