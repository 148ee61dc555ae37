"""DDPG as in the AMC paper, readable top to bottom: networks, replay buffer, exploration, update.

Reward: every step of an episode is stored with the episode's final reward R (the accuracy-based reward
is only known once the whole network is pruned); at update time it is centred by a moving-average
baseline of episode rewards, b <- b + alpha * (R - b), and the critic bootstraps with discount 1, as in
the paper.

Quirks of the public AMC implementations that are fixed here on purpose:

1. Exploration noise decays by 0.95 per episode from the first episode after warm-up, so after ~100
   episodes sigma is below 0.003 and the last few hundred episodes are effectively greedy; here sigma
   never falls under `noise_sigma_min`.
2. Replay sampling that skips the first step of each episode (so the first layer never trains the
   critic); here minibatches are drawn uniformly from every stored transition.
3. The RL minibatch size tied to the data loader's batch size; here `batch_size` is its own setting.
4. The next action chosen from the previous layer's state; here `act()` always receives the current
   layer's state (the search loop passes the observation the environment just returned).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from amc.agents.base import OBS_FEATURES, Agent, Transition

if TYPE_CHECKING:
    from amc.budget import Budget

PREV_ACTION = OBS_FEATURES.index("prev_action")  # the executed ratio of the decision before


@dataclass
class DDPGConfig:
    """Hyperparameters, with the AMC paper's values as defaults."""

    hidden: int = 300              # two hidden layers of this width in actor and critic
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01              # soft target update rate
    batch_size: int = 64           # RL minibatch, independent of any data batch size (quirk 3)
    buffer_size: int = 2000        # transitions kept (FIFO)
    warmup_episodes: int = 100     # uniform random actions in [lbound, 1], no learning
    noise_sigma: float = 0.5       # truncated-normal exploration around the actor's action
    noise_decay: float = 0.95      # per episode after warm-up
    noise_sigma_min: float = 0.1   # floor (quirk 1); 0.02 stalled ResNet-20 search (benchmarks/RESULTS.md)
    discount: float = 1.0
    baseline_alpha: float = 0.5    # moving-average baseline: b <- b + alpha * (R - b)
    updates_per_step: int = 1      # gradient updates per stored transition, after warm-up
    anchor: float | list[float] | None = None  # optional prior policy, one ratio or one per decision (e.g. the
                                   # uniform ratio or a ramp that meets the budget): the first warm-up episode
                                   # plays it, later ones sample around it, the actor starts at its mean
    anchor_sigma: float = 0.2      # spread of warm-up actions around the anchor ("relative": of the log-ratio)
    warmup_noise: str = "budget"   # "budget": the whole anchor policy perturbed at once (logit noise) and shifted
                                   # to meet the budget, so no decision pays for the others' noise; "relative": the
                                   # same with relative noise, which stays near the anchor where it sits at the
                                   # lower bound (the logit draw is a coin flip there) but then cannot leave a
                                   # poor anchor (the digits default lost 2-11 test points with it); "step" (the
                                   # paper's): each decision drawn around the anchor on its own, the budget's
                                   # clipping taking the overspend back from the last decisions (at 20-30% MACs
                                   # they sat at the lower bound in 85-99% of warm-up episodes; issue 17)
    noise_space: str = "ratio"     # "ratio": the truncated normal above; "logit": a normal in the logit of the
                                   # position in [lbound, 1], sigma scaled to the same local spread, so the noise
                                   # is symmetric there and its median is the action even next to a bound
    actions: str = "ratio"         # "ratio": the actor answers a preserve ratio (the paper's); "share": a multiple
                                   # of the decision's fair share of the remaining budget (0.5 takes it, 1 twice
                                   # it), so an early overspend lowers every later decision a little instead of
                                   # the last ones to the lower bound (issue 17; needs a budget, no dropped blocks)

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.batch_size < 1 or self.buffer_size < 1 or self.updates_per_step < 0:
            raise ValueError(f"hidden, batch_size and buffer_size must be >= 1, updates_per_step >= 0: {self}")
        if self.warmup_episodes < 0:
            raise ValueError(f"warmup_episodes must be >= 0, got {self.warmup_episodes}")
        if not (0 < self.tau <= 1 and 0 <= self.discount <= 1 and 0 < self.baseline_alpha <= 1):
            raise ValueError(f"need 0 < tau <= 1, 0 <= discount <= 1, 0 < baseline_alpha <= 1: {self}")
        if not 0 <= self.noise_sigma_min <= self.noise_sigma or not 0 < self.noise_decay <= 1:
            raise ValueError(f"need 0 <= noise_sigma_min <= noise_sigma and 0 < noise_decay <= 1: {self}")
        if self.warmup_noise not in ("step", "budget", "relative"):
            raise ValueError(f"warmup_noise must be step, budget or relative, got {self.warmup_noise!r}")
        if self.noise_space not in ("ratio", "logit"):
            raise ValueError(f"noise_space must be ratio or logit, got {self.noise_space!r}")
        if self.actions not in ("ratio", "share"):
            raise ValueError(f"actions must be ratio or share, got {self.actions!r}")
        anchors = np.atleast_1d(np.asarray(self.anchor if self.anchor is not None else 1.0, dtype=np.float64))
        if anchors.size == 0 or not ((anchors > 0) & (anchors <= 1)).all():
            raise ValueError(f"anchor must be a preserve ratio in (0, 1] or one per decision, got {self.anchor}")


class Actor(nn.Module):
    """Deterministic policy: state [B, obs_dim] -> preserve ratio [B, 1] in (0, 1)."""

    def __init__(self, obs_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class Critic(nn.Module):
    """Q-function: state [B, obs_dim] and action [B, 1] -> value [B, 1]."""

    def __init__(self, obs_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=1))


class ReplayBuffer:
    """FIFO of transitions, each with its episode's raw reward; plain arrays so it saves and loads exactly."""

    def __init__(self, obs_dim: int, size: int):
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.action = np.zeros(size, np.float32)
        self.reward = np.zeros(size, np.float32)  # raw R; the baseline is subtracted when sampled
        self.done = np.zeros(size, np.float32)
        self.pos, self.count = 0, 0

    def __len__(self) -> int:
        return self.count

    def add(self, t: Transition, reward: float) -> None:
        i = self.pos
        self.obs[i], self.next_obs[i], self.action[i] = t.obs, t.next_obs, t.action
        self.reward[i], self.done[i] = reward, float(t.done)
        self.pos = (i + 1) % len(self.action)
        self.count = min(self.count + 1, len(self.action))

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(obs [B, obs_dim], action [B, 1], reward [B, 1], next_obs [B, obs_dim], done [B, 1])."""
        idx = rng.integers(0, self.count, size=batch_size)  # uniform over every stored step (quirk 2)
        return self.obs[idx], self.action[idx, None], self.reward[idx, None], self.next_obs[idx], self.done[idx, None]

    def state_dict(self) -> dict:
        arrays = {key: torch.tensor(getattr(self, key)) for key in ("obs", "next_obs", "action", "reward", "done")}
        return {**arrays, "pos": self.pos, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        for key in ("obs", "next_obs", "action", "reward", "done"):
            setattr(self, key, state[key].numpy().copy())
        self.pos, self.count = int(state["pos"]), int(state["count"])


def truncated_normal(mean: float, sigma: float, low: float, high: float, rng: np.random.Generator) -> float:
    """One draw from N(mean, sigma^2) restricted to [low, high]: rejection, then clipping as a last resort.

    With `mean` inside the interval each try succeeds with probability >= ~1/2, so the clipping fallback
    (which would pile mass on the bounds) practically never runs.
    """
    for _ in range(16):
        x = rng.normal(mean, sigma)
        if low <= x <= high:
            return float(x)
    return float(np.clip(rng.normal(mean, sigma), low, high))


def logit_normal(mean: float, sigma: float, low: float, high: float, rng: np.random.Generator) -> float:
    """One draw around `mean` that is symmetric in the logit of its position in [low, high] (median `mean`).

    Near a bound the truncated normal is lopsided: around 0.31 in [0.2, 1] with sigma 0.2 its mean is about
    0.41, so noisy early decisions overspend and the budget's clipping takes it back from the last ones. Here
    the spread in logit units is `sigma` divided by the slope of the map at `mean`, so the local spread
    matches the truncated normal's while half of the draws fall on either side of `mean`.
    """
    span = high - low
    if span <= 0:
        return float(low)
    p = float(np.clip((mean - low) / span, 1e-3, 1 - 1e-3))
    u = np.log(p / (1 - p)) + rng.normal(0.0, sigma / (span * p * (1 - p)))
    # clipped: a draw far in the tail (|u| > 700) would overflow exp; the map is flat there anyway
    return float(low + span / (1 + np.exp(-np.clip(u, -700.0, 700.0))))


def relative_normal(mean: float, sigma: float, low: float, high: float, rng: np.random.Generator) -> float:
    """`mean` times exp(N(0, sigma)), clipped to [low, high]: a relative spread, the same share of any ratio.

    The warm-up's whole-policy draws use it with warmup_noise="relative". The logit draw above matches the
    truncated normal's local spread, which next to a bound is hundreds of logit units, so a decision the anchor
    holds at the lower bound comes out nearly a coin flip between the bound and 1 (around ResNet-20's ramp its
    episodes keep 0.14-0.18 of the parameters against the ramp's 0.27; benchmarks/RESULTS.md). Here such a
    decision stays at the bound half the time and otherwise moves up by a factor of about exp(sigma).
    """
    return float(np.clip(mean * np.exp(rng.normal(0.0, sigma)), low, high))


def ratio_from_share(share: float, fair: float) -> float:
    """The preserve ratio that action `share` asks for where the fair share of the remaining budget is `fair`:
    linear (0.5 takes the fair share, 1 twice it, 0 nothing, which the env raises to the lower bound), so a
    decision's cost moves in proportion to its action and zero-mean noise overspends nothing on average."""
    return float(min(2.0 * share * fair, 1.0))


def share_from_ratio(ratio: float, fair: float) -> float:
    """The inverse of `ratio_from_share`, clipped to [0, 1]: the action an executed ratio amounts to."""
    return float(np.clip(ratio / (2.0 * max(fair, 1e-12)), 0.0, 1.0))


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for the duration.

    The networks are tiny (300 wide, batch 64): splitting such matmuls over threads costs more than it
    saves, and on a busy machine (the search evaluates models on the same cores) the synchronisation made
    updates over 10x slower in our measurements. One thread also makes results independent of the
    machine's thread count, so a resumed search repeats exactly.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class DDPGAgent(Agent):
    """The AMC searcher: a preserve ratio per layer from the layer's state, learnt by DDPG.

    `seed` fixes the network initialisation (drawn inside `torch.random.fork_rng`, so the global torch RNG
    is untouched), the exploration noise and the replay sampling (a private numpy Generator).
    Keyword `overrides` replace fields of `config` (this is how `make_agent(..., warmup_episodes=20)` works).
    """

    name = "ddpg"

    def __init__(self, obs_dim: int, lbound: float, seed: int, config: DDPGConfig | None = None, *,
                 budget: Budget | None = None, **overrides):
        if not 0 <= lbound <= 1:
            raise ValueError(f"lbound must be in [0, 1], got {lbound}")
        self.lbound = float(lbound)
        # the budget the warm-up fits whole policies to (warmup_noise="budget") and, with actions="share", whose
        # fair share of what is left it reads at each decision; None without one
        self.budget = budget
        # actions="share": the episode's counts so far, as its observations report them (each one's prev_action
        # is the executed ratio of the decision before), and the fair shares of each episode in flight (oldest
        # first: episodes end in the order they began, also when scored in parallel)
        self._keep: np.ndarray | None = None
        self._fairs: deque[list[float]] = deque()
        self._warm_policy: list[float] | None = None
        self.rng = np.random.default_rng(seed)
        self.baseline: float | None = None  # moving average of episode rewards; None until the first episode
        self.episode = 0
        self._build(obs_dim, DDPGConfig(**{**asdict(config or DDPGConfig()), **overrides}), seed)
        if self.config.actions == "share" and (budget is None or budget.config.drop_blocks):
            raise ValueError("actions=share needs a budget to share (--reward acc) and no --drop-blocks")

    @property
    def shares(self) -> bool:
        return self.config.actions == "share"

    @property
    def low(self) -> float:
        """The smallest action: 0 for shares, else the lower bound of the preserve ratio."""
        return 0.0 if self.shares else self.lbound

    def _build(self, obs_dim: int, config: DDPGConfig, seed: int) -> None:
        """Networks, target copies, optimizers and an empty buffer for `config`."""
        self.obs_dim, self.config = obs_dim, config
        # the prior as one ratio per decision (a single ratio is a list of one), read on every warm-up step
        self._anchors = None if config.anchor is None else np.atleast_1d(np.asarray(config.anchor, np.float64))
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the global RNG
            torch.manual_seed(seed)
            self.actor, self.critic = Actor(obs_dim, config.hidden), Critic(obs_dim, config.hidden)
        if config.anchor is not None:  # start from the anchor: small last-layer weights, bias = logit(anchor)
            last = self.actor.net[-2]
            with torch.no_grad():
                last.weight.mul_(0.01)
                # with shares the anchor is walked by the warm-up in ratios; the actor starts at the fair share
                anchor = 0.5 if config.actions == "share" else min(max(float(self._anchors.mean()), 1e-3), 1 - 1e-3)
                last.bias.fill_(float(np.log(anchor / (1 - anchor))))
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.buffer = ReplayBuffer(obs_dim, config.buffer_size)

    # ---- acting -----------------------------------------------------------------------------------
    @property
    def sigma(self) -> float:
        """Exploration noise of the current episode (std of the truncated normal, in preserve-ratio units)."""
        c = self.config
        episodes_after_warmup = max(0, self.episode - c.warmup_episodes)
        return max(c.noise_sigma * c.noise_decay ** episodes_after_warmup, c.noise_sigma_min)

    def begin_episode(self, episode: int) -> None:
        self.episode = episode
        self._warm_policy = None
        if self.shares:
            self._fairs.append([])
            self._keep = None

    @torch.no_grad()
    def predict(self, obs: np.ndarray) -> float:
        """The actor's deterministic action for state `obs` [obs_dim], clipped to [low, 1]: a preserve ratio, or
        with actions="share" a share of the remaining budget."""
        with _one_thread():
            action = self.actor(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)).item()
        return float(np.clip(action, self.low, 1.0))

    def act(self, obs: np.ndarray) -> float:
        """Exploratory preserve ratio in [lbound, 1] for the current layer's state `obs` [obs_dim]."""
        if not self.shares:
            return self._act(obs)
        fair = self._fair_ratio(obs)
        self._fairs[-1].append(fair)
        if self.episode < self.config.warmup_episodes:  # the warm-up walks ratios (anchor, budget noise) as usual
            return self._act(obs)
        return ratio_from_share(self._noisy(self.predict(obs), self.sigma), fair)

    def _fair_ratio(self, obs: np.ndarray) -> float:
        """The budget's fair share at the decision `obs` describes, given the counts executed before it: the
        previous decision's count is read back from this observation's prev_action (its executed ratio)."""
        channels = self.budget.channels
        if self._keep is None:  # the episode's first decision: nothing decided yet
            self._keep = channels.copy()
            self._t = 0
        else:
            self._keep[self._t] = int(round(float(obs[PREV_ACTION]) * int(channels[self._t])))
            self._t += 1
        return self.budget.fair_ratio(self._t, self._keep)

    def _act(self, obs: np.ndarray) -> float:
        c = self.config
        if self.episode < c.warmup_episodes:
            if c.anchor is not None:
                anchor = self._anchor_at(obs)
                if self.episode == 0:  # the prior itself: a search never ends below it
                    return float(np.clip(anchor, self.lbound, 1.0))
                if c.warmup_noise in ("budget", "relative") and self.budget is not None:
                    return self._warm_policy_at(obs)
                return self._noisy(anchor, c.anchor_sigma, self.lbound)  # a ratio, also with shares
            return float(self.rng.uniform(self.lbound, 1.0))
        return self._noisy(self.predict(obs), self.sigma)

    def _warm_policy_at(self, obs: np.ndarray) -> float:
        """This warm-up episode's ratio for the decision `obs` describes, from a whole perturbed anchor policy
        drawn at its first decision and shifted (by the env) to meet the budget."""
        if self._warm_policy is None:
            decisions = len(self.budget.channels)
            anchors = np.broadcast_to(self._anchors, (decisions,)) if self._anchors.size == 1 else self._anchors
            draw = relative_normal if self.config.warmup_noise == "relative" else logit_normal
            drawn = [draw(float(a), self.config.anchor_sigma, self.lbound, 1.0, self.rng) for a in anchors]
            self._warm_policy = list(self.budget.fit_to_budget(drawn))
        index = int(round(float(obs[0]) * (len(self._warm_policy) - 1)))
        return float(self._warm_policy[index])

    def _noisy(self, action: float, sigma: float, low: float | None = None) -> float:
        """A draw around `action` in [low, 1] (default: the actor's range)."""
        draw = logit_normal if self.config.noise_space == "logit" else truncated_normal
        return draw(action, sigma, self.low if low is None else low, 1.0, self.rng)

    def _anchor_at(self, obs: np.ndarray) -> float:
        """The anchor's ratio for the decision `obs` describes: its first feature is the decision index scaled
        by the last index (amc.agents.base.OBS_FEATURES), so a per-decision anchor is read back at that position."""
        return float(self._anchors[int(round(float(obs[0]) * (len(self._anchors) - 1)))])

    # ---- learning ---------------------------------------------------------------------------------
    def end_episode(self, transitions: list[Transition], reward: float) -> dict[str, float]:
        """Store the episode with its reward, update the baseline and, after warm-up, train."""
        reward = float(reward)  # a numpy scalar would not load back with torch.load(weights_only=True)
        if self.shares:  # learn in the actor's units: each executed ratio as the share it amounted to
            transitions = [replace(t, action=share_from_ratio(t.action, fair))
                           for t, fair in zip(transitions, self._fairs.popleft())]
        for t in transitions:
            self.buffer.add(t, reward)
        c = self.config
        self.baseline = reward if self.baseline is None else self.baseline + c.baseline_alpha * (reward - self.baseline)
        stats = {"sigma": self.sigma, "baseline": self.baseline}
        if self.episode < c.warmup_episodes:
            return stats
        with _one_thread():
            losses = np.array([self.update() for _ in range(c.updates_per_step * len(transitions))])
        if len(losses):
            stats["critic_loss"], stats["actor_loss"] = (float(x) for x in losses.mean(axis=0))
        return stats

    def update(self) -> tuple[float, float]:
        """One critic and one actor gradient step on a minibatch, then soft target updates.

        Returns (critic MSE loss, actor loss = -mean Q) of this step.
        """
        c = self.config
        obs, action, reward, next_obs, done = map(torch.from_numpy, self.buffer.sample(c.batch_size, self.rng))
        # Centre with the current baseline, not the one at storage time: old episodes are judged
        # against what the agent achieves now.
        reward = reward - self.baseline
        with torch.no_grad():
            target_q = reward + c.discount * (1 - done) * self.critic_target(next_obs, self.actor_target(next_obs))
        critic_loss = F.mse_loss(self.critic(obs, action), target_q)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()

        # This also leaves gradients in the critic; they are cleared by its zero_grad() before its next step.
        actor_loss = -self.critic(obs, self.actor(obs)).mean()
        self.actor_optim.zero_grad()
        actor_loss.backward()
        self.actor_optim.step()

        with torch.no_grad():
            for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.lerp_(p, c.tau)  # tp <- tp + tau * (p - tp)
        return critic_loss.item(), actor_loss.item()

    # ---- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A snapshot (copied, so later learning does not change it) of everything needed to resume."""
        nets = {key: getattr(self, key).state_dict() for key in
                ("actor", "critic", "actor_target", "critic_target", "actor_optim", "critic_optim")}
        return copy.deepcopy({"config": asdict(self.config), "obs_dim": self.obs_dim, "lbound": self.lbound,
                              "episode": self.episode, "baseline": self.baseline,
                              "rng": self.rng.bit_generator.state, "buffer": self.buffer.state_dict(), **nets})

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`; the checkpoint's config, obs_dim and lbound replace this agent's."""
        self._build(int(state["obs_dim"]), DDPGConfig(**state["config"]), seed=0)  # weights are overwritten below
        self.lbound, self.episode, self.baseline = float(state["lbound"]), int(state["episode"]), state["baseline"]
        self.rng.bit_generator.state = state["rng"]
        self.buffer.load_state_dict(state["buffer"])
        for key in ("actor", "critic", "actor_target", "critic_target", "actor_optim", "critic_optim"):
            getattr(self, key).load_state_dict(state[key])
