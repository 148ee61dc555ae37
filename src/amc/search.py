"""The search: set up, then play episodes and learn from them, then export the best policy.

`search()` is the Python API behind `amc search`. The loop in `_run` reads top to bottom (play an episode,
learn from it, hand it to the callbacks); what happens around each episode (best policy, latency checks,
the log, the resumable state, TensorBoard, progress) lives in `amc.callbacks`, the run directory's files in
`amc.runs`, scoring in `amc.scoring`. A failed save (disk full) leaves the previous state whole.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from amc.agents import check_anchor_length, make_agent
from amc.apply import apply_policy, export_policy, resolve_config
from amc.baselines import BASELINES, score_baselines
from amc.budget import Budget, check_budget
from amc.callbacks import Callback, CallbackList, Phases, Progress, TensorBoard, summary_writer
from amc.config import SearchConfig
from amc.data import Dataset
from amc.env import CompressionEnv
from amc.errors import AmcError, SaveError
from amc.evaluate import Evaluator
from amc.finalists import choose_finalist
from amc.models import factory
from amc.latency.backends import BACKENDS
from amc.latency.guard import LatencyGuard, calibrate_at_budget, calibrated_latency_model
from amc.finalists import SHORT_FINETUNE
from amc.pipeline import Inputs, Setup, load_inputs, run_device, seed_and_threads, with_scorer
from amc.policy import Policy, policy_from_record
from amc.rollout import serial_episodes
from amc.run_inputs import check_weights
from amc.runs import CONFIG_FILE, RUN_MARKER, STATE_FILE, RunDir, RunSummary
from amc.search_state import SearchState


@dataclass
class SearchResult:
    run_dir: Path
    policy: Policy
    best_val_top1: float
    summary: dict
    episodes: list[dict] = field(repr=False)

    @property
    def baselines(self) -> dict:
        """The fixed policies at the same budget, scored as the export is ({"uniform": {...}, "shallower":
        {...}}; empty without a budget); `summary["searched_minus_best_baseline"]` is the search's margin."""
        return self.summary.get("baselines", {})


def search(model: nn.Module | str | None = None, data: Dataset | str | None = None, *, out: str | Path,
           config: SearchConfig | None = None, resume: bool = False, overwrite: bool = False,
           progress: Callable[[dict], None] | None = None, on_phase: Callable[[dict], None] | None = None,
           random_init: bool = False, trust_model_code: bool = False, callbacks: Sequence[Callback] = (),
           **options) -> SearchResult:
    """Find a per-layer preserve-ratio policy under the budget and export the pruned model into `out`.

    `model` is a zoo name or a model built by `amc.models.create` (it carries `amc_info`); `data` is a
    dataset name or a loaded `amc.data.Dataset`. Settings come from `config` and/or keyword `options`
    (any `SearchConfig` field: `target="macs", ratio=0.5, episodes=300, agent="ddpg", seed=0, ...`).
    With `resume=True` the run's own config.json is used. `progress` is called after every episode with
    that episode's log record plus the run's progress (`eta`: seconds left in the whole search); `on_phase`
    when each phase starts (`amc.callbacks.PHASES`: loading, features, latency, original, agent, episodes,
    finalists, final, done) with `{"phase", "label", "elapsed", "eta"}` ("features" also with `loaded`: the
    dataset's `load_stats`, or None). Both are also logged at INFO on the "amc.search" logger
    (`logging.basicConfig(level=logging.INFO)` shows them). A model named here with no weights (given or
    bundled) is refused unless `random_init=True` asks for an untrained one. A model factory
    that a file names (a resumed run's config.json) is code: it runs only if named here as `model` or with
    `trust_model_code=True`. `callbacks` (`amc.callbacks.Callback`) see every episode after amc's own and may
    stop the search early (their `on_episode` returns True); the best policy so far is then exported. Example::

        result = amc.search("resnet56", "cifar10", weights="r56.pt", data_dir="cifar10.npz", ratio=0.5,
                            out="runs/r56")
    """
    threads = torch.get_num_threads()
    run = RunDir(out)
    try:
        with factory.trusting(trust_model_code, names=(model,)):
            return _search(model, data, run=run, config=config, resume=resume, overwrite=overwrite,
                           progress=progress, phases=Phases(on_phase), random_init=random_init,
                           callbacks=list(callbacks), **options)
    finally:
        run.unlock()  # held from the checks to the export: one writer per run
        torch.set_num_threads(threads)  # the thread count is process-wide; leave it as found


# settings a resume may change: more episodes continue the same search, on this machine's device
RESUME_MAY_CHANGE = ("episodes", "device", "gpus_per_worker")


def resumed_config(run_dir: str | Path, given: dict) -> SearchConfig:
    """The settings a resumed run goes on with: its own, with `given` settings (what the user typed) either
    equal to them or in RESUME_MAY_CHANGE. More episodes keep the DDPG warm-up the run started with; anything
    else that differs is refused with one line naming it, never ignored. (A run moved to another device goes on
    there; its numbers may differ in the last bits from those it would have had.)"""
    saved = RunDir(run_dir).search_config()
    if "model" not in given:  # a factory the run names is code that came with the run
        factory.check_named_in_file(saved.model, RunDir(run_dir) / CONFIG_FILE)
    unknown = sorted(set(given) - set(saved.to_dict()))
    if unknown:
        raise AmcError(f"unknown search setting: {', '.join(unknown)}")
    changed = {k: v for k, v in given.items() if v != getattr(saved, k)}
    refused = [f"--{k.replace('_', '-')} {v} (the run has {getattr(saved, k)})" for k, v in changed.items()
               if k not in RESUME_MAY_CHANGE]
    if refused:
        raise AmcError(f"{run_dir} was started with other settings: {'; '.join(refused)}; resume without them "
                       "(only --episodes may grow and --device change), or start a new search in another --out")
    if not changed:
        return saved
    if "episodes" not in changed:
        return SearchConfig.resolve(saved, **changed)
    if changed["episodes"] < saved.episodes:
        raise AmcError(f"--episodes {changed['episodes']} is fewer than the {saved.episodes} {run_dir} was started "
                       f"with; a resume can only add episodes")
    return SearchConfig.resolve(saved, **changed, warmup=saved.warmup_episodes)


def build_budget(setup: Setup, config: SearchConfig, saved_calibration: dict | None = None
                 ) -> tuple[Budget, LatencyGuard | None]:
    """The budget, and for a latency budget the guard that checks it on the real network. Latency costs come from
    a per-layer table calibrated on whole networks (or on `saved_calibration` when a search resumes), then
    refitted through the uniform policy that meets the budget; the budget is built over the refitted table."""
    env_config = config.env_config
    if config.target != "latency":
        return Budget(setup.graph, env_config), None
    latency = calibrated_latency_model(setup.model, setup.graph, env_config, config, saved_calibration)
    budget = Budget(setup.graph, env_config, latency.predict)
    if saved_calibration is None and env_config.constrained:
        at_budget = budget.uniform_counts(budget.uniform_ratio())
        latency = calibrate_at_budget(latency, setup.model, setup.graph, at_budget, config)
        budget = Budget(setup.graph, env_config, latency.predict)
    return budget, LatencyGuard(latency, budget, setup.model, setup.scorer.build, config)


def build_env(setup: Setup, config: SearchConfig, saved_calibration: dict | None = None
              ) -> tuple[CompressionEnv, LatencyGuard | None]:
    """The environment the agents walk, over `build_budget`'s budget and the setup's scorer, and the guard."""
    budget, guard = build_budget(setup, config, saved_calibration)
    return CompressionEnv(budget, setup.scorer), guard


def check_before_scoring(config: SearchConfig, inputs: Inputs) -> None:
    """Everything the loaded model and data reveal without scoring, refused before the first expensive step
    (sampling features): a budget the cost model cannot reach, a DDPG anchor of the wrong length, a latency
    backend or an extra that is not installed. (Settings alone are checked by `SearchConfig`, the data against
    the model and the weights against the architecture as they load.)"""
    check_budget(inputs.graph, config.env_config)
    if config.agent == "ddpg":
        check_anchor_length(config.agent_options.get("anchor"), len(inputs.graph.decisions))
    if config.target == "latency":
        BACKENDS[config.latency_backend].require()  # its extra, named in one line
    if config.workers > 1:
        from amc.parallel import require_ray
        require_ray()
    if config.tensorboard:
        summary_writer()
    if config.agent == "tpe":
        from amc.agents.tpe import require_optuna
        require_optuna()


def final_seconds(setup: Setup, config: SearchConfig, original_seconds: float) -> float:
    """About how long what follows the episodes takes, from `original_seconds` (one scoring of the original on
    the whole held-out split): `_finish` builds and scores the exported network and, under a budget, each fixed
    baseline policy (`amc.baselines`) on the held-out and test splits (at a pruned network's pace, below), and
    the original on the test split; the finalist stage trains ~2 x K x steps batches
    (~3 forward passes each) and scores ~2 x K candidates."""
    per_image = original_seconds / max(1, len(setup.dataset.heldout))
    heldout, test = len(setup.dataset.heldout), len(setup.dataset.test)
    baselines = 0 if config.reward != "acc" else len(BASELINES) if len(setup.graph.decisions) > 1 else 1
    # a pruned network's pace: a fixed share per layer plus the part that shrinks with the budget (ResNet-20 at
    # 50% MACs on one thread: 0.64 of the original's; 0.3 + 0.7 x 0.5 = 0.65); without a budget, unknown: 1
    pruned_pace = 0.3 + 0.7 * config.ratio if config.reward == "acc" else 1.0
    seconds = per_image * ((1 + baselines) * (heldout + test) * pruned_pace + test)
    if config.finalists > 1:
        steps = 2 * config.finalists * config.finalist_steps
        scorings = 2 * config.finalists * setup.scorer.evaluator.size
        seconds += per_image * (3 * steps * SHORT_FINETUNE.batch_size + scorings)
    return seconds


def _search(model, data, *, run: RunDir, config, resume, overwrite, progress, phases: Phases, random_init: bool,
            callbacks: list[Callback], **options) -> SearchResult:
    if resume and overwrite:
        raise AmcError("--resume continues a run and --overwrite replaces it; pass one of them")
    if resume:
        given = {**(config.to_dict() if config else {}), **options,
                 **{k: v for k, v in (("model", model), ("data", data)) if isinstance(v, str)}}
        config = resumed_config(run.path, given)  # the run's settings; a change is refused or applied, not ignored
        run.lock()
    else:
        config = resolve_config(model, data, config, options)
        if not isinstance(model, nn.Module):  # a network built here by name: trained weights, or asked not to be
            check_weights(config.model, config.weights, random_init, doing="search")
        run.check_new(overwrite, inputs=(config.weights, config.data_dir))
        if overwrite and run.has(RUN_MARKER):
            run.lock()  # before any work: a run another process is writing is refused at once
    device = run_device(config)  # a device this machine lacks is refused before anything loads
    seed_and_threads(config)

    phases.start("loading")
    inputs = load_inputs(config, model if isinstance(model, nn.Module) else None,
                         data if isinstance(data, Dataset) else None, device=device)
    if resume:
        run.check_same_inputs(inputs.dataset, inputs.weights)
    check_before_scoring(config, inputs)  # a mistake is reported in seconds, not after minutes of setup
    phases.start("features", loaded=inputs.dataset.load_stats)  # how long decoding took, the memory it takes
    setup = with_scorer(inputs, config)
    saved_calibration = run.read_latency_calibration() if resume else None
    if config.target == "latency":
        phases.start("latency")
    env, guard = build_env(setup, config, saved_calibration)
    phases.start("original")
    started = phases.clock()
    baseline_top1 = setup.baseline_top1()
    phases.expect_after_episodes(final_seconds(setup, config, phases.clock() - started))
    phases.start("agent")
    started = phases.clock()
    agent = make_agent(config.agent, env.budget, config.seed, scorer=setup.scorer, on_step=phases.step,
                       **config.agent_settings)
    agent_seconds = phases.clock() - started  # the knapsack's sensitivity passes: part of the search's time

    if not resume:
        run.create(overwrite)  # only now: a mistake found above leaves nothing behind
    try:
        if guard is not None and saved_calibration is None:
            run.write_latency_calibration(guard.latency.calibration())
        return _run(run, config, resume, setup, env, agent, guard, baseline_top1, progress, phases, callbacks,
                    agent_seconds)
    except SaveError as e:  # disk full or permissions, with the previous state intact
        if run.has_state():
            raise SaveError(f"cannot save {e.path} ({e.reason}); the state after the last finished episode is "
                            f"intact: free disk space, then continue with `amc search --resume --out {run}`",
                            e.path, e.reason) from None
        if not resume:
            run.remove()  # nothing worth keeping yet: leave nothing behind
        raise SaveError(f"cannot save {e.path} ({e.reason}); {run} holds no finished episode and was "
                        f"{'left as it was' if resume else 'removed'}: free disk space or choose another --out, "
                        "then run again", e.path, e.reason) from None


def _run(run: RunDir, config: SearchConfig, resume: bool, setup: Setup, env: CompressionEnv, agent,
         guard: LatencyGuard | None, baseline_top1: float, progress, phases: Phases,
         own_callbacks: list[Callback] = (), agent_seconds: float = 0.0) -> SearchResult:
    """The episode loop (from where a resumed run stopped, until the planned episodes or a callback's stop), then
    the export."""
    log, best, start = _restore(run, agent, setup.scorer) if resume else ([], None, 0)
    if not resume:
        run.write_config(config, dataset=setup.dataset, info=setup.info, graph=setup.graph, weights=setup.weights,
                         baseline_top1=baseline_top1, device=str(setup.device),
                         budget={"target": config.target, "ratio": config.ratio, "value": env.budget.limit})
    else:
        run.update_settings(config)  # more episodes: a later resume goes on to the new end
    episodes = config.episodes_to_run
    state = SearchState(run, setup.graph, config.model, agent, log, best, guard, env)
    callbacks = CallbackList([TensorBoard(run, start) if config.tensorboard else None,
                              Progress(progress, phases, episodes, start), *own_callbacks])

    phases.start("episodes", episodes=episodes, start=start)
    if config.workers > 1 and episodes - start > 1:
        from amc.parallel import parallel_episodes
        played = parallel_episodes(env, agent, setup.scorer, config, range(start, episodes))
    else:
        played = serial_episodes(env, agent, setup.scorer, range(start, episodes), config.races)
    stopped = None
    for episode, record, transitions, seconds, timing in played:
        learned = agent.end_episode(transitions, record["reward"])
        record.update(episode=episode, seconds=round(seconds, 4), timing={k: round(v, 4) for k, v in timing.items()},
                      agent={k: float(v) for k, v in (learned or {}).items()})
        state.add(record)  # the best policy, the latency checks, the run's files
        by = callbacks.on_episode(record)
        if by and episode + 1 < episodes:
            stopped = {"by": by, "planned": episodes}
            played.close()  # a worker pool shuts down now, not when the generator is collected
            break

    phases.start("finalists" if config.finalists > 1 else "final")
    result = _finish(run, config, setup, env.budget, state.best, log, baseline_top1, guard, phases, stopped,
                     agent_seconds)
    callbacks.on_end(result.summary)
    phases.start("done")
    return result


def _restore(run: RunDir, agent, scorer) -> tuple[list[dict], dict | None, int]:
    """A resumed run's log, best episode and next episode; the agent and the global generators restored. A run
    killed before its first episode finished starts again from episode 0 (the seed already set the generators)."""
    if not run.has_state():
        run.restore_episodes(0)
        return [], None, 0
    state = run.load_state()
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise AmcError(f"{run / STATE_FILE} does not hold the state of a {type(agent).__name__} like this run's "
                       f"({type(e).__name__}); the run cannot be resumed: start it again with --overwrite") from None
    log = run.restore_episodes(state["episode"])
    full = scorer.evaluator.size  # racing goes on against the best fully scored candidate
    for r in log:  # the scores seen so far, so that a policy played again is not scored again
        scorer.remember(r["keep"], r["accuracy"])
    scorer.note_best(max((r["accuracy"] for r in log if r.get("scored_images", full) == full), default=float("-inf")))
    return log, state["best"], state["episode"]


def _finish(run: RunDir, config: SearchConfig, setup: Setup, budget: Budget, best: dict, log: list[dict],
            baseline_top1: float, guard: LatencyGuard | None, phases: Phases | None = None,
            stopped: dict | None = None, agent_seconds: float = 0.0) -> SearchResult:
    """Export the best policy (chosen by the finalist stage if on, then checked on the real network under a
    latency budget) and write summary.json."""
    best, finalists = choose_finalist(setup, config, log, best, on_step=phases.step if phases else None)
    if phases is not None and config.finalists > 1:
        phases.start("final")
    if guard is not None:  # the budget was a prediction: check it on the real networks, side by side
        best, check = guard.final(best, log)
        budget = guard.budget  # as last refitted
        run.write_latency_calibration(guard.latency.calibration())
    graph, dataset, info = setup.graph, setup.dataset, setup.info
    policy = policy_from_record(best, graph, config.model)
    pruned, figures = export_policy(run, graph, setup.scorer, policy, dataset, info)
    heldout = figures.pop("heldout_top1")
    summary = {
        "model": config.model, "agent": config.agent, "seed": config.seed, "episodes": len(log),
        "best_episode": best.get("episode"), "heldout_top1": heldout, "best_search_score": best["accuracy"],
        "best_reward": best["reward"], "racing": config.races, **figures,
        "baseline": {"heldout_top1": baseline_top1, "macs": graph.total_macs, "params": graph.total_params,
                     # the original on the test split, for before/after reports (one more forward pass)
                     "test_top1": Evaluator(dataset.test, info.mean, info.std,
                                                         device=setup.device).top1(setup.model)},
        "budget_ratio": config.ratio if config.reward == "acc" else None, "target": config.target,
        # the episodes and what the agent computed before them (this session's: a resume computes it again)
        "search_seconds": round(agent_seconds + sum(r["seconds"] for r in log), 2),
        "agent_seconds": round(agent_seconds, 2), "data_bytes": dataset.nbytes,
    }
    if finalists is not None:
        summary["finalists"] = finalists
    if stopped is not None:  # a callback ended the search before the planned episodes
        summary["stopped_early"] = stopped
    # was it worth it: the uniform policy and the paper's ramp at the same budget, scored as the export is
    summary.update(score_baselines(setup, budget, {"keep": policy.keep, "heldout_top1": heldout,
                                                "test_top1": figures["test_top1"]}, log))
    if guard is not None:
        latency = guard.latency
        summary["latency"] = {
            **latency.info, "target_ratio": config.ratio, "original_ms": check["original_ms"],
            "pruned_ms": check["pruned_ms"], "measured_ratio": check["measured_ratio"],
            "predicted_ms": latency.predict(policy.keep), "met": check["met"],
            "predicted_ratio": latency.predict(policy.keep) / latency.predict(graph.full_keep())}
        if not check["met"]:
            more = (f"continue the search with more episodes (`amc search --resume --out {run} --episodes N`, N > "
                    f"{config.episodes}) or " if config.episodes_to_run > 1 else "")  # one policy: more cannot help
            warnings.warn(f"the exported policy measures {check['measured_ratio']:.3f} of the original latency, over "
                          f"the budget {config.ratio:g}: no searched policy met the budget as measured at the end; "
                          f"{more}lower --ratio", stacklevel=3)
    _warn_if_unranked(log, setup.scorer.evaluator.size)
    summary = RunSummary(**summary)  # the fields a prune writes too, under the same names
    run.write_summary(summary)
    return SearchResult(run.path, policy, heldout, summary.to_dict(), log)


def _warn_if_unranked(log: list[dict], full: int) -> None:
    """One line when every fully scored candidate scored the same: the held-out split could not rank them (a
    model at chance level or predicting one class, a split too small), so the exported policy is arbitrary."""
    scores = {r["accuracy"] for r in log if r.get("scored_images", full) >= full}
    policies = {tuple(r["keep"]) for r in log if r.get("scored_images", full) >= full}
    if len(scores) == 1 and len(policies) >= 5:
        warnings.warn(f"every one of {len(policies)} distinct candidates scored {scores.pop():.4f} on the held-out "
                      f"split ({full} images), so the scores could not rank them and the exported policy is "
                      "arbitrary: check that the weights are trained and match --data", stacklevel=3)


__all__ = ["SearchConfig", "SearchResult", "apply_policy", "build_budget", "build_env", "check_before_scoring",
           "final_seconds", "resumed_config", "search"]
