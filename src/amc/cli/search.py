"""`amc search`: its options, built from SearchConfig's fields (`amc.config.setting`) and its own few, its
console lines and its interrupt message."""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import Field
from datetime import datetime
from pathlib import Path

import typer

from amc.cli.app import app, on_command_line
from amc.cli.options import JSON_HELP, TRUST_HELP
from amc.cli.progress import EpisodeProgress, console
from amc.config import (
    MODEL,
    RUN,
    SearchConfig,
    default,
    default_agent,
    read_settings_file,
    search_options,
)
from amc.errors import AmcError

# the options of `amc search` that are not search settings, each shown before the setting named (None: last in its
# panel): (before, name, type, option)
OWN_OPTIONS = [
    ("data", "random_init", bool, typer.Option(
        False, help="Search a randomly initialised model when no weights are given or bundled (checks structure "
        "only; refused without it).", rich_help_panel=MODEL)),
    ("seed", "config_file", Path | None, typer.Option(
        None, "--config", help="Settings file (TOML, JSON, or YAML with PyYAML) holding any of these options by "
        "name; the command line overrides it. A run's config.json repeats that run.", rich_help_panel=RUN)),
    ("seed", "out", Path | None, typer.Option(
        None, help="Run directory (default: runs/<model>-<agent>-<time>).", rich_help_panel=RUN)),
    ("seed", "resume", bool, typer.Option(
        False, help="Continue the search in --out where it stopped.", rich_help_panel=RUN)),
    ("seed", "overwrite", bool, typer.Option(False, help="Replace an existing --out.", rich_help_panel=RUN)),
    ("seed", "trust_model_code", bool, typer.Option(False, help=TRUST_HELP, rich_help_panel=RUN)),
    (None, "as_json", bool, typer.Option(False, "--json", help=JSON_HELP, rich_help_panel=RUN)),
]
_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "dict": list[str]}


def _option(f: Field) -> inspect.Parameter:
    """The option of setting `f`: its type on the command line (a path, KEY=VALUE strings for a dict), default,
    flags, help, panel and choices, as `amc.config.setting` declared them."""
    kind, meta = str(f.type).split(" |")[0], f.metadata
    annotation = Path if meta["path"] else _TYPES[kind]
    if "None" in str(f.type):
        annotation = annotation | None
    option = typer.Option([] if kind == "dict" else default(f.name), *meta["flags"], help=meta["help"],
                          metavar=meta["shown"], rich_help_panel=meta["panel"])
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _parameters() -> list[inspect.Parameter]:
    """The settings' options in declaration order, with OWN_OPTIONS placed among them."""
    settings = search_options()
    names, panels = [f.name for f in settings], [f.metadata["panel"] for f in settings]
    placed = [((i, 1, 0), _option(f)) for i, f in enumerate(settings)]
    for j, (before, name, annotation, option) in enumerate(OWN_OPTIONS):
        last = max(i for i, panel in enumerate(panels) if panel == option.rich_help_panel)
        at = (names.index(before), 0, j) if before else (last, 2, j)
        placed.append((at, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                             annotation=annotation)))
    return [p for _, p in sorted(placed, key=lambda item: item[0])]


def _setting(f: Field, value):
    """A setting as SearchConfig holds it, from its option's value: paths as strings, KEY=VALUEs as a dict."""
    if f.metadata["path"]:
        return str(value) if value else None
    return _key_values(value) if str(f.type) == "dict" else value


def search_command(ctx: typer.Context, **options) -> None:
    """Search a per-layer pruning policy under a budget and export the pruned model.

    With no arguments: prunes the bundled digits CNN to 5% of its MACs on scikit-learn's digits with the knapsack
    allocator (seconds) and says what it bought over the uniform policy and the ramp at that budget.
    """
    from amc.baselines import verdict
    from amc.run_inputs import check_weights
    from amc.runs import CONFIG_FILE, RunDir
    from amc.search import resumed_config, search

    config_file, out, resume, overwrite, trust_model_code, random_init, as_json = (
        options.pop(name) for name in ("config_file", "out", "resume", "overwrite", "trust_model_code", "random_init",
                                       "as_json"))
    settings = {f.name: _setting(f, options[f.name]) for f in search_options()}
    typed = {k for k in [*settings, "out"] if on_command_line(ctx, k)}
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
    agent = settings["agent"] or default_agent(settings["reward"], settings["finalists"])  # as the config resolves it
    out = out or Path("runs") / f"{str(settings['model']).replace(':', '_')}-{agent}-{datetime.now():%Y%m%d-%H%M%S}"
    # a resume keeps the run's settings; what was typed must equal them or be a change a resume allows (paths
    # compared as the run stores them: absolute)
    paths = {f.name for f in search_options() if f.metadata["path"]}
    given = {k: (os.path.abspath(v) if k in paths and v else v) for k, v in settings.items() if resume and k in typed}
    if not resume:
        check_weights(str(settings["model"]), settings["weights"], random_init, doing="search")
    config = resumed_config(out, given) if resume else SearchConfig(**settings)
    episodes = config.episodes_to_run
    goal = (f"{config.target} <= {config.ratio:g}" if config.reward == "acc"
            else f"reward {config.reward} (accuracy-guaranteed, no budget)")
    console.print(f"[bold]amc search[/bold] {config.model} on {config.data}: {goal}, "
                  f"agent {config.agent}, {episodes} episode{'s' if episodes != 1 else ''} -> {out}{' (resumed)' if resume else ''}",
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
    console.print(f"best policy: held-out top-1 {100 * s['heldout_top1']:.2f}% (original "
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
    print(json.dumps({"run_dir": str(out), **{k: s[k] for k in ("heldout_top1", "test_top1", "macs",
                                                                "macs_ratio", "params")},
                      **({"latency_ratio": s["latency"]["measured_ratio"]} if "latency" in s else {}),
                      **({"searched_minus_best_baseline": s["searched_minus_best_baseline"]["test_top1"]}
                         if "searched_minus_best_baseline" in s else {})}))


# the parameters Typer reads the options from: each setting's, and the command's own
search_command.__signature__ = inspect.Signature([
    inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context), *_parameters()])
app.command("search")(search_command)


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
