"""Scoring candidates in parallel on Ray actors (optional extra `distributed`).

Building a policy is cheap (the environment's clipping arithmetic); scoring it (pruning, least squares,
a forward pass over the held-out split) is what takes the time. So the search loop keeps proposing
episodes while up to `workers` of them are being scored, and the learner consumes finished episodes in the
order they were proposed. Each actor holds its own copy of the original model, the calibration statistics
(sampled once by the driver) and the held-out split, and runs one torch thread. With racing, an actor
races its candidate against the driver's best fully scored accuracy at the moment the candidate was proposed
(a bar at most `workers - 1` episodes old, so a little more is scored in full than in one process).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict
from typing import Any, Iterator

import torch

from amc import models
from amc.agents import Agent
from amc.env import CompressionEnv
from amc.errors import AmcError
from amc.models.factory import trusting
from amc.rollout import Episode, run_episode
from amc.scoring import Scorer


def require_ray():
    try:
        import ray
    except ImportError:
        raise AmcError("--workers needs Ray: pip install 'amc-compress[distributed]'") from None
    return ray


class _Worker:
    """One Ray actor: builds the driver's scorer from the payload once (`scorer_from`, as `build_scorer` does), then
    scores keep-count vectors."""

    def __init__(self, payload: dict):
        from amc.graph import LayerGraph
        from amc.scoring import scorer_from

        torch.set_num_threads(1)  # one thread per actor: the actors are the parallelism
        config, info = payload["config"], payload["info"]
        # on a GPU, Ray shows each actor only the card it placed it on, so "cuda" is that card
        device = torch.device(payload["device"])
        with trusting(True):  # the driver's own model (a factory it was allowed to import), not a file's
            model = models.rebuild(info, "the search's model")
        model.load_state_dict(payload["state_dict"])
        model.eval()
        graph = LayerGraph(model, tuple(info["input_shape"]), group_coupled=config.group_coupled)
        model.to(device)  # after tracing on the CPU, as the driver does
        stats = {name: s.to(device) for name, s in payload["stats"].items()} if payload["stats"] else None
        self.scorer = scorer_from(model, graph, payload["heldout"], payload["images"].to(device), stats, config,
                                  device=device)

    def score(self, keep: list[int], beat: float) -> tuple[float, dict, int]:
        """Accuracy, timing and images scored; with racing, against `beat`, the driver's best fully scored
        accuracy when the candidate was proposed."""
        score = self.scorer(keep, beat)
        return score.accuracy, dict(score.timing), score.images


class RayScorer:
    """`submit(keep, beat)` queues a candidate; `next()` returns (accuracy, timing, images scored) in
    submission order."""

    def __init__(self, workers: int, payload: dict[str, Any], address: str | None = None,
                 gpus_per_worker: float | None = None):
        ray = require_ray()
        self.ray = ray
        on_gpu = torch.device(payload["device"]).type == "cuda"
        if not ray.is_initialized():
            kwargs = {"address": address} if address else \
                {"num_cpus": workers, "num_gpus": torch.cuda.device_count() if on_gpu else 0}
            try:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
            except ConnectionError as e:
                raise AmcError(f"cannot reach the Ray cluster at {address}: {e}; check --ray-address") from None
        gpus = ray.cluster_resources().get("GPU", 0) if on_gpu else 0
        actor = ray.remote(**actor_resources(workers, on_gpu, gpus, gpus_per_worker))(_Worker)
        shared = ray.put(payload)  # one copy in the object store, read by every actor
        self.actors = [actor.remote(shared) for _ in range(workers)]
        self.pool = ray.util.ActorPool(self.actors)
        self.pending: deque[int] = deque()
        self.workers = workers

    def submit(self, keep: list[int], beat: float = float("-inf")) -> None:
        self.pool.submit(lambda a, k: a.score.remote(k, beat), list(map(int, keep)))

    def next(self) -> tuple[float, dict, int]:
        return self.pool.get_next()

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)


def actor_resources(workers: int, on_gpu: bool, gpus: float, gpus_per_worker: float | None = None) -> dict:
    """What Ray reserves for each actor: one CPU, and on a GPU `gpus_per_worker` of a card (default: the actors
    spread evenly over the cluster's `gpus`, several to a card when there are more actors than cards), or a
    one-line error when the actors cannot all be placed."""
    if not on_gpu:
        return {"num_cpus": 1}
    if gpus < 1:
        raise AmcError("the Ray cluster has no GPU for the actors; pass --device cpu, or start Ray with GPUs")
    share = gpus_per_worker if gpus_per_worker is not None else min(1.0, int(gpus) / workers)
    if workers * share > gpus + 1e-9:
        raise AmcError(f"{workers} actors x {share:g} GPU need {workers * share:g} GPUs but the cluster has "
                       f"{gpus:g}; pass --gpus-per-worker {gpus / workers:.2g} or fewer --workers")
    return {"num_cpus": 1, "num_gpus": share}


def worker_payload(scorer: Scorer, config) -> dict:
    """What every actor needs to build `scorer` again: the model by name and tensors, the search's settings, the
    held-out split, the calibration images and their statistics (sampled once by the driver)."""
    model = scorer.model
    return {"info": asdict(models.model_info(model)), "config": config,
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "heldout": scorer.evaluator.split, "images": scorer.calibration.to("cpu"),
            "stats": {name: s.to("cpu") for name, s in scorer.stats.items()} if scorer.stats else None,
            "device": "cuda" if scorer.evaluator.device.type == "cuda" else "cpu"}


def parallel_episodes(env: CompressionEnv, agent: Agent, scorer: Scorer, config, episodes: range) -> Iterator[Episode]:
    """Propose episodes while up to `config.workers` are scored on Ray actors; yield them in proposal order.

    The learner runs at most `workers - 1` episodes ahead of what it has learned from (a short policy lag);
    warm-up episodes do not depend on learning, so they run fully in parallel.
    """
    remote = RayScorer(config.workers, worker_payload(scorer, config), config.ray_address, config.gpus_per_worker)
    full = scorer.evaluator.size  # the driver's scorer keeps the best fully scored accuracy actors race against
    in_flight: deque = deque()
    upcoming = iter(episodes)
    try:
        while True:
            while len(in_flight) < config.workers:
                episode = next(upcoming, None)
                if episode is None:
                    break
                with env.deferred_scoring():  # scored remotely
                    record, transitions, _ = run_episode(env, agent, episode)
                remote.submit(record["keep"], scorer.best)
                in_flight.append((episode, record, transitions, time.perf_counter()))
            if not in_flight:
                return
            episode, record, transitions, t0 = in_flight.popleft()
            accuracy, timing, images = remote.next()
            if config.races:
                record["scored_images"] = images
                if images == full:
                    scorer.note_best(accuracy)
            record["accuracy"] = accuracy
            record["reward"] = env.reward(accuracy, record["macs"], record["params"])
            yield episode, record, transitions, time.perf_counter() - t0, timing
    finally:
        remote.close()


__all__ = ["RayScorer", "actor_resources", "parallel_episodes", "require_ray", "worker_payload"]
