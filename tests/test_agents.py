"""Agents: bounds, seeding, exact resume, the DDPG update rule's bookkeeping, and that DDPG actually learns."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amc.agents import AGENTS, DDPGAgent, DDPGConfig, RandomAgent, Transition, UniformAgent, make_agent
from amc.agents.ddpg import ReplayBuffer, truncated_normal

OBS_DIM, LAYERS, TARGET = 11, 4, 0.7
# A toy "network" of four layers with fixed features, like AMC's per-layer states.
LAYER_STATES = np.random.default_rng(123).random((LAYERS, OBS_DIM)).astype(np.float32)


def toy_episode(agent) -> tuple[list[Transition], float]:
    """Walk the four layers; the episode's reward is highest when every preserve ratio is TARGET."""
    transitions = []
    for t in range(LAYERS):
        obs, done = LAYER_STATES[t], t == LAYERS - 1
        transitions.append(Transition(obs, agent.act(obs), obs if done else LAYER_STATES[t + 1], done))
    return transitions, 1 - float(np.mean([abs(t.action - TARGET) for t in transitions]))


def run(agent, start: int, stop: int) -> tuple[list[list[float]], list[float], list[dict]]:
    """Episodes start..stop-1; returns the actions, rewards and end_episode stats of each."""
    actions, rewards, stats = [], [], []
    for episode in range(start, stop):
        agent.begin_episode(episode)
        transitions, reward = toy_episode(agent)
        stats.append(agent.end_episode(transitions, reward))
        actions.append([t.action for t in transitions])
        rewards.append(reward)
    return actions, rewards, stats


def weights(agent: DDPGAgent) -> list[torch.Tensor]:
    return [p for net in (agent.actor, agent.critic, agent.actor_target, agent.critic_target)
            for p in net.parameters()]


def same_weights(a: DDPGAgent, b: DDPGAgent) -> bool:
    return all(torch.equal(p, q) for p, q in zip(weights(a), weights(b), strict=True))


# ---- bounds ----------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(lbound=st.floats(0.0, 0.95), episode=st.integers(0, 60), seed=st.integers(0, 2**31),
       sigma_min=st.floats(0.0, 0.5), obs=arrays(np.float32, OBS_DIM, elements=st.floats(0, 1, width=32)))
def test_ddpg_actions_stay_in_bounds(lbound, episode, seed, sigma_min, obs):
    agent = DDPGAgent(OBS_DIM, lbound, seed, warmup_episodes=10, noise_sigma_min=sigma_min)
    agent.begin_episode(episode)
    for _ in range(20):
        assert lbound <= agent.act(obs) <= 1.0
    assert lbound <= agent.predict(obs) <= 1.0


@pytest.mark.parametrize("logit", [-30.0, 30.0])
def test_saturated_actor_still_acts_in_bounds(logit):
    agent = DDPGAgent(OBS_DIM, 0.3, 0, warmup_episodes=0, noise_sigma_min=0.5, noise_decay=1.0)
    with torch.no_grad():
        agent.actor.net[-2].bias.fill_(logit)  # sigmoid output ~0 (below lbound) or ~1
    agent.begin_episode(0)
    actions = [agent.act(LAYER_STATES[0]) for _ in range(500)]
    assert min(actions) >= 0.3 and max(actions) <= 1.0
    assert agent.predict(LAYER_STATES[0]) == pytest.approx(0.3 if logit < 0 else 1.0)


@settings(max_examples=60, deadline=None)
@given(low=st.floats(0.0, 0.9), width=st.floats(0.05, 1.0), where=st.floats(0, 1), sigma=st.floats(0, 3))
def test_truncated_normal_stays_in_bounds(low, width, where, sigma):
    high = min(low + width, 1.0)
    rng = np.random.default_rng(0)
    mean = low + where * (high - low)
    assert all(low <= truncated_normal(mean, sigma, low, high, rng) <= high for _ in range(50))


def test_truncated_normal_is_centred_and_not_clipped():
    rng = np.random.default_rng(0)
    draws = np.array([truncated_normal(0.6, 0.1, 0.2, 1.0, rng) for _ in range(4000)])
    assert abs(draws.mean() - 0.6) < 0.01 and abs(draws.std() - 0.1) < 0.01
    # Truncation by resampling leaves no point masses on the bounds (clipping would put ~mass there).
    edge = np.random.default_rng(1)
    near_bound = np.array([truncated_normal(0.2, 0.3, 0.2, 1.0, edge) for _ in range(2000)])
    assert (near_bound == 0.2).sum() == 0


# ---- exploration -----------------------------------------------------------------------------------
def test_noise_decays_after_warmup_to_a_floor():
    agent = DDPGAgent(OBS_DIM, 0.2, 0, warmup_episodes=10, noise_sigma_min=0.02)
    for episode, expected in ((0, 0.5), (10, 0.5), (11, 0.5 * 0.95), (20, 0.5 * 0.95 ** 10), (500, 0.02)):
        agent.begin_episode(episode)
        assert agent.sigma == pytest.approx(expected)
    # The floor is a real amount of exploration: the spread of act() around predict() is sigma_min.
    obs = LAYER_STATES[0]
    greedy = agent.predict(obs)
    assert 0.3 < greedy < 0.9  # far from the bounds, so truncation does not narrow the spread
    spread = np.std([agent.act(obs) - greedy for _ in range(3000)])
    assert spread == pytest.approx(0.02, rel=0.1)


def test_warmup_actions_are_uniform_in_range():
    agent = DDPGAgent(OBS_DIM, 0.4, 0, warmup_episodes=5)
    agent.begin_episode(4)
    actions = np.array([agent.act(LAYER_STATES[0]) for _ in range(4000)])
    assert actions.min() >= 0.4 and actions.max() <= 1.0
    assert np.histogram(actions, bins=6, range=(0.4, 1.0))[0].min() > 500  # ~667 each if uniform


# ---- seeding and resume ------------------------------------------------------------------------------
def test_same_seed_same_behaviour_different_seed_differs():
    a, b, c = (DDPGAgent(OBS_DIM, 0.2, seed, warmup_episodes=3, batch_size=16) for seed in (1, 1, 2))
    assert same_weights(a, b) and not same_weights(a, c)
    ra, rb, rc = run(a, 0, 8), run(b, 0, 8), run(c, 0, 8)
    assert ra == rb and ra[0] != rc[0]
    assert same_weights(a, b) and not same_weights(a, c)
    assert not same_weights(a, DDPGAgent(OBS_DIM, 0.2, 1))  # and the 5 learning episodes did change them


def test_global_rngs_are_not_disturbed():
    torch.manual_seed(123)
    np.random.seed(123)
    expected = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    run(DDPGAgent(OBS_DIM, 0.2, seed=5, warmup_episodes=1, batch_size=8), 0, 3)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


def test_state_dict_round_trip_resumes_exactly(tmp_path):
    agent = DDPGAgent(OBS_DIM, 0.2, 0, warmup_episodes=3, buffer_size=30, batch_size=16)
    run(agent, 0, 6)
    torch.save(agent.state_dict(), tmp_path / "agent.pt")
    # A fresh agent with another seed and config: the checkpoint's config, weights and RNGs take over.
    clone = DDPGAgent(OBS_DIM, 0.5, 99, warmup_episodes=50, buffer_size=7)
    clone.load_state_dict(torch.load(tmp_path / "agent.pt", weights_only=True))
    assert clone.config == agent.config and clone.lbound == agent.lbound
    assert same_weights(agent, clone)
    assert run(agent, 6, 12) == run(clone, 6, 12)  # actions, rewards, losses; buffer wraps around on the way
    assert same_weights(agent, clone)
    for opt_a, opt_b in ((agent.actor_optim, clone.actor_optim), (agent.critic_optim, clone.critic_optim)):
        sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


def test_state_dict_is_a_snapshot():
    agent = DDPGAgent(OBS_DIM, 0.2, 0, warmup_episodes=1, batch_size=8)
    run(agent, 0, 2)
    snapshot = agent.state_dict()
    continued = run(agent, 2, 4)  # would change the snapshot's tensors if they were shared
    clone = DDPGAgent(OBS_DIM, 0.2, 0)
    clone.load_state_dict(snapshot)
    assert run(clone, 2, 4) == continued


# ---- learning bookkeeping --------------------------------------------------------------------------------
def test_replay_samples_every_step_uniformly_and_forgets_fifo():
    buffer = ReplayBuffer(obs_dim=1, size=8)
    for i in range(12):  # 3 episodes of 4 steps into room for 8: the first episode is dropped
        buffer.add(Transition(np.array([i], np.float32), i / 12, np.array([i], np.float32), i % 4 == 3), reward=i)
    assert len(buffer) == 8
    obs, action, reward, next_obs, done = buffer.sample(16000, np.random.default_rng(0))
    assert obs.shape == (16000, 1) and action.shape == reward.shape == done.shape == (16000, 1)
    counts = np.bincount(obs[:, 0].astype(int), minlength=12)
    assert counts[:4].sum() == 0  # overwritten
    assert counts[4:].min() > 1800 and counts[4:].max() < 2200  # including steps 4 and 8, first of their episodes
    assert np.array_equal(done[:, 0], (obs[:, 0] % 4 == 3).astype(np.float32))


def test_baseline_warmup_and_update_count(monkeypatch):
    agent = DDPGAgent(OBS_DIM, 0.2, 0, warmup_episodes=2, batch_size=8, updates_per_step=3)
    calls = []
    original = agent.update
    monkeypatch.setattr(agent, "update", lambda: calls.append(1) or original())
    before = [p.clone() for p in weights(agent)]
    transitions, _ = toy_episode(agent)
    baselines = []
    for episode, reward in enumerate((0.2, 0.6, 1.0)):
        agent.begin_episode(episode)
        stats = agent.end_episode(transitions, reward)
        baselines.append(stats["baseline"])
        if episode < 2:  # warm-up: stored, but no learning
            assert not calls and "critic_loss" not in stats
            assert all(torch.equal(p, q) for p, q in zip(before, weights(agent)))
    assert baselines == pytest.approx([0.2, 0.4, 0.7])  # first R, then b + 0.5 (R - b)
    assert len(calls) == 3 * LAYERS and len(agent.buffer) == 3 * LAYERS
    assert np.isfinite(stats["critic_loss"]) and np.isfinite(stats["actor_loss"]) and stats["sigma"] == 0.5
    assert not all(torch.equal(p, q) for p, q in zip(before, weights(agent)))


def test_ddpg_learns_a_toy_layer_walk():
    agent = DDPGAgent(OBS_DIM, 0.2, 0, warmup_episodes=20)  # the paper's hyperparameters otherwise
    _, rewards, _ = run(agent, 0, 150)
    greedy = np.array([agent.predict(s) for s in LAYER_STATES])
    assert np.abs(greedy - TARGET).max() < 0.1, greedy
    assert np.mean(rewards[-20:]) > np.mean(rewards[:20]) + 0.05  # better than the random warm-up


# ---- other agents and the registry ---------------------------------------------------------------------
def test_random_agent_in_range_seeded_and_resumes(tmp_path):
    a, b, c = RandomAgent(OBS_DIM, 0.3, 4), RandomAgent(OBS_DIM, 0.3, 4), RandomAgent(OBS_DIM, 0.3, 5)
    xs = [a.act(LAYER_STATES[0]) for _ in range(1000)]
    assert xs == [b.act(LAYER_STATES[0]) for _ in range(1000)] != [c.act(LAYER_STATES[0]) for _ in range(1000)]
    assert min(xs) >= 0.3 and max(xs) <= 1.0 and max(xs) - min(xs) > 0.6
    assert a.end_episode([], 0.5) == {}
    torch.save(a.state_dict(), tmp_path / "random.pt")
    clone = RandomAgent(OBS_DIM, 0.9, 0)
    clone.load_state_dict(torch.load(tmp_path / "random.pt", weights_only=True))
    assert [clone.act(None) for _ in range(10)] == [a.act(None) for _ in range(10)]


class ToyBudget:
    """What make_agent reads of a budget: its settings, the decisions' channels and the fixed policies."""

    class config:
        lbound = action_low = 0.2  # action_low: no blocks to drop
        constrained = True
        drop_blocks = False

    channels = np.array([16] * LAYERS)

    def uniform_ratio(self):
        return 0.45

    def ramp_ratios(self, spread):
        return [0.45 + spread * (0.5 - i / (LAYERS - 1)) for i in range(LAYERS)]

    def fit_to_budget(self, ratios):
        return list(ratios)

    def fair_ratio(self, t, keep):
        return 0.45


def test_make_agent_builds_agents_for_the_budget_and_resolves_their_priors():
    from amc.errors import AmcError

    env = ToyBudget()
    assert {"ddpg", "random"} <= set(AGENTS)
    ddpg = make_agent("ddpg", env, 0, warmup_episodes=7, batch_size=32)
    # the default prior is the "prune shallower layers more" ramp (issue 17), warm-up policies fitted whole
    assert isinstance(ddpg, DDPGAgent) and ddpg.config == DDPGConfig(warmup_episodes=7, batch_size=32,
                                                                     anchor=env.ramp_ratios(-0.5))
    assert ddpg.budget is env  # its warm-up fits whole policies to it
    assert make_agent("ddpg", env, 0, anchor="uniform").config.anchor == 0.45
    assert make_agent("ddpg", env, 0, anchor="none").config.anchor is None
    assert isinstance(make_agent("random", env, 0), RandomAgent)
    u = make_agent("uniform", env, 0)  # the uniform ratio that meets the env's budget
    assert isinstance(u, UniformAgent) and u.act(None) == 0.45
    with pytest.raises(AmcError, match="unknown agent"):
        make_agent("ppo", env, 0)
    with pytest.raises(AmcError, match="bad --agent-option"):
        make_agent("ddpg", env, 0, warmup=7)  # misspelt field
    with pytest.raises(AmcError, match="unknown anchor"):
        make_agent("ddpg", env, 0, anchor="sideways")
    with pytest.raises(ValueError):
        DDPGConfig(noise_sigma_min=0.9)  # floor above the initial sigma


def test_anchor_starts_the_actor_at_the_prior_and_warms_up_around_it():
    agent = DDPGAgent(OBS_DIM, 0.2, 0, anchor=0.45, warmup_episodes=5)
    states = np.random.default_rng(0).random((10, OBS_DIM)).astype(np.float32)
    assert all(abs(agent.predict(s) - 0.45) < 0.02 for s in states)
    draws = [agent.act(states[0]) for _ in range(500)]
    assert abs(np.mean(draws) - 0.47) < 0.05 and np.std(draws) < 0.25  # truncated at 0.2, sigma 0.2
    assert min(draws) >= 0.2


def test_a_per_decision_anchor_is_played_first_then_sampled_around_at_each_decision():
    anchor = [0.3, 0.5, 0.9]
    agent = DDPGAgent(OBS_DIM, 0.2, 0, anchor=anchor, warmup_episodes=50)
    states = np.zeros((3, OBS_DIM), dtype=np.float32)
    states[:, 0] = [0.0, 0.5, 1.0]  # the decision index scaled by the last index, as the environment gives it
    agent.begin_episode(0)
    assert [agent.act(s) for s in states] == pytest.approx(anchor)  # the prior itself, exactly
    draws = np.array([[agent.act(s) for s in states] for episode in range(1, 41)
                      if agent.begin_episode(episode) is None])
    assert np.argsort(draws.mean(axis=0)).tolist() == [0, 1, 2]  # centred per decision, not on one ratio
    assert draws.std(axis=0).min() > 0.05 and draws.min() >= 0.2
    with pytest.raises(ValueError, match="anchor"):
        DDPGAgent(OBS_DIM, 0.2, 0, anchor=[0.5, 1.5])


def test_tpe_learns_the_toy_walk_resumes_exactly_and_handles_overlapping_episodes(tmp_path):
    pytest.importorskip("optuna", reason="the optional extra `tpe`")
    from amc.agents.tpe import TPEAgent

    agent = make_agent("tpe", ToyBudget(), 0)
    actions, rewards, _ = run(agent, 0, 60)
    assert all(0.2 <= a <= 1.0 for episode in actions for a in episode)
    assert np.mean(rewards[-15:]) > np.mean(rewards[:10]) + 0.05  # better than its random start-up trials
    assert max(rewards) > 0.9

    torch.save(agent.state_dict(), tmp_path / "tpe.pt")
    clone = TPEAgent(OBS_DIM, 0.5, 9)
    clone.load_state_dict(torch.load(tmp_path / "tpe.pt", weights_only=True))
    assert run(clone, 60, 70)[0] == run(agent, 60, 70)[0]  # the same proposals after a resume

    # with --workers, an episode begins before the one before it has ended: each is told its own reward
    overlap = TPEAgent(OBS_DIM, 0.2, 1)
    overlap.begin_episode(0)
    first = [overlap.act(s) for s in LAYER_STATES]
    overlap.begin_episode(1)
    second = [overlap.act(s) for s in LAYER_STATES]
    overlap.end_episode([], 0.25)
    overlap.end_episode([], 0.75)
    told = {tuple(t.params[k] for k in sorted(t.params)): t.value for t in overlap.study.trials}
    assert told == {tuple(first): 0.25, tuple(second): 0.75}


def test_tpe_without_optuna_names_the_extra_to_install(monkeypatch):
    import sys

    from amc.errors import AmcError

    monkeypatch.setitem(sys.modules, "optuna", None)  # as if optuna were not installed
    with pytest.raises(AmcError, match=r"pip install 'amc-compress\[tpe\]'"):
        make_agent("tpe", ToyBudget(), 0)


def test_logit_noise_is_centred_on_the_action_next_to_a_bound_where_the_truncated_normal_is_not():
    import numpy as np

    from amc.agents.ddpg import logit_normal, truncated_normal
    rng = np.random.default_rng(0)
    near = [logit_normal(0.31, 0.2, 0.2, 1.0, rng) for _ in range(4000)]
    cut = [truncated_normal(0.31, 0.2, 0.2, 1.0, rng) for _ in range(4000)]
    assert all(0.2 <= x <= 1.0 for x in near)
    assert abs(np.median(near) - 0.31) < 0.01  # half the draws on either side of the action
    assert np.mean(cut) > 0.38  # the truncated normal overspends on average there (issue 17)
    assert 0.1 < np.std(near) < 0.3  # still exploring, not collapsed onto the action


def test_share_actions_map_to_multiples_of_the_fair_share_and_are_learned_as_shares():
    from amc.agents.ddpg import ratio_from_share, share_from_ratio
    assert ratio_from_share(0.5, 0.3) == pytest.approx(0.3)  # half way: the fair share itself
    assert ratio_from_share(1.0, 0.3) == pytest.approx(0.6) and ratio_from_share(1.0, 0.7) == 1.0
    for share in (0.0, 0.2, 0.5, 0.9):
        assert share_from_ratio(ratio_from_share(share, 0.3), 0.3) == pytest.approx(share)
    env = ToyBudget()
    agent = make_agent("ddpg", env, 0, actions="share", warmup_episodes=0, noise_sigma=0.0, noise_sigma_min=0.0)
    assert agent.budget is env and agent.low == 0.0
    agent.begin_episode(0)
    proposed = [agent.act(s) for s in LAYER_STATES]
    assert proposed == pytest.approx([0.45] * LAYERS, abs=0.02)  # the actor starts at the fair share
    executed = [0.45, 0.9, 0.2, 0.45]  # what the env reports after its clipping
    transitions = [Transition(s, a, s, i == LAYERS - 1) for i, (s, a) in enumerate(zip(LAYER_STATES, executed))]
    agent.end_episode(transitions, 0.5)
    stored = agent.buffer.state_dict()["action"][:LAYERS].ravel()  # learned in the actor's units
    assert stored == pytest.approx([0.5, 1.0, 0.2 / 0.9, 0.5])
    with pytest.raises(ValueError, match="share"):
        DDPGAgent(OBS_DIM, 0.2, 0, actions="share")  # no budget to share
