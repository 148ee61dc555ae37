"""Optuna's TPE as a searcher: one preserve ratio per decision, the episode's reward as the objective.

A black-box optimiser over the per-layer ratios, with no state embedding and no critic: what a user would
otherwise reach for (benchmarks/peers.py compares it with DDPG on the same candidates). It goes through the
same environment, so the budget clipping and the reward are DDPG's. Optional extra `tpe` (optuna).

Resume is exact without pickling Optuna's internals: the state is the finished trials (parameters and
values), and each episode's sampler is seeded from (seed, episode); TPE itself keeps no other state.
"""

from __future__ import annotations

import numpy as np

from amc.agents.base import Agent, Transition
from amc.errors import AmcError


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise AmcError("--agent tpe needs optuna: pip install 'amc-compress[tpe]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class TPEAgent(Agent):
    name = "tpe"

    def __init__(self, obs_dim: int, lbound: float, seed: int, startup_trials: int = 10, multivariate: bool = False):
        if not 0 <= lbound <= 1:
            raise ValueError(f"lbound must be in [0, 1], got {lbound}")
        self.optuna = require_optuna()
        self.lbound, self.seed = float(lbound), int(seed)
        self.startup_trials, self.multivariate = int(startup_trials), bool(multivariate)
        self.distribution = self.optuna.distributions.FloatDistribution(self.lbound, 1.0)
        self.study = self.optuna.create_study(direction="maximize")
        self.pending: dict[int, object] = {}  # episode -> trial asked and not told yet, oldest first (--workers)
        self.trial = None
        self.step = 0

    def _sampler(self, episode: int):
        seed = int(np.random.SeedSequence([self.seed, episode]).generate_state(1)[0])
        return self.optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials,
                                               multivariate=self.multivariate)

    def begin_episode(self, episode: int) -> None:
        self.study.sampler = self._sampler(episode)
        self.trial = self.study.ask()
        self.pending[episode] = self.trial
        self.step = 0

    def act(self, obs: np.ndarray) -> float:
        ratio = self.trial.suggest_float(f"d{self.step:03d}", self.lbound, 1.0)
        self.step += 1
        return float(ratio)

    def end_episode(self, transitions: list[Transition], reward: float) -> dict[str, float]:
        oldest = next(iter(self.pending))  # episodes finish in the order they began (the search guarantees it)
        self.study.tell(self.pending.pop(oldest), float(reward))
        return {}

    def state_dict(self) -> dict:
        done = self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.COMPLETE,))
        return {"lbound": self.lbound, "seed": self.seed, "startup_trials": self.startup_trials,
                "multivariate": self.multivariate,
                "params": [[t.params[k] for k in sorted(t.params)] for t in done],
                "values": [float(t.value) for t in done]}

    def load_state_dict(self, state: dict) -> None:
        self.lbound, self.seed = float(state["lbound"]), int(state["seed"])
        self.startup_trials, self.multivariate = int(state["startup_trials"]), bool(state["multivariate"])
        self.distribution = self.optuna.distributions.FloatDistribution(self.lbound, 1.0)
        self.study = self.optuna.create_study(direction="maximize")
        for params, value in zip(state["params"], state["values"]):
            names = [f"d{t:03d}" for t in range(len(params))]
            self.study.add_trial(self.optuna.trial.create_trial(
                params=dict(zip(names, map(float, params))), distributions={n: self.distribution for n in names},
                value=float(value)))
        self.pending = {}
