"""Was the search worth it: the uniform policy and the shallower-more ramp at the search's budget, scored as the
export is, in summary.json, the console's last lines and the report; and run files that follow the umask."""

import json
import os
import stat
import sys

import pytest

import amc
from amc.baselines import verdict
from amc.cost import count_macs
from amc.data import load_dataset
from amc.search import SearchConfig


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(**kw):
    return SearchConfig(**{**dict(agent="ddpg", episodes=6, warmup=2, calibration_images=300, seed=0, ratio=0.3, lbound=0.2), **kw})


@pytest.fixture(scope="module")
def ddpg(tmp_path_factory, digits):
    return amc.search(config=_config(), out=tmp_path_factory.mktemp("baselines") / "ddpg", data=digits)


def test_the_uniform_baseline_is_the_uniform_agents_exported_policy(ddpg, digits, tmp_path):
    uniform = amc.search(config=_config(agent="uniform"), out=tmp_path / "uniform", data=digits).summary
    baseline = ddpg.baselines["uniform"]
    # the same policy, scored the same way, as when the uniform agent exports it
    assert baseline["keep"] == uniform["baselines"]["uniform"]["keep"] == json.loads(
        (tmp_path / "uniform" / "policy.json").read_text())["keep"]
    assert baseline["heldout_top1"] == uniform["heldout_top1"] and baseline["test_top1"] == uniform["test_top1"]
    assert baseline["macs_ratio"] == pytest.approx(uniform["macs_ratio"])
    assert uniform["baselines"]["uniform"]["scored"] == "the exported policy"  # not scored twice


def test_baselines_meet_the_budget_and_are_scored_as_the_export(ddpg, digits):
    from amc.evaluate import Evaluator
    from amc.pipeline import prepare
    setup = prepare(_config(), dataset=digits)
    summary, info = ddpg.summary, setup.info
    assert set(ddpg.baselines) == {"uniform", "shallower"}
    for name, baseline in ddpg.baselines.items():
        pruned = setup.scorer.build(baseline["keep"])
        macs, total = count_macs(pruned, info.input_shape), setup.graph.total_macs
        assert macs / total == pytest.approx(baseline["macs_ratio"]) and macs <= 0.3 * total
        assert baseline["test_top1"] == Evaluator(digits.test, info.mean, info.std).top1(pruned), name
        assert baseline["heldout_top1"] == Evaluator(digits.heldout, info.mean, info.std).top1(pruned), name
    ramp = ddpg.baselines["shallower"]["keep"]
    assert ramp[0] < ddpg.baselines["uniform"]["keep"][0]  # the ramp prunes the first layer more
    # DDPG's first warm-up episode is its anchor, the ramp: its full held-out score is reused, not recomputed
    assert ddpg.episodes[0]["keep"] == ramp and "log" in ddpg.baselines["shallower"]["scored"]
    assert ddpg.baselines["shallower"]["heldout_top1"] == ddpg.episodes[0]["accuracy"]
    best = {s: max(b[s] for b in ddpg.baselines.values()) for s in ("heldout_top1", "test_top1")}
    margin = summary["searched_minus_best_baseline"]
    assert margin["heldout_top1"] == pytest.approx(summary["heldout_top1"] - best["heldout_top1"])
    assert margin["test_top1"] == pytest.approx(summary["test_top1"] - best["test_top1"])
    written = json.loads((ddpg.run_dir / "summary.json").read_text())
    assert written["baselines"] == ddpg.baselines


def test_a_search_without_a_budget_has_no_baselines(tmp_path, digits):
    result = amc.search(config=_config(reward="acc-macs", episodes=2, warmup=1), out=tmp_path / "r", data=digits)
    assert result.baselines == {} and "searched_minus_best_baseline" not in result.summary
    assert verdict(result.summary) is None


def test_the_verdict_says_what_the_search_bought_or_that_it_did_not():
    summary = {"test_top1": 0.9554, "baselines": {"uniform": {"test_top1": 0.9499}, "shallower": {"test_top1": 0.6685}},
               "searched_minus_best_baseline": {"test_top1": 0.0055}}
    assert verdict(summary) == ("test top-1: uniform at the same budget: 94.99%, ramp (shallower layers pruned more): "
                                "66.85%, searched: 95.54% (+0.55 points over the best of them)")
    summary["searched_minus_best_baseline"]["test_top1"] = -0.011
    assert verdict(summary).endswith("(-1.10 points: the search did not beat them)")


def test_the_console_ends_with_the_comparison(tmp_path, monkeypatch, capsys):
    from amc.cli import main
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["amc", "search", "--episodes", "3", "--warmup", "1", "--ratio", "0.3",
                                      "--calibration-images", "300", "--out", str(out), "--json"])
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None)
    printed = capsys.readouterr()
    last = printed.err.strip().splitlines()[-1]  # the console's lines go to stderr, the JSON result to stdout
    summary = json.loads((out / "summary.json").read_text())
    assert last == verdict(summary)
    assert f"uniform at the same budget: {100 * summary['baselines']['uniform']['test_top1']:.2f}%" in last
    assert f"searched: {100 * summary['test_top1']:.2f}%" in last
    result = json.loads(printed.out.strip().splitlines()[-1])
    assert result["searched_minus_best_baseline"] == summary["searched_minus_best_baseline"]["test_top1"]


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_run_files_follow_the_umask(tmp_path, digits, umask, file_mode, dir_mode):
    pytest.importorskip("matplotlib")
    from amc.report import write_report
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        amc.search(config=_config(agent="uniform"), out=out, data=digits)
        write_report(out)
    finally:
        os.umask(old)
    paths = [out, *out.rglob("*")]
    assert {"summary.json", "model.pt", "state.pt", "report.html", "episodes.jsonl"} <= {p.name for p in paths}
    assert {str(p): stat.S_IMODE(p.stat().st_mode) for p in paths} == \
        {str(p): dir_mode if p.is_dir() else file_mode for p in paths}
