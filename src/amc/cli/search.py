"""`amc search`: the search's options, its console lines and its interrupt message."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from amc.agents import AGENTS
from amc.cli.app import app, on_command_line
from amc.cli.options import DATASETS, JSON_HELP, THREADS_HELP, TRUST_HELP
from amc.cli.progress import EpisodeProgress, console
from amc.config import (DEFAULT_BUDGET, DEFAULT_MODEL, DEFAULTS, METHODS,
                        MODEL_BUDGETS, read_settings_file)
from amc.errors import AmcError
from amc.evaluate import PRECISIONS
from amc.latency.backends import BACKENDS
from amc.pruning.channel import SELECTIONS



MODEL, BUDGET, AGENT, PRUNING, RUN, PERFORMANCE = ("Model and data", "Budget", "Agent", "Pruning and scoring",
                                                   "Run and output", "Performance")


@app.command("search")
def search_command(
    ctx: typer.Context,
    model: str = typer.Option(DEFAULTS.model, help="Zoo name (see `amc models`), tv:<torchvision name>, "
                              "timm:<timm name> (extra `timm`), or your own package.module:function returning the "
                              "network (imported from the Python path or the current directory).",
                              rich_help_panel=MODEL),
    weights: Optional[Path] = typer.Option(DEFAULTS.weights, help="Checkpoint of the trained model (default: the "
                                           "bundled weights of the embedded default).", rich_help_panel=MODEL),
    random_init: bool = typer.Option(False, help="Search a randomly initialised model when no weights are given "
                                     "or bundled (checks structure only; refused without it).", rich_help_panel=MODEL),
    data: str = typer.Option(DEFAULTS.data, help="Dataset (digits: the embedded default).", metavar=DATASETS,
                             rich_help_panel=MODEL),
    data_dir: Optional[Path] = typer.Option(DEFAULTS.data_dir, help="cifar10: .npz or CIFAR python folder; "
                                            "imagefolder: root.", rich_help_panel=MODEL),
    download: bool = typer.Option(DEFAULTS.download, help="Download CIFAR-10 if it is not in --data-dir (needs "
                                  "network).", rich_help_panel=MODEL),
    target: str = typer.Option(DEFAULTS.target, help="Budgeted resource; latency is measured per layer once on "
                               "this machine, cached, checked on the final model.", metavar="macs|params|latency",
                               rich_help_panel=BUDGET),
    ratio: Optional[float] = typer.Option(None, "--keep-ratio", "--ratio", help="Budget: the share of the original "
                                          "cost kept, in (0, 1] (0.3 keeps 30%, removes 70%). Default "
                                          f"{DEFAULT_BUDGET[0]:g}; {MODEL_BUDGETS[DEFAULT_MODEL][0]:g} for the "
                                          "embedded digits CNN.", rich_help_panel=BUDGET),
    reward: str = typer.Option(DEFAULTS.reward, help="acc: hard budget, reward = held-out accuracy; acc-macs / "
                               "acc-params: accuracy-guaranteed, -error*log(cost), no budget.",
                               metavar="acc|acc-macs|acc-params", rich_help_panel=BUDGET),
    latency_backend: str = typer.Option(DEFAULTS.latency_backend, help="With --target latency: the runtime it is "
                                        "measured on.", metavar="|".join(BACKENDS), rich_help_panel=BUDGET),
    latency_threads: int = typer.Option(DEFAULTS.latency_threads, help="With --target latency: threads the "
                                        "latency is measured with.", rich_help_panel=BUDGET),
    agent: str = typer.Option(DEFAULTS.agent, help="The searcher: random uses the same clipping with random "
                              "actions; tpe is Optuna's TPE (extra `tpe`); uniform and knapsack run one episode.",
                              metavar="|".join(AGENTS), rich_help_panel=AGENT),
    episodes: int = typer.Option(DEFAULTS.episodes, help="Episodes (scored candidates) to run.",
                                 rich_help_panel=AGENT),
    warmup: Optional[int] = typer.Option(DEFAULTS.warmup, help="DDPG warm-up episodes (default: min(100, "
                                         "episodes/4)).", rich_help_panel=AGENT),
    agent_option: list[str] = typer.Option([], help="Agent setting as KEY=VALUE, repeatable (DDPG: any "
                                           "DDPGConfig field, e.g. noise_sigma_min=0.1).", rich_help_panel=AGENT),
    method: str = typer.Option(DEFAULTS.method, help="channel: remove whole channels (faster); fine-grained: zero "
                               "single weights by magnitude (smaller; with --target params).",
                               metavar="|".join(METHODS), rich_help_panel=PRUNING),
    lbound: Optional[float] = typer.Option(None, help="Smallest share kept of any layer. Default "
                                           f"{DEFAULT_BUDGET[1]:g}; {MODEL_BUDGETS[DEFAULT_MODEL][1]:g} for the "
                                           "embedded digits CNN.", rich_help_panel=PRUNING),
    channel_round: int = typer.Option(DEFAULTS.channel_round, help="Round kept channels to multiples of this (8 "
                                      "suits fast kernels).", rich_help_panel=PRUNING),
    group_coupled: bool = typer.Option(DEFAULTS.group_coupled, help="Also prune each residual-coupled channel "
                                       "group as one decision (where torch-pruning follows it; never across "
                                       "padded shortcuts).", rich_help_panel=PRUNING),
    drop_blocks: bool = typer.Option(DEFAULTS.drop_blocks, help="Let a residual block's decision remove the whole "
                                     "block (identity shortcuts only): an action under lbound/2 there drops it. "
                                     "Gets past the per-operator latency floor.", rich_help_panel=PRUNING),
    drop_share: float = typer.Option(DEFAULTS.drop_share, help="With --drop-blocks: at most this share of each "
                                     "stage's blocks may go (never all).", rich_help_panel=PRUNING),
    selection: str = typer.Option(DEFAULTS.selection, help="Channel selection (greedy: reconstruction-aware).",
                                  metavar="|".join(SELECTIONS), rich_help_panel=PRUNING),
    reconstruct: bool = typer.Option(DEFAULTS.reconstruct, help="Least-squares reconstruction of pruned layers.",
                                     rich_help_panel=PRUNING),
    bn_recalibration: int = typer.Option(DEFAULTS.bn_recalibration, help="Re-estimate BN statistics on this many "
                                         "batches of 100 calibration images before scoring (0 = off).",
                                         rich_help_panel=PRUNING),
    calibration_images: int = typer.Option(DEFAULTS.calibration_images, help="Training images used to sample "
                                           "layer features.", rich_help_panel=PRUNING),
    heldout_limit: Optional[int] = typer.Option(DEFAULTS.heldout_limit, help="Score candidates on the first N "
                                                "held-out images.", rich_help_panel=PRUNING),
    racing: Optional[bool] = typer.Option(DEFAULTS.racing, "--racing/--no-racing", help="Stop scoring a candidate "
                                          "once it cannot plausibly beat the best so far (the best is always "
                                          "scored in full). Default: on with --reward acc.", rich_help_panel=PRUNING),
    precision: str = typer.Option(DEFAULTS.precision, help="Scoring precision of candidates (bf16: about 2x faster "
                                  "on CPUs with bf16 units; final figures are always fp32).",
                                  metavar="|".join(PRECISIONS), rich_help_panel=PRUNING),
    finalists: int = typer.Option(DEFAULTS.finalists, help="Give the top K distinct candidates short distilled "
                                  "fine-tunes and export the winner (successive halving); 1 = off.",
                                  rich_help_panel=PRUNING),
    finalist_steps: int = typer.Option(DEFAULTS.finalist_steps, help="SGD steps per finalist per round.",
                                       rich_help_panel=PRUNING),
    config_file: Optional[Path] = typer.Option(None, "--config", help="Settings file (TOML, JSON, or YAML with "
                                               "PyYAML) holding any of these options by name; the command line "
                                               "overrides it. A run's config.json repeats that run.",
                                               rich_help_panel=RUN),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<model>-<agent>-<time>).",
                                       rich_help_panel=RUN),
    resume: bool = typer.Option(False, help="Continue the search in --out where it stopped.", rich_help_panel=RUN),
    overwrite: bool = typer.Option(False, help="Replace an existing --out.", rich_help_panel=RUN),
    trust_model_code: bool = typer.Option(False, help=TRUST_HELP, rich_help_panel=RUN),
    seed: int = typer.Option(DEFAULTS.seed, help="Seed for the agent, calibration sampling and torch.",
                             rich_help_panel=RUN),
    tensorboard: bool = typer.Option(DEFAULTS.tensorboard, help="Also log every episode for TensorBoard into "
                                     "OUT/tensorboard (extra `tensorboard`).", rich_help_panel=RUN),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP, rich_help_panel=RUN),
    threads: Optional[int] = typer.Option(DEFAULTS.threads, help=THREADS_HELP, rich_help_panel=PERFORMANCE),
    workers: int = typer.Option(DEFAULTS.workers, help="Score episodes in parallel on this many Ray actors (extra "
                                "`distributed`); 1 = in this process.", rich_help_panel=PERFORMANCE),
    ray_address: Optional[str] = typer.Option(DEFAULTS.ray_address, help="Existing Ray cluster for --workers "
                                              "(default: a local instance).", rich_help_panel=PERFORMANCE),
) -> None:
    """Search a per-layer pruning policy under a budget and export the pruned model.

    With no arguments: prunes the bundled digits CNN to 5% of its MACs on scikit-learn's digits (about a minute)
    and says what the search bought over the uniform policy and the ramp at that budget.
    """
    from amc.baselines import verdict
    from amc.config import SearchConfig
    from amc.run_inputs import check_weights
    from amc.runs import CONFIG_FILE, RunDir
    from amc.search import resumed_config, search

    settings = dict(
        model=model, weights=str(weights) if weights else None, data=data,
        data_dir=str(data_dir) if data_dir else None, download=download, target=target, ratio=ratio,
        reward=reward, agent=agent, episodes=episodes, warmup=warmup, lbound=lbound, channel_round=channel_round,
        group_coupled=group_coupled, drop_blocks=drop_blocks, drop_share=drop_share, selection=selection,
        reconstruct=reconstruct, bn_recalibration=bn_recalibration,
        calibration_images=calibration_images, heldout_limit=heldout_limit, racing=racing, precision=precision,
        seed=seed, tensorboard=tensorboard, threads=threads, agent_options=_key_values(agent_option),
        latency_backend=latency_backend, latency_threads=latency_threads, method=method,
        workers=workers, ray_address=ray_address, finalists=finalists, finalist_steps=finalist_steps)
    typed = {k for k in [*settings, "out"] if on_command_line(ctx, "agent_option" if k == "agent_options" else k)}
    if config_file is not None:
        if resume:
            raise AmcError("--config starts a new search; --resume goes on with the run's own settings: drop one")
        for key, value in read_settings_file(config_file).items():
            if key not in typed:  # the command line overrides the file
                settings[key] = value
        if "model" not in typed and not trust_model_code:  # a factory the file names is code that came with it
            from amc.models.factory import check_named_in_file
            check_named_in_file(settings["model"], config_file)
        out = Path(settings.pop("out")) if "out" not in typed and settings.get("out") else out
        settings.pop("out", None)
    if resume and out is None:
        raise AmcError("--resume needs --out pointing at the run directory to continue")
    out = out or Path("runs") / f"{str(settings['model']).replace(':', '_')}-{settings['agent']}-" \
                                f"{datetime.now():%Y%m%d-%H%M%S}"
    # a resume keeps the run's settings; what was typed must equal them or be a change a resume allows (paths
    # compared as the run stores them: absolute)
    given = {k: (os.path.abspath(v) if k in ("weights", "data_dir") and v else v) for k, v in settings.items()
             if resume and k in typed}
    if not resume:
        check_weights(str(settings["model"]), settings["weights"], random_init, doing="search")
    config = resumed_config(out, given) if resume else SearchConfig(**settings)
    episodes = config.episodes_to_run
    goal = (f"{config.target} <= {config.ratio:g}" if config.reward == "acc"
            else f"reward {config.reward} (accuracy-guaranteed, no budget)")
    console.print(f"[bold]amc search[/bold] {config.model} on {config.data}: {goal}, "
                  f"agent {config.agent}, {episodes} episodes -> {out}{' (resumed)' if resume else ''}",
                  highlight=False)
    if config.finalists > 1:
        console.print(f"then the finalist stage: the best {config.finalists} distinct candidates, short distilled "
                      f"fine-tunes of {config.finalist_steps} steps a round, the better half kept each round",
                      highlight=False)
    try:
        with EpisodeProgress(episodes, config.resource) as progress:
            result = search(config=None if resume else config, out=out, resume=resume, overwrite=overwrite,
                            progress=progress, on_phase=progress.phase, random_init=random_init,
                            trust_model_code=trust_model_code, **given)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`Terminated`, raised by `amc.cli.main`'s handler)
        # state.pt is replaced atomically after every episode, so what is there is whole
        run = RunDir(out)
        if run.has_state():
            console.print(f"interrupted; {out} holds the search up to its last finished episode: continue it "
                          f"with `amc search --resume --out {out}`", highlight=False)
        elif (run / CONFIG_FILE).exists():
            console.print(f"interrupted before the first episode finished; `amc search --resume --out {out}` starts "
                          "it again with the run's own settings", highlight=False)
        else:
            console.print("interrupted before the search started; nothing was written", highlight=False)
        raise typer.Exit(getattr(e, "exit_code", 130)) from None
    s = result.summary
    if "finalists" in s and s["finalists"]["candidates"]:
        f = s["finalists"]
        console.print(f"finalist stage: episode {f['winner_episode']} won (the search's best was episode "
                      f"{f['search_best_episode']}), {f['total_steps']} steps in {f['seconds']:.0f} s",
                      highlight=False)
    console.print(f"best policy: held-out top-1 {100 * s['best_val_top1']:.2f}% (original "
                  f"{100 * s['baseline']['heldout_top1']:.2f}%), test top-1 {100 * s['test_top1']:.2f}%, "
                  f"MACs {s['macs'] / 1e6:.2f}M ({s['macs_ratio']:.3f}), params {s['params'] / 1e6:.3f}M "
                  f"({s['params_ratio']:.3f}); wrote {out}/summary.json, policy.json, model.pt", highlight=False)
    if "latency" in s:
        lat = s["latency"]
        console.print(f"latency ({lat['backend']}, {lat['threads']} thread(s), batch {lat['batch']}): measured "
                      f"{lat['pruned_ms']:.3f} ms against {lat['original_ms']:.3f} ms ({lat['measured_ratio']:.3f}; "
                      f"target {lat['target_ratio']:g}, predicted {lat['predicted_ratio']:.3f})", highlight=False)
    worth = verdict(s)  # was it worth it: the fixed policies at the same budget beside the searched one
    if worth:
        console.print(worth, highlight=False)
    if not as_json:
        return
    print(json.dumps({"run_dir": str(out), **{k: s[k] for k in ("best_val_top1", "test_top1", "macs",
                                                                "macs_ratio", "params")},
                      **({"latency_ratio": s["latency"]["measured_ratio"]} if "latency" in s else {}),
                      **({"searched_minus_best_baseline": s["searched_minus_best_baseline"]["test_top1"]}
                         if "searched_minus_best_baseline" in s else {})}))


def _key_values(pairs: list[str]) -> dict:
    """KEY=VALUE strings to a dict, values parsed as JSON where possible (numbers, booleans)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AmcError(f"--agent-option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options
