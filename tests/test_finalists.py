"""The finalist stage: top-K distinct candidates, short distilled fine-tunes, successive halving, export."""

import json

import pytest
import torch

import amc
from amc.config import SearchConfig
from amc.data import load_dataset
from amc.errors import AmcError
from amc.evaluate import Evaluator
from amc.finalists import ShortFinetune, distinct_best, finalist_config, successive_halving
from amc.models import create, model_info


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_distinct_best_keeps_the_highest_reward_of_each_policy_and_skips_partial_scores():
    log = [{"keep": [4, 4], "reward": 0.5, "scored_images": 300},
           {"keep": [2, 4], "reward": 0.9, "scored_images": 300},
           {"keep": [4, 4], "reward": 0.7, "scored_images": 300},
           {"keep": [3, 3], "reward": 0.95, "scored_images": 100},  # raced out: a partial score
           {"keep": [1, 1], "reward": 0.6, "scored_images": 300}]
    best = distinct_best(log, 3, full_images=300)
    assert [r["keep"] for r in best] == [[2, 4], [4, 4], [1, 1]]
    assert best[1]["reward"] == 0.7  # the better of the two episodes of the same policy
    assert [r["keep"] for r in distinct_best(log, 2)] == [[3, 3], [2, 4]]  # without the size, every score counts


def test_short_finetune_continues_where_it_stopped_and_improves_a_damaged_model(digits):
    model = create("digits_cnn", num_classes=10)  # untrained: far from the teacher
    teacher = create("digits_cnn", num_classes=10, weights=amc.models.bundled_weights("digits_cnn"))
    info = model_info(model)
    heldout = Evaluator(digits.heldout, info.mean, info.std)
    before = heldout.top1(model)
    run = ShortFinetune(model, digits, teacher.eval(), finalist_config(0, "fp32"))
    run.train(30)
    run.train(30)
    assert run.steps == 60
    assert heldout.top1(run.model) > before + 0.3


def test_successive_halving_trains_the_better_half_further_and_returns_the_best(digits):
    teacher = create("digits_cnn", num_classes=10, weights=amc.models.bundled_weights("digits_cnn"))
    good = create("digits_cnn", num_classes=10, weights=amc.models.bundled_weights("digits_cnn"))
    with torch.no_grad():  # three damaged copies: the less damaged, the better after a short fine-tune
        damaged = []
        for noise in (3.0, 0.0, 1.0, 5.0):
            m = create("digits_cnn", num_classes=10, weights=amc.models.bundled_weights("digits_cnn"))
            for p in m.parameters():
                p.add_(noise * p.std() * torch.randn_like(p))
            damaged.append(m)
    info = model_info(good)
    heldout = Evaluator(digits.heldout, info.mean, info.std)
    result = successive_halving(damaged, heldout.top1, digits, teacher, 5, config=finalist_config(0, "fp32"))
    assert result.winner == 1  # the undamaged copy
    # four candidates: a round of 5 steps for all, 5 more for the better two, then one is left
    assert sorted(len(s) for s in result.scores) == [1, 1, 2, 2]
    assert result.steps == 4 * 5 + 2 * 5
    assert set(result.scores[1]) == {5, 10}


def test_search_with_finalists_exports_the_winner_and_records_the_stage(tmp_path, digits):
    out = tmp_path / "run"
    result = amc.search(config=SearchConfig(agent="random", episodes=8, finalists=3, finalist_steps=4,
                                            calibration_images=200, ratio=0.5, lbound=0.2), out=out, data=digits)
    stage = result.summary["finalists"]
    assert stage["k"] == 3 and len(stage["candidates"]) == 3
    winner = next(c for c in stage["candidates"] if c["episode"] == stage["winner_episode"])
    assert result.policy.keep == winner["keep"]
    assert json.loads((out / "policy.json").read_text())["keep"] == winner["keep"]
    assert result.summary["best_episode"] == stage["winner_episode"]
    # heldout_top1 stays the exported model's held-out top-1 without any fine-tuning
    pruned = amc.load_pruned(out)
    info = model_info(pruned)
    assert result.summary["heldout_top1"] == pytest.approx(Evaluator(digits.heldout, info.mean, info.std).top1(pruned))
    scores = [c["search_score"] for c in stage["candidates"]]
    assert scores == sorted(scores, reverse=True)


def test_finalist_settings_are_checked():
    with pytest.raises(AmcError, match="--finalists"):
        SearchConfig(finalists=0)
    with pytest.raises(AmcError, match="--reward acc"):
        SearchConfig(finalists=4, reward="acc-macs")



def test_a_replayed_policy_scores_as_the_finalist_stage_scored_it(tmp_path, digits):
    import sys
    from pathlib import Path
    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if benchmarks not in sys.path:  # the benchmarks import each other by module name, as scripts do
        sys.path.insert(0, benchmarks)
    from finalist_replay import replay

    out = tmp_path / "run"
    result = amc.search(config=SearchConfig(agent="random", episodes=6, finalists=2, finalist_steps=3, seed=1,
                                            calibration_images=200, ratio=0.5, lbound=0.2), out=out, data=digits)
    stage = result.summary["finalists"]["candidates"]
    # the loser of the one round: replayed, its scores before and after 3 steps are the search's and the stage's
    loser = next(c for c in stage if c["episode"] != result.summary["finalists"]["winner_episode"])
    replayed = replay(out, loser["keep"], [3, 6], dataset=digits)
    assert replayed["heldout_top1"]["0"] == pytest.approx(loser["search_score"])
    assert replayed["heldout_top1"]["3"] == pytest.approx(loser["finalist_scores"]["3"])
    assert set(replayed["heldout_top1"]) == {"0", "3", "6"} and replayed["seed"] == 1
