"""--workers on a local Ray instance with 2 CPUs."""

import json

import pytest

import amc
from amc.data import load_dataset
from amc.config import SearchConfig

ray = pytest.importorskip("ray", reason="Ray is the optional extra `distributed`")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _log(run):
    return [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]


def test_parallel_search_logs_every_episode_once_in_order_learns_and_resumes(tmp_path, local_ray):
    digits = load_dataset("digits")
    run = tmp_path / "par"
    config = SearchConfig(agent="ddpg", episodes=8, warmup=3, workers=2, calibration_images=300, seed=0)
    result = amc.search(config=config, out=run, data=digits)
    log = _log(run)
    assert [r["episode"] for r in log] == list(range(8))
    assert all(0 < r["accuracy"] <= 1 and r["macs_ratio"] <= 0.5 + 1e-9 for r in log)
    assert any(r["timing"]["evaluate"] > 0 for r in log)  # scored by the actors (repeats come from a cache)
    assert all("critic_loss" in r["agent"] for r in log[4:])  # the learner trained on the stream
    best = max(log, key=lambda r: r["reward"])
    assert result.summary["macs"] == best["macs"]
    # the summary re-scores the exported best policy in this process: the actors scored the same number
    assert result.summary["best_search_score"] == best["accuracy"]
    assert result.summary["heldout_top1"] == pytest.approx(best["accuracy"])

    # resume a parallel run with a longer budget of episodes: no gaps, no duplicates
    raw = json.loads((run / "config.json").read_text())
    raw["search"]["episodes"] = 11
    (run / "config.json").write_text(json.dumps(raw))
    amc.search(out=run, data=digits, resume=True)
    assert [r["episode"] for r in _log(run)] == list(range(11))


def test_actors_race_against_the_drivers_best_and_the_best_is_scored_in_full(tmp_path, local_ray):
    digits = load_dataset("digits", heldout_per_class=60)  # 600 held-out images: racing looks after 150
    config = SearchConfig(agent="ddpg", episodes=16, warmup=3, ratio=0.3, workers=2, calibration_images=300, seed=0)
    assert config.races  # the default
    result = amc.search(config=config, out=tmp_path / "run", data=digits)
    log = _log(tmp_path / "run")
    assert [r["episode"] for r in log] == list(range(16))
    raced = [r for r in log if 0 < r["scored_images"] < 600]
    assert raced, "no candidate was stopped early on the actors"
    best = max(log, key=lambda r: r["reward"])
    assert best["scored_images"] == 600
    for r in raced:  # stopped only against a best fully scored before it was proposed
        assert r["accuracy"] < max(x["accuracy"] for x in log[:r["episode"]] if x["scored_images"] == 600)
    assert result.best_val_top1 == pytest.approx(best["accuracy"], abs=1e-9)
