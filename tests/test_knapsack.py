"""The knapsack allocator: the dynamic programme is optimal on small instances, and the allocation meets the
budget through the environment, beats the uniform policy on the embedded default and anchors DDPG."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import amc
from amc.agents.knapsack import _covering_knapsack
from amc.data import load_dataset

BINS = 400


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 1)), min_size=1, max_size=4), min_size=1,
                max_size=4), st.floats(0.5, 20))
def test_the_dynamic_programme_saves_enough_and_loses_no_more_than_any_choice_that_saves_a_little_more(
        groups, target):
    saving = [[s for s, _ in g] for g in groups]
    loss = [[l for _, l in g] for g in groups]
    choice = _covering_knapsack(saving, loss, target, BINS)
    choices = list(itertools.product(*[range(len(g)) for g in groups]))
    slack = target * len(groups) / BINS  # rounding savings down to steps of target / BINS, once per group
    feasible = [c for c in choices if sum(saving[i][o] for i, o in enumerate(c)) >= target + slack]
    if choice is None:
        assert not feasible
        return
    assert sum(saving[i][o] for i, o in enumerate(choice)) >= target - 1e-9
    if feasible:
        optimum = min(sum(loss[i][o] for i, o in enumerate(c)) for c in feasible)
        assert sum(loss[i][o] for i, o in enumerate(choice)) <= optimum + 1e-9


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_knapsack_meets_the_budget_in_one_episode_and_beats_uniform_on_digits(tmp_path, digits):
    settings_ = dict(calibration_images=300, ratio=0.4, seed=0)
    knapsack = amc.search(out=tmp_path / "k", data=digits, agent="knapsack", episodes=50, **settings_)
    uniform = amc.search(out=tmp_path / "u", data=digits, agent="uniform", **settings_)
    assert len(knapsack.episodes) == 1  # deterministic: one episode is the whole search
    assert knapsack.summary["macs_ratio"] <= 0.4 + 1e-9
    assert len(set(knapsack.policy.ratios)) > 1  # not the uniform policy
    assert knapsack.best_val_top1 >= uniform.best_val_top1


def test_a_plain_chain_whose_savings_interact_still_meets_the_budget(tmp_path, digits):
    # digits_cnn is a plain chain: each inner layer's cost is the product of two decisions' counts
    for ratio in (0.6, 0.3, 0.15):
        result = amc.search(out=tmp_path / f"r{ratio}", data=digits, agent="knapsack", ratio=ratio,
                            calibration_images=200, lbound=0.1)
        assert result.summary["macs_ratio"] <= ratio + 1e-9


def test_ddpg_anchored_at_the_knapsack_plays_it_first(tmp_path, digits):
    knapsack = amc.search(out=tmp_path / "k", data=digits, agent="knapsack", calibration_images=300)
    ddpg = amc.search(out=tmp_path / "d", data=digits, agent="ddpg", episodes=3, warmup=2, calibration_images=300,
                      agent_options={"anchor": "knapsack"})
    first = json.loads((tmp_path / "d" / "episodes.jsonl").read_text().splitlines()[0])
    assert first["keep"] == knapsack.policy.keep
    assert ddpg.best_val_top1 >= knapsack.best_val_top1 - 1e-12
    assert np.isfinite(ddpg.summary["best_reward"])


def test_refining_in_context_mends_the_over_saving_of_a_chain_at_a_harsh_budget(tmp_path, digits):
    # at 5% of the digits CNN's MACs the one-at-a-time losses add up badly: the plain allocation over-saves
    settings_ = dict(data=digits, agent="knapsack", ratio=0.05, lbound=0.05, calibration_images=300)
    plain = amc.search(out=tmp_path / "plain", agent_options={"rounds": 0}, **settings_)
    refined = amc.search(out=tmp_path / "refined", **settings_)
    uniform = amc.search(out=tmp_path / "u", data=digits, agent="uniform", ratio=0.05, lbound=0.05,
                         calibration_images=300)
    assert plain.best_val_top1 < uniform.best_val_top1  # what the refinement is for
    assert refined.best_val_top1 > uniform.best_val_top1 + 0.03
    assert refined.summary["macs_ratio"] <= 0.05 + 1e-9 and refined.policy.keep != plain.policy.keep
    assert len(refined.episodes) == 1


def test_an_allocation_that_beats_uniform_is_not_refined(tmp_path, digits, monkeypatch):
    # a refinement round costs about as much as the first pass: it runs only where the allocation needs it
    import amc.agents.knapsack as knapsack
    tables, table = [], knapsack._table
    monkeypatch.setattr(knapsack, "_table", lambda *a, **kw: tables.append(1) or table(*a, **kw))
    result = amc.search(out=tmp_path / "k", data=digits, agent="knapsack", ratio=0.5, lbound=0.05,
                        calibration_images=300)
    assert len(tables) == 1  # the first pass only
    assert result.best_val_top1 >= result.summary["baselines"]["uniform"]["heldout_top1"]


def test_allocating_around_a_base_counts_savings_from_it():
    # two decisions, cost = sum of counts; around base (4, 4) with a limit of 6 the cheaper loss is taken
    from amc.agents.knapsack import allocate

    class Line:
        channels, limit = [8, 8], 6.0
        allowed = [np.arange(1, 9)] * 2

        def cost(self, keep):
            return float(sum(keep))

        def cheapest(self, t, keep):
            return np.ones(2, int)

        drop_caps: dict = {}
        stage = [None, None]

    table = [[(2, 0.5), (3, 0.8), (4, 0.9), (8, 0.95)], [(2, 0.85), (3, 0.88), (4, 0.9), (8, 0.9)]]
    assert allocate(Line(), table, base=[4, 4]) == [4, 2]
    assert allocate(Line(), table) == [4, 2]  # from the whole network: the same losses, other savings


def test_the_knapsack_keeps_a_reference_allocation_that_scores_higher(monkeypatch, caplog):
    # a bad one-pass allocation (every decision at its lower bound, the rest filled by the budget) is replaced by
    # the best of the cheap references on the whole held-out split: fine-grained, uniform, the two ramps and
    # global magnitude
    import amc.agents.knapsack as knapsack
    from amc.budget import Budget
    from amc.config import SearchConfig
    from amc.pipeline import prepare

    config = SearchConfig(method="fine-grained", target="params", ratio=0.1, agent="knapsack", episodes=1,
                          calibration_images=300, threads=1)
    setup = prepare(config)
    budget = Budget(setup.graph, config.env_config)
    monkeypatch.setattr(knapsack, "allocate", lambda budget, table, **kw: budget.cheapest(-1, budget.channels).tolist())
    references = knapsack.references(budget, setup.scorer.pruner)
    assert set(references) == {"uniform", "shallower ramp", "deeper ramp", "global magnitude"}
    assert references["shallower ramp"] == budget.play(budget.ramp_ratios(-0.5))
    assert references["deeper ramp"] == budget.play(budget.ramp_ratios(0.5))
    assert len({tuple(c) for c in references.values()}) == 4  # four different allocations
    for counts in references.values():
        assert budget.cost(counts) <= budget.limit
    ranked = setup.scorer.pruner.global_counts
    most = knapsack.most_within(budget, ranked)
    assert budget.cost(ranked(most)) <= budget.limit < budget.cost(ranked(most + 1))  # the most the budget allows
    whole = setup.scorer.variant(racing=False)  # the final pick's score: the whole held-out split
    scores = {name: float(whole(counts)) for name, counts in references.items()}
    worst = float(whole(budget.play(budget.ratios_of(budget.cheapest(-1, budget.channels).tolist()))))
    assert max(scores.values()) > worst  # the case the pick is for
    monkeypatch.setattr(knapsack, "refinements", lambda *a, **kw: iter(()))  # no round finds better: a reference wins
    with caplog.at_level("INFO", logger="amc.search"):
        chosen = budget.play(knapsack.knapsack_ratios(budget, setup.scorer, rounds=1))
    best = max(scores, key=scores.get)
    assert chosen == references[best]
    assert f"knapsack: kept {best} (held-out top-1 its own allocation" in caplog.text  # the log says which it kept
    assert budget.cost(chosen) <= budget.limit


def test_the_final_pick_takes_the_best_on_the_whole_split_not_the_probe():
    # two finalists whose order on the first 100 held-out images differs from their order on the whole split: the
    # pick follows the whole split
    import amc.agents.knapsack as knapsack
    from amc.budget import Budget
    from amc.config import SearchConfig
    from amc.pipeline import prepare

    config = SearchConfig(ratio=0.3, agent="knapsack", episodes=1, calibration_images=300, threads=1)
    setup = prepare(config)
    budget = Budget(setup.graph, config.env_config)
    probe, whole = setup.scorer.variant(racing=False, evaluator=setup.scorer.evaluator.limited(100)), \
        setup.scorer.variant(racing=False)
    policies = {f"ramp {spread:+.1f}": budget.play(budget.ramp_ratios(spread)) for spread in np.linspace(-1, 1, 9)}
    pairs = [(a, b) for a in policies for b in policies
             if float(probe(policies[a])) > float(probe(policies[b])) and float(whole(policies[a])) < float(whole(policies[b]))]
    assert pairs, "no two ramps ranked differently by 100 images and the whole split"
    a, b = pairs[0]
    assert knapsack.final_pick(setup.scorer, {a: policies[a], b: policies[b]}) == policies[b]
