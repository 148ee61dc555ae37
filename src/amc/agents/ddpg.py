"""DDPG as in the AMC paper, readable top to bottom: networks, replay buffer, exploration, update.

Every step of an episode is stored with the episode's final reward; at update time the reward is centred
by a moving-average baseline of episode rewards, and the critic bootstraps with discount 1, as in the
paper. Quirks of the public AMC implementations are fixed on purpose:

1. Exploration noise decays 0.95 per episode from the first episode after warm-up, which makes the
   last few hundred episodes effectively greedy; here sigma never falls under `noise_sigma_min`.
2. Replay sampling that skips an episode's first step; here every stored transition can be sampled.
3. The RL batch size tied to the data loader's batch size; here `batch_size` is its own setting.
4. The next action chosen from the previous layer's state; here `act()` always receives the current
   layer's state (the search loop passes the observation the environment just returned).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from amc.agents.base import Agent, Transition


@dataclass
class DDPGConfig:
    """Hyperparameters, with the AMC paper's values as defaults."""

    hidden: int = 300              # two hidden layers of this width in actor and critic
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01              # soft target update rate
    batch_size: int = 64           # RL minibatch, independent of any data batch size
    buffer_size: int = 2000        # transitions kept (FIFO)
    warmup_episodes: int = 100     # uniform random actions in [lbound, 1], no learning
    noise_sigma: float = 0.5       # truncated-normal exploration around the actor's action
    noise_decay: float = 0.95      # per episode after warm-up
    noise_sigma_min: float = 0.02  # floor (quirk 1)
    discount: float = 1.0
    baseline_alpha: float = 0.5    # moving-average baseline: b <- b + alpha * (R - b)
    updates_per_step: int = 1      # gradient updates per stored transition, after warm-up


class Actor(nn.Module):
    def __init__(self, obs_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:  # [B, obs_dim] -> [B, 1] in (0, 1)
        return self.net(obs)


class Critic(nn.Module):
    def __init__(self, obs_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:  # -> [B, 1]
        return self.net(torch.cat([obs, action], dim=1))


class ReplayBuffer:
    """FIFO of transitions with raw episode rewards; arrays so that it saves and loads exactly."""

    def __init__(self, obs_dim: int, size: int):
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.action = np.zeros(size, np.float32)
        self.reward = np.zeros(size, np.float32)
        self.done = np.zeros(size, np.float32)
        self.pos, self.count = 0, 0

    def add(self, t: Transition, reward: float) -> None:
        i = self.pos
        self.obs[i], self.next_obs[i], self.action[i] = t.obs, t.next_obs, t.action
        self.reward[i], self.done[i] = reward, float(t.done)
        self.pos = (i + 1) % len(self.action)
        self.count = min(self.count + 1, len(self.action))

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        idx = rng.integers(0, self.count, size=batch_size)  # uniform over every stored step (quirk 2)
        return self.obs[idx], self.action[idx, None], self.reward[idx, None], self.next_obs[idx], self.done[idx, None]

    def state_dict(self) -> dict:
        return {"obs": torch.from_numpy(self.obs), "next_obs": torch.from_numpy(self.next_obs),
                "action": torch.from_numpy(self.action), "reward": torch.from_numpy(self.reward),
                "done": torch.from_numpy(self.done), "pos": self.pos, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        for key in ("obs", "next_obs", "action", "reward", "done"):
            getattr(self, key)[...] = state[key].numpy()
        self.pos, self.count = int(state["pos"]), int(state["count"])


def truncated_normal(mean: float, sigma: float, low: float, high: float, rng: np.random.Generator) -> float:
    """A draw from N(mean, sigma^2) restricted to [low, high] (rejection, then clipping as a last resort)."""
    for _ in range(16):
        x = rng.normal(mean, sigma)
        if low <= x <= high:
            return float(x)
    return float(np.clip(rng.normal(mean, sigma), low, high))


class DDPGAgent(Agent):
    name = "ddpg"

    def __init__(self, obs_dim: int, lbound: float, seed: int, config: DDPGConfig | None = None, **overrides):
        self.config = config = DDPGConfig(**{**asdict(config or DDPGConfig()), **overrides})
        self.lbound = lbound
        self.rng = np.random.default_rng(seed)
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the global RNG
            torch.manual_seed(seed)
            self.actor, self.critic = Actor(obs_dim, config.hidden), Critic(obs_dim, config.hidden)
            self.actor_target, self.critic_target = Actor(obs_dim, config.hidden), Critic(obs_dim, config.hidden)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.buffer = ReplayBuffer(obs_dim, config.buffer_size)
        self.baseline: float | None = None
        self.episode = 0

    # ---- acting -----------------------------------------------------------------------------------
    @property
    def sigma(self) -> float:
        c = self.config
        after_warmup = max(0, self.episode - c.warmup_episodes)
        return max(c.noise_sigma * c.noise_decay ** after_warmup, c.noise_sigma_min)

    def begin_episode(self, episode: int) -> None:
        self.episode = episode

    @torch.no_grad()
    def predict(self, obs: np.ndarray) -> float:
        """The actor's deterministic action, clipped to [lbound, 1]."""
        action = float(self.actor(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)))
        return float(np.clip(action, self.lbound, 1.0))

    def act(self, obs: np.ndarray) -> float:
        if self.episode < self.config.warmup_episodes:
            return float(self.rng.uniform(self.lbound, 1.0))
        return truncated_normal(self.predict(obs), self.sigma, self.lbound, 1.0, self.rng)

    # ---- learning ---------------------------------------------------------------------------------
    def end_episode(self, transitions: list[Transition], reward: float) -> dict[str, float]:
        for t in transitions:
            self.buffer.add(t, reward)
        c = self.config
        self.baseline = reward if self.baseline is None else self.baseline + c.baseline_alpha * (reward - self.baseline)
        stats = {"sigma": self.sigma, "baseline": self.baseline}
        if self.episode < c.warmup_episodes:
            return stats
        losses = [self.update() for _ in range(c.updates_per_step * len(transitions))]
        stats["critic_loss"] = float(np.mean([l[0] for l in losses]))
        stats["actor_loss"] = float(np.mean([l[1] for l in losses]))
        return stats

    def update(self) -> tuple[float, float]:
        """One critic and one actor gradient step on a minibatch, then soft target updates."""
        c = self.config
        obs, action, reward, next_obs, done = map(torch.from_numpy, self.buffer.sample(c.batch_size, self.rng))
        reward = reward - self.baseline
        with torch.no_grad():
            target_q = reward + c.discount * (1 - done) * self.critic_target(next_obs, self.actor_target(next_obs))
        critic_loss = F.mse_loss(self.critic(obs, action), target_q)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()

        actor_loss = -self.critic(obs, self.actor(obs)).mean()
        self.actor_optim.zero_grad()
        actor_loss.backward()
        self.actor_optim.step()

        with torch.no_grad():
            for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.lerp_(p, c.tau)
        return critic_loss.item(), actor_loss.item()

    # ---- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "episode": self.episode, "baseline": self.baseline,
                "rng": self.rng.bit_generator.state, "buffer": self.buffer.state_dict(),
                "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
                "actor_optim": self.actor_optim.state_dict(), "critic_optim": self.critic_optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.episode, self.baseline = int(state["episode"]), state["baseline"]
        self.rng.bit_generator.state = state["rng"]
        self.buffer.load_state_dict(state["buffer"])
        for key in ("actor", "critic", "actor_target", "critic_target", "actor_optim", "critic_optim"):
            getattr(self, key).load_state_dict(state[key])
