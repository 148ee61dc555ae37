import json
import subprocess
import sys

import pytest
import torch

import amc
from amc import count_macs, models
from amc.data import load_dataset
from amc.errors import AmcError
from amc.evaluate import Evaluator
from amc.search import SearchConfig


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(**kw):
    base = dict(episodes=12, warmup=4, calibration_images=300, seed=0)
    return SearchConfig(**{**base, **kw})


def test_search_writes_run_and_exports_a_smaller_model(tmp_path, digits):
    result = amc.search(config=_config(), out=tmp_path / "run", data=digits)
    run = tmp_path / "run"
    for f in ("config.json", "episodes.jsonl", "policy.json", "model.pt", "model.json", "summary.json"):
        assert (run / f).exists(), f
    lines = [json.loads(x) for x in (run / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in lines] == list(range(12))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["macs_ratio"] <= 0.5 + 1e-9
    assert summary["best_val_top1"] == max(r["accuracy"] for r in lines)
    # the exported network's counted MACs equal what the policy predicted during the search
    best = max(lines, key=lambda r: r["reward"])
    assert summary["macs"] == best["macs"]
    pruned = amc.load_pruned(run)
    assert count_macs(pruned, (1, 8, 8)) == best["macs"]
    info = models.model_info(pruned)
    assert Evaluator(digits.heldout, info.mean, info.std).top1(pruned) == pytest.approx(result.best_val_top1)


def test_exported_model_loads_in_a_fresh_process_with_the_same_accuracy(tmp_path, digits):
    result = amc.search(config=_config(agent="uniform"), out=tmp_path / "u", data=digits)
    code = ("import amc, json; from amc.data import load_dataset; from amc.evaluate import Evaluator; "
            "from amc.models import model_info; m = amc.load_pruned(r'%s'); d = load_dataset('digits'); "
            "i = model_info(m); print(json.dumps(Evaluator(d.heldout, i.mean, i.std).top1(m)))" % (tmp_path / "u"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(result.best_val_top1)


def test_same_seed_same_policy(tmp_path, digits):
    a = amc.search(config=_config(agent="ddpg", episodes=8, warmup=3), out=tmp_path / "a", data=digits)
    b = amc.search(config=_config(agent="ddpg", episodes=8, warmup=3), out=tmp_path / "b", data=digits)
    assert a.policy.keep == b.policy.keep
    assert [r["keep"] for r in a.episodes] == [r["keep"] for r in b.episodes]


def test_resume_continues_and_matches_uninterrupted_run(tmp_path, digits):
    full = amc.search(config=_config(episodes=10, warmup=3), out=tmp_path / "full", data=digits)
    amc.search(config=_config(episodes=6, warmup=3), out=tmp_path / "part", data=digits)
    # continue the same run to 10 episodes
    cfg = json.loads((tmp_path / "part" / "config.json").read_text())
    cfg["search"]["episodes"] = 10
    (tmp_path / "part" / "config.json").write_text(json.dumps(cfg))
    resumed = amc.search(out=tmp_path / "part", resume=True, data=digits)
    assert [r["keep"] for r in resumed.episodes] == [r["keep"] for r in full.episodes]
    assert [r["episode"] for r in resumed.episodes] == list(range(10))


def test_existing_output_is_refused(tmp_path, digits):
    amc.search(config=_config(agent="uniform"), out=tmp_path / "r", data=digits)
    with pytest.raises(AmcError, match="already exists"):
        amc.search(config=_config(agent="uniform"), out=tmp_path / "r", data=digits)


def test_original_model_is_not_mutated_by_a_search(tmp_path, digits):
    model = models.create("digits_cnn", weights=models.bundled_weights("digits_cnn")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    amc.search(config=_config(episodes=5, warmup=2), out=tmp_path / "m", model=model, data=digits)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_api_by_names_and_keyword_settings(tmp_path):
    result = amc.search("digits_cnn", "digits", out=tmp_path / "api", agent="random", episodes=3,
                        calibration_images=200, ratio=0.6)
    assert result.summary["macs_ratio"] <= 0.6 and result.summary["model"] == "digits_cnn"
    with pytest.raises(AmcError, match="unknown search setting"):
        amc.search("digits_cnn", "digits", out=tmp_path / "bad", episode=3)


def test_a_mistake_leaves_no_output_directory(tmp_path, digits):
    with pytest.raises(AmcError, match="cannot be met"):
        amc.search(config=_config(ratio=0.01), out=tmp_path / "never", data=digits)
    assert not (tmp_path / "never").exists()
