import numpy as np
import pytest
import torch.nn as nn
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amc import models
from amc.env import Budget, CompressionEnv, EnvConfig, allowed_counts
from amc.errors import BudgetError
from amc.graph import LayerGraph


def _env(name="digits_cnn", **config):
    model = models.create(name).eval()
    graph = LayerGraph(model, models.model_info(model).input_shape)
    return CompressionEnv(Budget(graph, EnvConfig(**config)), lambda keep: 0.5)


def test_gymnasium_env_checker_passes():
    check_env(_env(), skip_render_check=True)


def test_observation_has_the_papers_eleven_features_in_unit_range():
    env = _env("resnet20")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (11,) and obs.dtype == np.float32
    seen = [obs]
    done = False
    while not done:
        obs, reward, done, _, info = env.step(np.array([0.6], dtype=np.float32))
        seen.append(obs)
    seen = np.stack(seen)
    assert seen.min() >= 0 and seen.max() <= 1
    assert seen[1, 0] > seen[0, 0]                  # layer index grows
    assert np.isclose(seen[1, 10], info["ratios"][0], atol=1e-6)  # previous action is fed back


def test_impossible_budget_names_the_minimum():
    with pytest.raises(BudgetError, match=r"use --ratio >= 0\.\d+"):
        _env("resnet20", ratio=0.05)


def test_uniform_ratio_meets_budget_tightly():
    env = _env("resnet20", ratio=0.5)
    r = env.budget.uniform_ratio()
    assert env.budget.cost(env.budget.uniform_counts(r)) <= env.budget.limit
    assert env.budget.cost(env.budget.uniform_counts(min(1.0, r + 0.05))) > env.budget.limit


@pytest.mark.parametrize("spread", [-0.5, 0.5])
def test_handcrafted_ramps_slope_the_right_way_and_meet_the_budget_tightly(spread):
    env = _env("resnet20", ratio=0.5)
    ratios = np.array(env.budget.ramp_ratios(spread))
    steps = np.diff(ratios)
    # spread < 0 prunes shallower layers more: ratios rise with depth (flat only where clipped)
    assert (steps >= -1e-12).all() if spread < 0 else (steps <= 1e-12).all()
    assert abs(steps).max() > 0.01
    assert env.budget.cost(env.budget.rounded_counts(ratios)) <= env.budget.limit
    assert env.budget.cost(env.budget.rounded_counts(np.minimum(ratios + 0.05, 1.0))) > env.budget.limit
    flat = env.budget.ramp_ratios(0.0)
    assert np.allclose(flat, flat[0]) and env.budget.rounded_counts(flat) == env.budget.uniform_counts(env.budget.uniform_ratio())


def test_channel_rounding_to_multiples():
    counts = allowed_counts(64, 0.2, 8)
    assert counts[0] == 16 and all(c % 8 == 0 for c in counts) and counts[-1] == 64
    assert allowed_counts(20, 0.2, 8).tolist() == [8, 16, 20]


def test_accuracy_guaranteed_reward_has_no_budget():
    env = _env(reward="acc-macs")
    env.reset()
    done = False
    while not done:
        _, reward, done, _, info = env.step(np.array([0.2], dtype=np.float32))
    assert info["macs_ratio"] < 0.3
    assert reward == pytest.approx(-(1 - 0.5) * np.log(info["macs"]))


@st.composite
def chains(draw):
    """Random conv chains with optional depthwise-separable stages and a classifier."""
    layers, channels = [], 3
    for i in range(draw(st.integers(2, 5))):
        out = draw(st.integers(2, 24))
        if draw(st.booleans()) and i > 0:
            layers += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU()]
        layers += [nn.Conv2d(channels, out, draw(st.sampled_from([1, 3])), padding="same",
                             bias=draw(st.booleans())), nn.BatchNorm2d(out), nn.ReLU()]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 5)]
    return nn.Sequential(*layers).eval()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=chains(), budget=st.floats(0.05, 1.0), actions=st.lists(st.floats(0.0, 1.0), min_size=30, max_size=30),
       multiple=st.sampled_from([1, 4]))
def test_budget_is_never_exceeded(net, budget, actions, multiple):
    graph = LayerGraph(net, (3, 6, 6))
    try:
        env = CompressionEnv(Budget(graph, EnvConfig(ratio=budget, channel_round=multiple)), lambda keep: 1.0)
    except BudgetError:
        assert env_min_ratio(graph, multiple) > budget
        return
    env.reset()
    done, i = False, 0
    while not done:
        _, _, done, _, info = env.step(np.array([actions[i]], dtype=np.float32))
        i += 1
    assert graph.macs(info["keep_counts"]) <= env.budget.limit + 1e-6
    assert min(info["keep_counts"]) >= 1


def env_min_ratio(graph, multiple):
    lower = [allowed_counts(d.channels, 0.2, multiple)[0] for d in graph.decisions]
    return graph.macs(lower) / graph.total_macs


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=chains(), budget=st.floats(0.05, 1.0), actions=st.lists(st.floats(0.0, 1.0), min_size=30, max_size=30),
       power=st.floats(0.5, 2.0))
def test_a_nonlinear_monotone_cost_model_is_never_exceeded_either(net, budget, actions, power):
    """The latency target's clipping (bisection, not a line) keeps the same guarantee for any cost that only
    grows with each count, here a MACs-power plus a per-channel overhead."""
    graph = LayerGraph(net, (3, 6, 6))

    def cost(keep):
        return graph.macs(keep) ** power + 50.0 * float(np.sum(keep))

    try:
        env = CompressionEnv(Budget(graph, EnvConfig(target="latency", ratio=budget), cost), lambda keep: 1.0)
    except BudgetError:
        lower = [allowed_counts(d.channels, 0.2, 1)[0] for d in graph.decisions]
        assert cost(lower) > budget * cost([d.channels for d in graph.decisions])
        return
    env.reset()
    done, i = False, 0
    while not done:
        _, _, done, _, info = env.step(np.array([actions[i]], dtype=np.float32))
        i += 1
    assert cost(info["keep_counts"]) <= env.budget.limit * (1 + 1e-9)
    assert info["cost_ratio"] <= budget + 1e-9


def test_latency_target_needs_a_cost_model():
    graph = LayerGraph(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval(), (3, 8, 8))
    with pytest.raises(Exception, match="latency model"):
        CompressionEnv(Budget(graph, EnvConfig(target="latency")), lambda keep: 1.0)


def test_fit_to_budget_keeps_the_policys_shape_and_brings_its_cost_to_the_budget():
    env = _env("resnet20", ratio=0.3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        drawn = rng.uniform(0.2, 1.0, len(env.budget.channels))
        fitted = np.array(env.budget.fit_to_budget(drawn.tolist()))
        cost = env.budget.cost(env.budget.rounded_counts(fitted))
        assert cost <= env.budget.limit
        # one more step of the common shift would overspend: the budget is used, not left on the table
        assert env.budget.cost(env.budget.rounded_counts(np.minimum(fitted + 0.02, 1.0))) > env.budget.limit * 0.98
        # a common shift in logit space keeps the order of the decisions' ratios
        assert (np.argsort(drawn, kind="stable") == np.argsort(fitted, kind="stable")).all()
        assert ((fitted >= 0.2) & (fitted <= 1.0)).all()


def _last_at_bound(env, agent, episodes) -> float:
    """Share of `episodes` whose last decision sat at the lower bound (0.1, 64 channels), the budget held in each."""
    at_bound = []
    for episode in episodes:
        agent.begin_episode(episode)
        obs, _ = env.reset()
        done = False
        while not done:
            obs, _, done, _, info = env.step(np.array([agent.act(obs)], dtype=np.float32))
        assert env.budget.cost(info["keep_counts"]) <= env.budget.limit
        at_bound.append(info["ratios"][-1] <= 0.1 + 1 / 64 + 1e-9)
    return float(np.mean(at_bound))


def test_budget_warmup_plays_whole_fitted_policies_instead_of_starving_the_last_decisions():
    from amc.agents import make_agent
    env = _env("resnet20", ratio=0.2, lbound=0.1)
    last = {noise: _last_at_bound(env, make_agent("ddpg", env.budget, 0, warmup_noise=noise, warmup_episodes=30),
                                  range(1, 30)) for noise in ("step", "budget")}
    # the per-step noise overspends early and the clipping leaves the last decision at the lower bound
    assert last["step"] > 0.8 and last["budget"] < 0.5


def test_relative_warmup_stays_near_its_anchor_where_the_anchor_sits_at_the_lower_bound():
    # the ramp holds ResNet-20's first decisions at lbound at 20% MACs; the logit draw is a coin flip there between
    # the bound and 1, and the fit to the budget then cuts the rest (0.14-0.18 of the parameters against 0.27)
    from amc.agents import make_agent, resolve_anchor
    env = _env("resnet20", ratio=0.2, lbound=0.1)
    ramp = np.array(env.budget.play(resolve_anchor(env.budget, "shallower", None)))
    agent = make_agent("ddpg", env.budget, 0, warmup_episodes=30, warmup_noise="relative")
    params, policies = [], set()
    for episode in range(1, 30):
        agent.begin_episode(episode)
        obs, _ = env.reset()
        done = False
        while not done:
            obs, _, done, _, info = env.step(np.array([agent.act(obs)], dtype=np.float32))
        keep = np.array(info["keep_counts"])
        assert env.budget.cost(keep) <= env.budget.limit
        assert np.all(keep <= 2 * ramp) and np.all(2 * keep >= ramp)  # each decision within a factor 2
        params.append(env.budget.summarize(keep)["params_ratio"])
        policies.add(tuple(keep))
    ramp_params = env.budget.summarize(ramp)["params_ratio"]
    assert max(abs(p - ramp_params) for p in params) < 0.05
    assert len(policies) > 20  # still exploring


def test_fair_ratio_spends_the_rest_of_the_budget_evenly_from_the_current_decision():
    env = _env("resnet20", ratio=0.3)
    env.reset()
    assert env.budget.fair_ratio(0, env.keep) == pytest.approx(env.budget.uniform_ratio(), abs=1e-3)  # uniform
    env.step(np.array([0.9], dtype=np.float32))  # an overspend at the first decision
    fair = env.budget.fair_ratio(1, env.keep)
    assert fair < env.budget.uniform_ratio()  # leaves less for each of the others, spread over all of them
    keep = env.keep.copy()
    keep[1:] = [a[np.argmin(np.abs(a - fair * c))] for a, c in zip(env.budget.allowed[1:], env.budget.channels[1:])]
    assert env.budget.cost(keep) <= env.budget.limit


def test_share_actions_spread_an_overspend_instead_of_starving_the_last_decision():
    from amc.agents import make_agent
    env = _env("resnet20", ratio=0.2, lbound=0.1)
    # the learned phase's own per-step noise, at its floor (no end_episode: nothing is learned here)
    last = {actions: _last_at_bound(env, make_agent("ddpg", env.budget, 0, actions=actions, warmup_episodes=0,
                                                    noise_sigma=0.1), range(30)) for actions in ("ratio", "share")}
    assert last["ratio"] > 0.5 and last["share"] < 0.2
