"""Playing episodes: an agent walks the environment's decisions, the finished candidate is scored, and the
episode becomes one log record plus the transitions the agent learns from."""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from amc.agents import Agent, Transition
from amc.env import CompressionEnv
from amc.scoring import Score, Scorer

Episode = tuple[int, dict, list[Transition], float, dict]  # episode, record, transitions, seconds, timing


def run_episode(env: CompressionEnv, agent: Agent, episode: int) -> tuple[dict, list[Transition], Score | None]:
    """One episode: reset, act and step to the last decision. Returns its record, its transitions and what the
    scorer returned for it (None where scoring is deferred to a worker)."""
    obs, _ = env.reset()
    agent.begin_episode(episode)
    transitions: list[Transition] = []
    while True:
        proposed = agent.act(obs)
        next_obs, reward, terminated, _, info = env.step(np.array([proposed], dtype=np.float32))
        transitions.append(Transition(obs, float(info["action"]), next_obs if not terminated else obs, terminated))
        obs = next_obs
        if terminated:
            break
    record = {"reward": float(reward), "accuracy": info["accuracy"], "macs": info["macs"],
              "params": info["params"], "macs_ratio": info["macs_ratio"], "params_ratio": info["params_ratio"],
              "keep": info["keep_counts"], "ratios": info["ratios"]}
    return record, transitions, info["score"]


def serial_episodes(env: CompressionEnv, agent: Agent, scorer: Scorer, episodes: range,
                    races: bool) -> Iterator[Episode]:
    """Episodes scored in this process, one after the other. Lazy: the caller learns from an episode before
    the next one is played."""
    for episode in episodes:
        t0 = time.perf_counter()
        record, transitions, score = run_episode(env, agent, episode)
        seconds = time.perf_counter() - t0
        timing = {**score.timing, "agent_and_env": seconds - sum(score.timing.values())}
        if races:
            record["scored_images"] = score.images
        yield episode, record, transitions, seconds, timing


__all__ = ["Episode", "run_episode", "serial_episodes"]
