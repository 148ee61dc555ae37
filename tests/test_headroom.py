"""benchmarks/headroom.py on the embedded digits CNN, fine-tuned in-process by headroom_local.py: every policy meets
the budget, the fine-tunes are recorded in finetune_grid's format, a second call resumes instead of repeating, the
best sampled policies get their confirming seeds, and the report reads the result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the benchmarks import each other by module name, as scripts do
    sys.path.insert(0, str(BENCHMARKS))


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    import headroom

    out = tmp_path_factory.mktemp("headroom") / "policies.json"
    headroom.main(["sample", "--dataset", "digits", "--model", "digits_cnn", "--ratio", "0.1", "--lbound", "0.1",
                   "--name", "t", "--scale", "0.05", "--out", str(out)])
    return out


def test_digits_sample_meets_the_budget_with_distinct_policies(sample):
    data = json.loads(sample.read_text())
    meta, policies = data["meta"], data["policies"]
    assert meta["dataset"] == "digits" and meta["searches"] == 0
    families = [p["family"] for p in policies]
    assert families[:4] == ["uniform", "shallower", "deeper", "knapsack"]
    assert len(policies) > 4 and set(families[4:]) <= {"near-shallower", "near-knapsack", "broad"}
    assert all(p["macs_ratio"] <= 0.1 + 1e-6 for p in policies)
    assert len({tuple(p["keep"]) for p in policies}) == len(policies)
    assert all(0 <= p["heldout_nobn"] <= 1 and 0 <= p["heldout_bn"] <= 1 for p in policies)


def test_local_fine_tunes_resume_confirm_the_best_and_report(sample, tmp_path, capsys):
    import headroom
    import headroom_local

    results = tmp_path / "results.jsonl"
    policies = json.loads(sample.read_text())["policies"]
    headroom_local.main(["--policies", str(sample), "--results", str(results), "--epochs", "1", "--confirm-top", "1"])
    records = [json.loads(line) for line in results.read_text().splitlines()]
    pairs = [(r["id"], r["ft_seed"]) for r in records]
    assert len(pairs) == len(set(pairs))  # each (policy, seed) once
    sampled = [p for p in policies if p["family"] in headroom.SAMPLED]
    cheap = [p for p in policies if p["family"] in headroom.ANCHORED]
    assert len(records) == 3 * len(cheap) + len(sampled) + 2  # the best sampled one gets seeds 1 and 2
    best = max(sampled, key=lambda p: next(r["test_top1"] for r in records if r["id"] == p["id"]))
    assert {r["ft_seed"] for r in records if r["id"] == best["id"]} == {0, 1, 2}
    assert all(r["heldout_rebuilt"] == next(p["heldout_bn"] for p in policies if p["id"] == r["id"])
               for r in records)
    assert all(0.1 < r["test_top1"] <= 1 and r["epochs"] == 1 for r in records)

    headroom_local.main(["--policies", str(sample), "--results", str(results), "--epochs", "1", "--confirm-top", "1"])
    assert len(results.read_text().splitlines()) == len(records)  # resumed: nothing fine-tuned twice

    capsys.readouterr()
    md = tmp_path / "report.md"
    headroom.main(["report", "--policies", str(sample), "--results", str(results), "--figure", "", "--md", str(md)])
    text = md.read_text()
    assert "| knapsack |" in text and "Kendall tau" in text

    # study curves of six policies (a grid's curve-only records) whose score orders them as their fine-tunes do
    curves = tmp_path / "curves.jsonl"
    seed0 = [r for r in records if r["ft_seed"] == 0][:6]
    curves.write_text("".join(json.dumps({"id": r["id"], "ft_seed": None, "short": {"50": r["test_top1"]}}) + "\n"
                              for r in seed0))
    headroom.main(["report", "--policies", str(sample), "--results", str(results), str(curves), "--figure", "",
                   "--md", str(md)])
    row = next(line for line in md.read_text().splitlines() if "short fine-tune of 50 steps" in line)
    assert row.split("|")[2].strip().startswith("1.00 (") and "n=6)" in row.split("|")[2]


def test_a_grid_job_without_least_squares_is_rebuilt_without_it_and_earlier_keys_stay_as_they_were():
    from grid_files import job_key, setup_config, setup_spec

    from amc.config import SearchConfig

    plain = setup_spec(SearchConfig(model="resnet20", data="cifar10"))
    assert "lsq" not in plain  # a bundle planned before the switch keeps its jobs' keys
    assert setup_config(plain).reconstruct
    off = setup_spec(SearchConfig(model="resnet20", data="cifar10", reconstruct=False))
    assert off == {**plain, "lsq": False} and not setup_config(off).reconstruct
    assert job_key(off, [1, 2]) != job_key(plain, [1, 2])


def test_a_grid_job_with_l2_selection_is_rebuilt_with_it():
    from grid_files import setup_config, setup_spec

    from amc.config import SearchConfig

    assert "selection" not in setup_spec(SearchConfig(model="resnet20", data="cifar10"))
    l2 = setup_spec(SearchConfig(model="resnet20", data="cifar10", selection="l2", reconstruct=False))
    assert l2["selection"] == "l2" and "lsq" in l2
    config = setup_config(l2)
    assert config.selection == "l2" and not config.reconstruct


def test_resolution_stages_split_a_plain_chain_at_its_pools_and_keep_a_resnets_stages():
    import headroom

    from amc.graph import LayerGraph
    from amc.models import resnet20, vgg16

    vgg = vgg16()
    graph = LayerGraph(vgg, (3, 32, 32))
    by_module, _ = headroom.stage_names(graph, vgg, "modules")
    by_map, module_stage = headroom.stage_names(graph, vgg, "resolution")
    assert set(by_module) == {"features", "classifier"}  # one stage for 12 of 13 decisions: why the rule exists
    assert by_map == ["32x32"] * 2 + ["16x16"] * 2 + ["8x8"] * 3 + ["4x4"] * 3 + ["2x2"] * 3
    assert module_stage["features.1"] == "32x32" and module_stage["classifier"] == "2x2"  # BN, linear: conv before

    params, macs = headroom._stage_shares(graph, vgg, [d.channels for d in graph.decisions], vgg, "resolution")
    assert list(params) == ["32x32", "16x16", "8x8", "4x4", "2x2"] and set(params.values()) == {1.0}
    assert sum(macs.values()) == pytest.approx(1.0, abs=1e-4)  # every conv and the classifier sit in a stage

    resnet = resnet20()
    graph = LayerGraph(resnet, (3, 32, 32))
    stages = {"layer1": "32x32", "layer2": "16x16", "layer3": "8x8"}
    assert [stages[s] for s in headroom.stage_names(graph, resnet, "modules")[0]] == \
        headroom.stage_names(graph, resnet, "resolution")[0]  # the same groups: ResNet samples draw as before


def test_an_allocator_landing_on_anothers_policy_is_fine_tuned_once_and_reported_under_both(sample, tmp_path):
    import headroom
    from grid_files import DATA_FILE, read_jobs

    data = json.loads(sample.read_text())
    by_family = {p["family"]: p for p in data["policies"]}
    by_family["knapsack"]["keep"] = list(by_family["uniform"]["keep"])  # as vgg16's knapsack kept uniform's
    twins = tmp_path / "policies.json"
    twins.write_text(json.dumps(data))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / f"{data['meta']['model']}.pt").touch()  # weights and data already there: bundle packs nothing
    (bundle / DATA_FILE).touch()
    headroom.main(["bundle", "--policies", str(twins), "--bundle", str(bundle)])
    ids = [job["id"] for job in read_jobs(bundle)]
    assert by_family["uniform"]["id"] in ids and by_family["knapsack"]["id"] not in ids
    assert len(ids) == len(data["policies"]) - 1

    # the report shows uniform's fine-tunes under the knapsack too, and counts the network once in its ranks
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"id": i, "ft_seed": s, "test_top1": 0.5 + 0.01 * n + 0.001 * s}) + "\n"
                               for n, i in enumerate(ids) for s in ((0, 1, 2) if n < 3 else (0,))))
    md = tmp_path / "report.md"
    headroom.main(["report", "--policies", str(twins), "--results", str(results), "--figure", "", "--md", str(md)])
    rows = {}  # the allocator table's rows (the first of each name)
    for line in md.read_text().splitlines():
        if line.startswith("| uniform") or line.startswith("| knapsack"):
            rows.setdefault(line.split("|")[1].strip(), line.split("|")[2].strip())
    assert rows["knapsack (= uniform)"] == rows["uniform"] != ""
    assert f"**{len(ids)} of {len(data['policies'])} policies**" in md.read_text()


def test_policies_given_as_keep_counts_pack_as_a_bundle_the_grid_reads(tmp_path):
    import finetune_grid
    import numpy as np
    from grid_files import DATA_FILE, job_key, read_jobs, unpack_dataset

    rng = np.random.default_rng(0)  # smooth pictures with a little noise: the bundle stores them as JPEG + residual
    ramp = np.linspace(0, 200, 32)[None, :, None, None] + np.linspace(0, 50, 32)[None, None, :, None]
    images = {k: (ramp + rng.integers(0, 6, (4, 32, 32, 3))).astype(np.uint8) for k in ("train_x", "test_x")}
    np.savez(tmp_path / "c.npz", **images, train_y=np.arange(4), test_y=np.arange(4)[::-1])
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "resnet20.pt").write_bytes(b"weights")
    setup = {"model": "resnet20", "seed": 0, "bn": 2, "calibration_images": 3000, "points_per_image": 10, "lsq": False}
    policies = {"r20-r0.1/rule/s0": {"keep": [1] * 6 + [12, 11, 11], "setup": setup},
                "r20-r0.1/export/s0": {"keep": [1, 1, 1, 6, 1, 1, 10, 2, 14], "setup": setup},
                "r56-r0.1/rule/s0": {"keep": [1] * 27, "setup": {**setup, "model": "resnet56"}}}
    (tmp_path / "p.json").write_text(json.dumps(policies))
    args = ["pack", "--policies", str(tmp_path / "p.json"), "--data", str(tmp_path / "c.npz"),
            "--weights-dir", str(tmp_path / "w"), "--bundle", str(tmp_path / "B")]
    finetune_grid.main([*args, "--only", "r20-", "--study", "--ft-seeds", "0", "2"])
    jobs = read_jobs(tmp_path / "B")
    assert [j["id"] for j in jobs] == ["r20-r0.1/rule/s0", "r20-r0.1/export/s0"]
    assert all(j["study"] and j["ft_seeds"] == [0, 2] and j["setup"] == setup for j in jobs)
    # the key plan gives the same policy, so that results of either kind of bundle join
    assert jobs[1]["key"] == job_key(setup, [1, 1, 1, 6, 1, 1, 10, 2, 14])
    assert jobs[0]["tags"] == [{"budget": "r20-r0.1", "method": "rule", "role": "row"}]
    assert (tmp_path / "B" / "resnet20.pt").read_bytes() == b"weights"
    assert unpack_dataset(tmp_path / "B" / DATA_FILE, tmp_path / "u.npz")
    unpacked = np.load(tmp_path / "u.npz")
    assert (unpacked["test_x"] == images["test_x"]).all() and list(unpacked["test_y"]) == [3, 2, 1, 0]
    with pytest.raises(SystemExit, match="--only a prefix"):
        finetune_grid.main([*args, "--only", "vgg16-"])
