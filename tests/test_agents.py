import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from amc.agents import DDPGAgent, DDPGConfig, RandomAgent, Transition, UniformAgent, make_agent
from amc.agents.ddpg import truncated_normal

OBS_DIM = 11


def bandit_episode(agent, rng, steps=4, target=0.7):
    """A toy task: reward is highest when every action is `target`; states are random features."""
    transitions, obs = [], rng.random(OBS_DIM).astype(np.float32)
    for t in range(steps):
        action = agent.act(obs)
        next_obs = rng.random(OBS_DIM).astype(np.float32)
        done = t == steps - 1
        transitions.append(Transition(obs, action, obs if done else next_obs, done))
        obs = next_obs
    reward = 1 - float(np.mean([abs(t.action - target) for t in transitions]))
    return transitions, reward


def run(agent, episodes, seed=0):
    rng = np.random.default_rng(seed)
    rewards = []
    for e in range(episodes):
        agent.begin_episode(e)
        transitions, reward = bandit_episode(agent, rng)
        agent.end_episode(transitions, reward)
        rewards.append(reward)
    return rewards


@settings(max_examples=50, deadline=None)
@given(lbound=st.floats(0.05, 0.9), episode=st.integers(0, 30), seed=st.integers(0, 100))
def test_actions_stay_in_bounds(lbound, episode, seed):
    agent = DDPGAgent(OBS_DIM, lbound, seed, warmup_episodes=10)
    agent.begin_episode(episode)
    for _ in range(5):
        a = agent.act(np.random.default_rng(seed).random(OBS_DIM).astype(np.float32))
        assert lbound <= a <= 1.0


def test_truncated_normal_respects_bounds_and_centre():
    rng = np.random.default_rng(0)
    draws = [truncated_normal(0.6, 0.1, 0.2, 1.0, rng) for _ in range(2000)]
    assert min(draws) >= 0.2 and max(draws) <= 1.0
    assert abs(np.mean(draws) - 0.6) < 0.01


def test_same_seed_same_behaviour_different_seed_differs():
    a, b, c = (DDPGAgent(OBS_DIM, 0.2, s, warmup_episodes=3, buffer_size=200) for s in (1, 1, 2))
    ra, rb, rc = run(a, 8), run(b, 8), run(c, 8)
    assert ra == rb and ra != rc
    assert all(torch.equal(p, q) for p, q in zip(a.actor.parameters(), b.actor.parameters()))


def test_global_rng_is_not_disturbed():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DDPGAgent(OBS_DIM, 0.2, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_state_dict_round_trip_resumes_exactly(tmp_path):
    agent = DDPGAgent(OBS_DIM, 0.2, 0, warmup_episodes=3, buffer_size=100)
    run(agent, 6)
    torch.save(agent.state_dict(), tmp_path / "agent.pt")
    clone = DDPGAgent(OBS_DIM, 0.2, 99, warmup_episodes=3, buffer_size=100)
    clone.load_state_dict(torch.load(tmp_path / "agent.pt", weights_only=True))
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for e in range(6, 10):
        for agent_, rng in ((agent, rng_a), (clone, rng_b)):
            agent_.begin_episode(e)
        ta, ra = bandit_episode(agent, rng_a)
        tb, rb = bandit_episode(clone, rng_b)
        assert [t.action for t in ta] == [t.action for t in tb]
        assert agent.end_episode(ta, ra) == clone.end_episode(tb, rb)


def test_noise_decays_after_warmup_to_a_floor():
    agent = DDPGAgent(OBS_DIM, 0.2, 0, warmup_episodes=10)
    agent.begin_episode(10)
    assert agent.sigma == pytest.approx(0.5)
    agent.begin_episode(11)
    assert agent.sigma == pytest.approx(0.5 * 0.95)
    agent.begin_episode(500)
    assert agent.sigma == pytest.approx(DDPGConfig().noise_sigma_min)


def test_ddpg_learns_a_toy_bandit():
    agent = DDPGAgent(OBS_DIM, 0.2, 0, warmup_episodes=20, noise_decay=0.97)
    rewards = run(agent, 200)
    probe = np.random.default_rng(1).random((20, OBS_DIM)).astype(np.float32)
    greedy = [agent.predict(o) for o in probe]
    assert abs(np.mean(greedy) - 0.7) < 0.1
    assert np.mean(rewards[-30:]) > np.mean(rewards[:20])  # better than the random warm-up


def test_random_and_uniform_agents():
    r1, r2 = RandomAgent(OBS_DIM, 0.3, 4), RandomAgent(OBS_DIM, 0.3, 4)
    xs = [r1.act(None) for _ in range(100)]
    assert xs == [r2.act(None) for _ in range(100)] and min(xs) >= 0.3 and max(xs) <= 1.0
    state = r1.state_dict()
    nxt = r1.act(None)
    r2.load_state_dict(state)
    assert r2.act(None) == nxt
    u = make_agent("uniform", OBS_DIM, 0.2, 0, ratio=0.45)
    assert isinstance(u, UniformAgent) and u.act(None) == 0.45
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent("ppo", OBS_DIM, 0.2, 0)
