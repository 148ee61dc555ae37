"""`amc search`: the search's options, its console lines and its interrupt message."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from amc.cli.app import app
from amc.cli.progress import EpisodeProgress, console
from amc.config import DEFAULTS
from amc.errors import AmcError


@app.command("search")
def search_command(
    ctx: typer.Context,
    model: str = typer.Option(DEFAULTS.model, help="Zoo name (see `amc models`), tv:<torchvision name>, "
                              "timm:<timm name> (extra `timm`), or your own package.module:function returning the "
                              "network (imported from the Python path or the current directory)."),
    weights: Optional[Path] = typer.Option(DEFAULTS.weights, help="Checkpoint of the trained model. Without it: "
                                           "the bundled weights of the embedded default, else random init (a "
                                           "warning)."),
    data: str = typer.Option(DEFAULTS.data, help="Dataset: digits (embedded default), cifar10, imagefolder."),
    data_dir: Optional[Path] = typer.Option(DEFAULTS.data_dir, help="cifar10: .npz or CIFAR python folder; "
                                            "imagefolder: root."),
    download: bool = typer.Option(DEFAULTS.download, help="Download CIFAR-10 if it is not in --data-dir (needs "
                                  "network)."),
    target: str = typer.Option(DEFAULTS.target, help="Budgeted resource: macs, params, or latency (measured per "
                               "layer once on this machine, cached, checked on the final model)."),
    method: str = typer.Option(DEFAULTS.method, help="channel (remove whole channels: faster) or fine-grained "
                               "(zero single weights by magnitude: smaller; use with --target params)."),
    workers: int = typer.Option(DEFAULTS.workers, help="Score episodes in parallel on this many Ray actors (extra "
                                "`distributed`); 1 = in this process."),
    ray_address: Optional[str] = typer.Option(DEFAULTS.ray_address, help="Existing Ray cluster for --workers "
                                              "(default: a local instance)."),
    latency_backend: str = typer.Option(DEFAULTS.latency_backend, help="With --target latency: torch or "
                                        "onnxruntime."),
    latency_threads: int = typer.Option(DEFAULTS.latency_threads, help="With --target latency: threads the "
                                        "latency is measured with."),
    ratio: float = typer.Option(DEFAULTS.ratio, help="Budget as a share of the original cost, in (0, 1]."),
    reward: str = typer.Option(DEFAULTS.reward, help="acc (hard budget, reward = held-out accuracy), or acc-macs / "
                               "acc-params (accuracy-guaranteed: -error*log(cost), no budget)."),
    agent: str = typer.Option(DEFAULTS.agent, help="ddpg, random (same clipping, random actions), uniform, or tpe "
                              "(Optuna's TPE over the per-layer ratios; extra `tpe`)."),
    episodes: int = typer.Option(DEFAULTS.episodes, help="Episodes (scored candidates) to run."),
    warmup: Optional[int] = typer.Option(DEFAULTS.warmup, help="DDPG warm-up episodes with random actions "
                                         "(default: min(100, episodes/4))."),
    agent_option: list[str] = typer.Option([], help="Agent setting as KEY=VALUE, repeatable (DDPG: any "
                                           "DDPGConfig field, e.g. noise_sigma_min=0.1)."),
    lbound: float = typer.Option(DEFAULTS.lbound, help="Smallest preserve ratio of any layer."),
    channel_round: int = typer.Option(DEFAULTS.channel_round, help="Round kept channels to multiples of this (8 "
                                      "suits fast kernels)."),
    group_coupled: bool = typer.Option(DEFAULTS.group_coupled, help="Also prune each residual-coupled channel "
                                       "group as one decision (where torch-pruning follows it; never across "
                                       "padded shortcuts)."),
    selection: str = typer.Option(DEFAULTS.selection, help="Channel selection: magnitude or greedy "
                                  "(reconstruction-aware)."),
    reconstruct: bool = typer.Option(DEFAULTS.reconstruct, help="Least-squares reconstruction of pruned layers."),
    bn_recalibration: int = typer.Option(DEFAULTS.bn_recalibration, help="Re-estimate BN statistics on this many "
                                         "batches of 100 calibration images before scoring (0 = off)."),
    calibration_images: int = typer.Option(DEFAULTS.calibration_images, help="Training images used to sample "
                                           "layer features."),
    heldout_limit: Optional[int] = typer.Option(DEFAULTS.heldout_limit, help="Score candidates on the first N "
                                                "held-out images."),
    tensorboard: bool = typer.Option(DEFAULTS.tensorboard, help="Also log every episode for TensorBoard into "
                                     "OUT/tensorboard (extra `tensorboard`)."),
    racing: Optional[bool] = typer.Option(DEFAULTS.racing, "--racing/--no-racing", help="Stop scoring a candidate "
                                          "once it cannot plausibly beat the best so far (the best is always "
                                          "scored in full). Default: on with --reward acc."),
    precision: str = typer.Option(DEFAULTS.precision, help="Scoring precision of candidates: fp32, or bf16 (about "
                                  "2x faster on CPUs with bf16 units; final figures are always fp32)."),
    finalists: int = typer.Option(DEFAULTS.finalists, help="Give the top K distinct candidates short distilled "
                                  "fine-tunes and export the winner (successive halving); 1 = off."),
    finalist_steps: int = typer.Option(DEFAULTS.finalist_steps, help="SGD steps per finalist per round."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seed for the agent, calibration sampling and torch."),
    threads: Optional[int] = typer.Option(DEFAULTS.threads, help="torch CPU threads (default: torch's choice)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<model>-<agent>-<time>)."),
    resume: bool = typer.Option(False, help="Continue the search in --out where it stopped."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
) -> None:
    """Search a per-layer pruning policy under a budget and export the pruned model.

    With no arguments: prunes the bundled digits CNN to 50% MACs on scikit-learn's digits (a few minutes).
    """
    from amc.baselines import verdict
    from amc.config import SearchConfig
    from amc.runs import CONFIG_FILE, RunDir
    from amc.search import resumed_config, search

    if resume and out is None:
        raise AmcError("--resume needs --out pointing at the run directory to continue")
    out = out or Path("runs") / f"{model.replace(':', '_')}-{agent}-{datetime.now():%Y%m%d-%H%M%S}"
    settings = dict(
        model=model, weights=str(weights) if weights else None, data=data,
        data_dir=str(data_dir) if data_dir else None, download=download, target=target, ratio=ratio,
        reward=reward, agent=agent, episodes=episodes, warmup=warmup, lbound=lbound, channel_round=channel_round,
        group_coupled=group_coupled, selection=selection, reconstruct=reconstruct, bn_recalibration=bn_recalibration,
        calibration_images=calibration_images, heldout_limit=heldout_limit, racing=racing, precision=precision,
        seed=seed, tensorboard=tensorboard, threads=threads, agent_options=_key_values(agent_option),
        latency_backend=latency_backend, latency_threads=latency_threads, method=method,
        workers=workers, ray_address=ray_address, finalists=finalists, finalist_steps=finalist_steps)
    # a resume keeps the run's settings; what was typed must equal them or be a change a resume allows
    given = {k: v for k, v in settings.items() if resume and ctx.get_parameter_source(
        "agent_option" if k == "agent_options" else k).name == "COMMANDLINE"}
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
                            progress=progress, on_phase=progress.phase, **given)
    except KeyboardInterrupt:
        # state.pt is replaced atomically after every episode, so what is there is whole
        run = RunDir(out)
        if run.has_state():
            console.print(f"interrupted; {out} holds the search up to its last finished episode: continue it "
                          f"with `amc search --resume --out {out}`", highlight=False)
        elif (run / CONFIG_FILE).exists():
            console.print(f"interrupted before the first episode finished: nothing to resume; start again with "
                          f"`amc search --overwrite --out {out}`", highlight=False)
        else:
            console.print("interrupted before the search started; nothing was written", highlight=False)
        raise typer.Exit(130) from None
    s = result.summary
    if "finalists" in s and s["finalists"]["candidates"]:
        f = s["finalists"]
        console.print(f"finalist stage: episode {f['winner_episode']} won (the search's best was episode "
                      f"{f['search_best_episode']}), {f['total_steps']} steps in {f['seconds']:.0f} s",
                      highlight=False)
    console.print(f"best policy: held-out top-1 {s['best_val_top1']:.4f} (original "
                  f"{s['baseline']['heldout_top1']:.4f}), test top-1 {s['test_top1']:.4f}, "
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
