import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings

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
    # DDPG: what these tests exercise (resume, racing, warm-up, signals) needs a search of many episodes
    base = dict(agent="ddpg", episodes=12, warmup=4, calibration_images=300, seed=0, ratio=0.5, lbound=0.2)  # the generic budget
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
    assert summary["heldout_top1"] == max(r["accuracy"] for r in lines)
    # the exported network's counted MACs equal what the policy predicted during the search
    best = max(lines, key=lambda r: r["reward"])
    assert summary["macs"] == best["macs"]
    pruned = amc.load_pruned(run)
    assert count_macs(pruned, (1, 8, 8)) == best["macs"]
    info = models.model_info(pruned)
    assert Evaluator(digits.heldout, info.mean, info.std).top1(pruned) == pytest.approx(result.best_val_top1)
    # what reproducing the run needs: versions, seed, data fingerprint, hash of the weights actually loaded
    config = json.loads((run / "config.json").read_text())
    assert config["search"]["seed"] == 0 and {"amc", "torch", "torch_pruning", "numpy"} <= set(config["versions"])
    assert set(config["data_fingerprint"]) == {"train", "heldout", "test"}
    bundled = models.bundled_weights("digits_cnn")
    assert config["weights_sha256"] == hashlib.sha256(bundled.read_bytes()).hexdigest()


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


@pytest.mark.parametrize("agent,racing", [("ddpg", False), ("ddpg", True), ("tpe", True)])
def test_resume_continues_and_matches_uninterrupted_run(tmp_path, digits, agent, racing):
    # with racing, the resumed run must also restore the best fully scored accuracy it races against
    if agent == "tpe":
        pytest.importorskip("optuna", reason="the optional extra `tpe`")
    warmup = {"warmup": 3} if agent == "ddpg" else {"agent": agent}
    full = amc.search(config=_config(episodes=10, racing=racing, ratio=0.3, **warmup), out=tmp_path / "full",
                      data=digits)
    amc.search(config=_config(episodes=6, racing=racing, ratio=0.3, **warmup), out=tmp_path / "part", data=digits)
    # continue the same run to 10 episodes: more episodes are the one change a resume applies, and records
    resumed = amc.search(out=tmp_path / "part", resume=True, data=digits, episodes=10)
    assert json.loads((tmp_path / "part" / "config.json").read_text())["search"]["episodes"] == 10
    assert [r["keep"] for r in resumed.episodes] == [r["keep"] for r in full.episodes]
    assert [r["accuracy"] for r in resumed.episodes] == [r["accuracy"] for r in full.episodes]
    assert [r["episode"] for r in resumed.episodes] == list(range(10))
    if racing:
        assert any(r["scored_images"] < len(digits.heldout) for r in full.episodes[6:])


def test_resume_refuses_other_data_and_settings_and_restarts_a_run_with_no_saved_state(tmp_path, digits):
    full = amc.search(config=_config(episodes=4, warmup=2), out=tmp_path / "r", data=digits)
    with pytest.raises(AmcError, match="train data differs from the data .* was started on"):
        amc.search(out=tmp_path / "r", resume=True, data=load_dataset("digits", seed=1))
    with pytest.raises(AmcError, match="started with other settings: --ratio 0.3 \\(the run has 0.5\\); --seed 1"):
        amc.search(out=tmp_path / "r", resume=True, data=digits, ratio=0.3, seed=1)
    with pytest.raises(AmcError, match="a resume can only add episodes"):
        amc.search(out=tmp_path / "r", resume=True, data=digits, episodes=2)
    (tmp_path / "r" / "state.pt").unlink()  # stopped before the first episode finished, or removed by hand
    again = amc.search(out=tmp_path / "r", resume=True, data=digits)  # from the start, with the run's settings
    assert [r["keep"] for r in again.episodes] == [r["keep"] for r in full.episodes]


def test_more_episodes_on_resume_keep_the_warmup_the_run_started_with(tmp_path, digits):
    amc.search(config=_config(episodes=8, warmup=None), out=tmp_path / "r", data=digits)  # warm-up 8 // 4 = 2
    resumed = amc.search(out=tmp_path / "r", resume=True, data=digits, episodes=12)
    assert [r["episode"] for r in resumed.episodes] == list(range(12))
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["search"]
    assert saved["episodes"] == 12 and saved["warmup"] == 2  # not 12 // 4 = 3: the same search goes on


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


# ---- a real search process stopped mid-run (SIGKILL, Ctrl-C) and resumed ------------------------------------

SEARCH_40 = [sys.executable, "-m", "amc.cli", "search", "--agent", "ddpg", "--episodes", "40", "--seed", "0"]


def _episodes(run) -> list[dict]:
    """The episode log without wall-clock fields: what must repeat exactly."""
    records = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    for r in records:
        del r["seconds"], r["timing"]
    return records


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run([*SEARCH_40, "--out", str(run)], check=True, capture_output=True, text=True)
    return run


PAUSE_HOOK = """
import os, time
import amc.runs as runs
_save = runs.RunDir.save_state
def save_state(self, agent_state, episode, best):
    _save(self, agent_state, episode, best)
    if episode == int(os.environ["AMC_TEST_PAUSE_AT"]):
        open(os.environ["AMC_TEST_PAUSED"], "w").close()
        time.sleep(3600)  # held here, state saved, until the test's signal arrives
runs.RunDir.save_state = save_state
"""


def _stop_after(run, episodes: int, sig: signal.Signals) -> tuple[int, str, int]:
    """Start the 40-episode search, hold it right after the state of `episode` is saved (a sitecustomize hook:
    the test waits for that state, not for a time, so a slow machine cannot let the search run past it),
    send `sig`; (exit code, stderr, episodes logged when it ended)."""
    hook = run.parent / "pause-hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    paused = run.parent / "paused"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "AMC_TEST_PAUSE_AT": str(episodes), "AMC_TEST_PAUSED": str(paused)}
    # as in a terminal: a test run started in the background (nohup, `cmd &`) inherits SIGINT ignored, and a
    # child would then never see the Ctrl-C
    process = subprocess.Popen([*SEARCH_40, "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while process.poll() is None and not paused.exists():
        time.sleep(0.01)
    assert process.poll() is None, f"the search ended before it reached episode {episodes}: " + process.stderr.read()
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr, (run / "episodes.jsonl").read_text().count("\n")


def _resume_and_compare(run, reference) -> None:
    r = subprocess.run([sys.executable, "-m", "amc.cli", "search", "--resume", "--out", str(run)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    resumed = _episodes(run)
    assert [e["episode"] for e in resumed] == list(range(40))  # no duplicates, no gaps
    assert resumed == _episodes(reference)                      # every action, score and learning statistic
    assert json.loads((run / "policy.json").read_text()) == json.loads((reference / "policy.json").read_text())
    ours, theirs = (torch.load(r / "model.pt", weights_only=True) for r in (run, reference))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_killed_search_loses_at_most_one_episode_and_resumes_exactly(tmp_path, uninterrupted):
    run = tmp_path / "run"
    code, _, logged = _stop_after(run, 12, signal.SIGKILL)  # past the 10 warm-up episodes: learning has begun
    assert code == -signal.SIGKILL
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    saved = torch.load(run / "state.pt", weights_only=True)["episode"]
    assert logged - 1 <= saved <= logged < 40  # the state is at most the one episode behind the log
    _resume_and_compare(run, uninterrupted)


def test_ctrl_c_stops_cleanly_and_the_search_resumes_exactly(tmp_path, uninterrupted):
    run = tmp_path / "run"
    code, stderr, logged = _stop_after(run, 5, signal.SIGINT)
    assert code == 130 and "Traceback" not in stderr, stderr
    assert f"continue it with `amc search --resume --out {run}`" in stderr
    saved = torch.load(run / "state.pt", weights_only=True)["episode"]
    assert logged - 1 <= saved <= logged < 40
    _resume_and_compare(run, uninterrupted)


def test_sigterm_stops_as_ctrl_c_does_and_the_search_resumes_exactly(tmp_path, uninterrupted):
    run = tmp_path / "run"
    code, stderr, logged = _stop_after(run, 5, signal.SIGTERM)
    assert code == 143 and "Traceback" not in stderr, stderr  # 128 + SIGTERM, as a shell reports it
    assert (f"interrupted; {run} holds the search up to its last finished episode: continue it with "
            f"`amc search --resume --out {run}`") in stderr
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    saved = torch.load(run / "state.pt", weights_only=True)["episode"]
    assert logged - 1 <= saved <= logged < 40
    _resume_and_compare(run, uninterrupted)


def test_apply_policy_exports_the_same_network_as_the_search(tmp_path, digits):
    from amc.search import apply_policy

    result = amc.search(config=_config(episodes=6, warmup=2), out=tmp_path / "s", data=digits)
    summary = apply_policy(tmp_path / "s" / "policy.json", data=digits, out=tmp_path / "p", calibration_images=300)
    ours, theirs = (torch.load(tmp_path / r / "model.pt", weights_only=True) for r in ("p", "s"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert summary["macs"] == result.summary["macs"]
    assert summary["heldout_top1"] == pytest.approx(result.best_val_top1)
    assert amc.load_pruned(tmp_path / "p") is not None
    with pytest.raises(AmcError, match="already exists"):
        apply_policy(tmp_path / "s" / "policy.json", data=digits, out=tmp_path / "p")


def test_racing_stops_hopeless_candidates_early_and_scores_the_best_in_full(tmp_path):
    digits = load_dataset("digits", heldout_per_class=60)  # 600 held-out images: racing looks after 150
    model = models.create("digits_cnn", weights=models.bundled_weights("digits_cnn")).eval()
    info = models.model_info(model)
    evaluator = Evaluator(digits.heldout, info.mean, info.std)
    exact = evaluator.top1(model)
    assert evaluator.race(model, beat=float("-inf")) == (exact, 600)
    assert evaluator.race(model, beat=exact - 0.01) == (exact, 600)  # could be the best: never cut
    early, seen = evaluator.race(model, beat=1.5)  # nothing can beat 150%: stopped at the first look
    assert seen == 200 and abs(early - exact) < 0.1

    config = _config(episodes=16, ratio=0.3, racing=True)
    result = amc.search(config=config, out=tmp_path / "run", data=digits)
    log = [json.loads(x) for x in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    raced = [r for r in log if 0 < r["scored_images"] < 600]
    assert raced, "no candidate was stopped early"
    best = max(log, key=lambda r: r["reward"])
    assert best["scored_images"] == 600
    for r in raced:  # a stopped candidate was plausibly worse than the best fully scored one before it
        assert r["accuracy"] < max(x["accuracy"] for x in log[:r["episode"]] if x["scored_images"] == 600)
    assert result.best_val_top1 == pytest.approx(best["accuracy"], abs=1e-9)


def test_racing_is_refused_where_it_cannot_apply():
    with pytest.raises(AmcError, match="--racing .* --reward acc"):
        SearchConfig(racing=True, reward="acc-macs")
    assert SearchConfig().races and SearchConfig(workers=2).races  # the default wherever it applies
    assert not SearchConfig(reward="acc-macs").races and not SearchConfig(racing=False).races


def test_tensorboard_log_has_one_point_per_episode_also_across_a_resume(tmp_path, digits):
    pytest.importorskip("tensorboard", reason="the optional extra `tensorboard`")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    amc.search(config=_config(episodes=5, warmup=2, tensorboard=True), out=run, data=digits)
    raw = json.loads((run / "config.json").read_text())
    raw["search"]["episodes"] = 8
    (run / "config.json").write_text(json.dumps(raw))
    result = amc.search(out=run, data=digits, resume=True)

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    rewards = events.Scalars("episode/reward")
    assert [e.step for e in rewards] == list(range(8))
    assert [e.value for e in rewards] == pytest.approx([r["reward"] for r in result.episodes])
    assert "agent/critic_loss" in events.Tags()["scalars"]


def test_tensorboard_without_the_package_is_refused_before_any_work(tmp_path, digits, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(AmcError, match=r"pip install 'amc-compress\[tensorboard\]'"):
        amc.search(config=_config(episodes=2, tensorboard=True), out=tmp_path / "run", data=digits)
    assert not (tmp_path / "run").exists()


def test_a_handcrafted_anchor_is_the_first_episode_and_a_bad_one_is_a_user_error(tmp_path, digits):
    from amc.budget import Budget, EnvConfig
    from amc.graph import LayerGraph

    result = amc.search(config=_config(episodes=3, agent_options={"anchor": "shallower"}), out=tmp_path / "run",
                        data=digits)
    model = models.create("digits_cnn").eval()
    budget = Budget(LayerGraph(model, models.model_info(model).input_shape), EnvConfig())
    keep = budget.play(budget.ramp_ratios(-0.5))  # the paper's "prune shallower layers more", at the budget
    assert result.episodes[0]["keep"] == keep
    assert result.episodes[0]["ratios"][0] < result.episodes[0]["ratios"][-1]
    with pytest.raises(AmcError, match="unknown anchor 'shallow'"):
        amc.search(config=_config(agent_options={"anchor": "shallow"}), out=tmp_path / "bad", data=digits)
    with pytest.raises(AmcError, match="one per decision"):
        amc.search(config=_config(agent_options={"anchor": [0.5]}), out=tmp_path / "bad", data=digits)
    assert not (tmp_path / "bad").exists()


def test_without_a_budget_ddpg_warms_up_as_the_paper_does_not_around_an_unused_ratio(tmp_path, digits):
    def anchor_of(run):
        return torch.load(run / "state.pt", weights_only=True)["agent"]["config"]["anchor"]

    amc.search(config=_config(episodes=2, reward="acc-params", method="fine-grained", target="params"),
               out=tmp_path / "guaranteed", data=digits)
    amc.search(config=_config(episodes=2), out=tmp_path / "budget", data=digits)
    assert anchor_of(tmp_path / "guaranteed") is None
    ramp = anchor_of(tmp_path / "budget")  # the shallower-more ramp that meets the 0.5 budget
    assert all(0.2 <= r <= 1.0 for r in ramp) and ramp == sorted(ramp)  # the first decisions keep the least


def test_a_search_whose_scores_cannot_rank_anything_says_so(tmp_path, digits):
    from amc import models
    model = models.create("digits_cnn", num_classes=10, weights=models.bundled_weights("digits_cnn"))
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # every input gets class 3: every pruned copy scores the same
        classifier.weight.zero_()
        classifier.bias.copy_(torch.arange(10.0) == 3)
    with pytest.warns(UserWarning, match="could not rank them"):
        amc.search(model, digits, out=tmp_path / "flat", agent="random", episodes=8, calibration_images=200)
    with warnings.catch_warnings():  # a trained model ranks its candidates: no such line
        warnings.simplefilter("error", UserWarning)
        amc.search(config=_config(agent="random", episodes=8), out=tmp_path / "ranked", data=digits)
