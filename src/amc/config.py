"""`SearchConfig`: every setting of a search, declared once with its `amc search` option, and validated once.

Each field is a `setting`: its default, and the help panel, text and choices of its option; `amc.cli.search`
builds the command's options from these fields, so a new setting is one field here. What the settings imply is
derived here too (the environment's `EnvConfig`, the DDPG warm-up, whether candidates are raced, how many
episodes run), so no other module re-derives it. Importing this module loads no torch: the catalogues that
choices come from are imported when a config is checked or a command's help is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields

from amc.checks import KINDS, check_fields, fits
from amc.devices import DEVICE_HELP, check_device_name
from amc.errors import AmcError, ConfigError
from amc.safe_open import read_regular_bytes
from amc.threads import check_threads

DEFAULT_MODEL, DEFAULT_DATA = "digits_cnn", "digits"
METHODS = ("channel", "fine-grained")
# the budget (ratio, lbound) where none is given: half the cost, except for the embedded digits CNN, whose
# default run must show what a search buys: at 50% every policy scores alike there, at 5% MACs (lbound 0.05) the
# searched policy beats uniform by 6-7 test points (benchmarks/RESULTS.md, issue 20)
DEFAULT_BUDGET = (0.5, 0.2)
MODEL_BUDGETS = {DEFAULT_MODEL: (0.05, 0.05)}
# where no --lbound is given for a budget (--reward acc), it follows the ratio: a quarter of it, at most
# DEFAULT_BUDGET's 0.2: at 20% of ResNet-20's MACs the knapsack fine-tuned 0.95 points better with 0.05 than with
# 0.1 (three seeds, benchmarks/RESULTS.md), and 0.2 cannot even meet that budget.
LBOUND_SHARE = 0.25

# the panels `amc search --help` groups its options in, in the order shown
MODEL, BUDGET, AGENT, PRUNING, RUN, PERFORMANCE = ("Model and data", "Budget", "Agent", "Pruning and scoring",
                                                   "Run and output", "Performance")
THREADS_HELP = "torch CPU threads (default: torch's choice; one for tiny models)."

Names = Callable[[], Sequence[str]]


# The catalogues choice-valued settings take their names from, each imported when first asked: every one of them
# loads torch, which neither building the CLI nor reading a settings file needs.
def agent_names() -> Sequence[str]:
    # the registry itself: an agent added to it is valid at once
    from amc.agents import AGENTS
    return tuple(AGENTS)


def backend_names() -> Sequence[str]:
    from amc.latency.backends import BACKENDS
    return tuple(BACKENDS)


def dataset_names() -> Sequence[str]:
    from amc.data import DATASETS
    return DATASETS


def precision_names() -> Sequence[str]:
    from amc.evaluate import PRECISIONS
    return PRECISIONS


def selection_names() -> Sequence[str]:
    from amc.pruning.channel import SELECTIONS
    return SELECTIONS


def target_names() -> Sequence[str]:
    from amc.budget import TARGETS
    return TARGETS


def reward_names() -> Sequence[str]:
    from amc.budget import REWARDS
    return REWARDS


def setting(default, panel: str, help: str, *, flags: tuple[str, ...] = (), choices: Names | None = None,
            shown: Names | None = None, path: bool = False) -> Field:
    """A SearchConfig field that is also an `amc search` option: `default` (a type such as `dict` is a factory,
    so that every config gets its own), shown under `panel` with `help`. `flags` replace the one named after the
    field (`--keep-ratio`, `--ratio`); `choices` are the names it must be one of, checked here and listed in the
    help; `shown` lists names in the help that another module checks; `path`: typed as a path on the command
    line, stored as a string."""
    metadata = {"panel": panel, "help": help, "flags": flags, "choices": choices, "shown": shown or choices,
                "path": path}
    if isinstance(default, type):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class SearchConfig:
    """Everything that determines a search; written to config.json and used to resume it. The fields declared with
    `setting` are the options of `amc search`, in the order and groups of its help; the others only the Python API
    and settings files set."""

    model: str = setting(DEFAULT_MODEL, MODEL, "Zoo name (see `amc models`), tv:<torchvision name>, timm:<timm name> "
                         "(extra `timm`), or your own package.module:function returning the network (imported from "
                         "the Python path or the current directory).")
    weights: str | None = setting(None, MODEL, "Checkpoint of the trained model (default: the bundled weights of the "
                                  "embedded default).", path=True)
    # not checked here: a Dataset passed to `amc.search` names itself, and loading checks a name
    data: str = setting(DEFAULT_DATA, MODEL, "Dataset (digits: the embedded default).", shown=dataset_names)
    data_dir: str | None = setting(None, MODEL, "cifar10: .npz or CIFAR python folder; imagefolder: root.", path=True)
    download: bool = setting(False, MODEL, "Download CIFAR-10 if it is not in --data-dir (needs network).")
    # amc.data.datasets.MAX_MEMORY_GB, written out because importing amc.data loads torch (tests/test_config.py)
    max_memory_gb: float = setting(16.0, MODEL, "imagefolder: refuse before decoding a folder whose images would "
                                   "take more than this many GiB of memory (uint8, all splits).")

    # target and reward are checked by `EnvConfig`
    target: str = setting("macs", BUDGET, "Budgeted resource; latency is measured per layer once on this machine, "
                          "cached, checked on the final model.", shown=target_names)
    # share of the cost kept; None: DEFAULT_BUDGET or the model's own
    ratio: float | None = setting(None, BUDGET, "Budget: the share of the original cost kept, in (0, 1] (0.3 keeps "
                                  f"30%, removes 70%). Default {DEFAULT_BUDGET[0]:g}; "
                                  f"{MODEL_BUDGETS[DEFAULT_MODEL][0]:g} for the embedded digits CNN.",
                                  flags=("--keep-ratio", "--ratio"))
    reward: str = setting("acc", BUDGET, "acc: hard budget, reward = held-out accuracy; acc-macs / acc-params: "
                          "accuracy-guaranteed, -error*log(cost), no budget.", shown=reward_names)
    latency_backend: str = setting("torch", BUDGET, "With --target latency: the runtime it is measured on.",
                                   choices=backend_names)
    latency_threads: int = setting(1, BUDGET, "With --target latency: threads the latency is measured with.")
    latency_batch: int = 1               # with --target latency: the batch the latency is measured at

    # None: `default_agent` (the knapsack under a budget, DDPG otherwise)
    agent: str | None = setting(None, AGENT, "The searcher. Default: knapsack (one deterministic episode, seconds "
                                "to minutes) with --reward acc, ddpg (the paper's) for the accuracy-guaranteed "
                                "rewards and --finalists. random uses the same clipping with random actions; tpe "
                                "is Optuna's TPE (extra `tpe`); uniform and knapsack run one episode.",
                                choices=agent_names)
    episodes: int = setting(300, AGENT, "Episodes (scored candidates) to run.")
    warmup: int | None = setting(None, AGENT, "DDPG warm-up episodes (default: min(100, episodes/4)).")
    # extra agent settings, e.g. {"noise_sigma_min": 0.1}
    agent_options: dict = setting(  # noqa: RUF009 - a field whose default is a factory
        dict, AGENT, "Agent setting as KEY=VALUE, repeatable (DDPG: any DDPGConfig field, e.g. noise_sigma_min=0.1).",
        flags=("--agent-option",))

    method: str = setting("channel", PRUNING, "channel: remove whole channels (faster); fine-grained: zero single "
                          "weights by magnitude (smaller; with --target params).", choices=lambda: METHODS)
    # smallest share kept of any layer; None: as `ratio`
    lbound: float | None = setting(None, PRUNING, f"Smallest share kept of any layer. Default {LBOUND_SHARE:g} x "
                                   f"--ratio, at most {DEFAULT_BUDGET[1]:g} (0.05 at 20%); "
                                   f"{MODEL_BUDGETS[DEFAULT_MODEL][1]:g} for the embedded digits CNN.")
    channel_round: int = setting(1, PRUNING, "Round kept channels to multiples of this (8 suits fast kernels).")
    group_coupled: bool = setting(False, PRUNING, "Also prune each residual-coupled channel group as one decision "
                                  "(where torch-pruning follows it; never across padded shortcuts).")
    drop_blocks: bool = setting(False, PRUNING, "Let a residual block's decision remove the whole block (identity "
                                "shortcuts only): an action under lbound/2 there drops it. Gets past the "
                                "per-operator latency floor.")
    # amc.blocks.DROP_SHARE, written out because importing amc.blocks loads torch (tests/test_config.py compares)
    drop_share: float = setting(0.5, PRUNING, "With --drop-blocks: at most this share of each stage's blocks may go "
                                "(never all).")
    selection: str = setting("magnitude", PRUNING, "Channel selection (magnitude: L1 norm of the consumer's "
                             "weights; l2: their L2 norm; greedy: reconstruction-aware).",
                             choices=selection_names)
    reconstruct: bool = setting(True, PRUNING, "Least-squares reconstruction of pruned layers.")
    # on by default: +10 points before fine-tuning, ranking kept (benchmarks/RESULTS.md, issue 5)
    bn_recalibration: int = setting(2, PRUNING, "Re-estimate BN statistics on this many batches of 100 calibration "
                                    "images before scoring (0 = off).")
    calibration_images: int = setting(3000, PRUNING, "Training images used to sample layer features.")
    points_per_image: int = 10
    heldout_limit: int | None = setting(None, PRUNING, "Score candidates on the first N held-out images.")
    # None: wherever it applies (--reward acc), see `races`
    racing: bool | None = setting(None, PRUNING, "Stop scoring a candidate once it cannot plausibly beat the best so "
                                  "far (the best is always scored in full). Default: on with --reward acc.",
                                  flags=("--racing/--no-racing",))
    precision: str = setting("fp32", PRUNING, "Scoring precision of candidates (bf16: about 2x faster on CPUs with "
                             "bf16 units; final figures are always fp32).", choices=precision_names)
    eval_batch_size: int = 100
    finalists: int = setting(1, PRUNING, "Give the top K distinct candidates short distilled fine-tunes and export "
                             "the winner (successive halving); 1 = off.")
    finalist_steps: int = setting(100, PRUNING, "SGD steps per finalist per round.")

    seed: int = setting(0, RUN, "Seed for the agent, calibration sampling and torch.")
    tensorboard: bool = setting(False, RUN, "Also log every episode for TensorBoard into OUT/tensorboard (extra "
                                "`tensorboard`).")

    threads: int | None = setting(None, PERFORMANCE, THREADS_HELP)
    # the name as given; whether this machine has it is checked when a run starts (that needs torch)
    device: str = setting("auto", PERFORMANCE, DEVICE_HELP)
    workers: int = setting(1, PERFORMANCE, "Score episodes in parallel on this many Ray actors (extra "
                           "`distributed`); 1 = in this process.")
    ray_address: str | None = setting(None, PERFORMANCE, "Existing Ray cluster for --workers (default: a local "
                                      "instance).")
    gpus_per_worker: float | None = setting(None, PERFORMANCE, "Share of a GPU each Ray actor takes with --workers "
                                            "on a GPU device (0.25: four actors share a card); default: the actors "
                                            "spread evenly over the GPUs.")

    def __post_init__(self) -> None:
        if self.agent is None:
            self.agent = default_agent(self.reward, self.finalists)
        budget = MODEL_BUDGETS.get(self.model, DEFAULT_BUDGET) if isinstance(self.model, str) else DEFAULT_BUDGET
        if self.ratio is None:
            self.ratio = budget[0]
        if self.lbound is None:
            own = isinstance(self.model, str) and self.model in MODEL_BUDGETS  # the digits CNN's fixed pair
            follows = not own and self.reward == "acc" and isinstance(self.ratio, (int, float))
            self.lbound = min(budget[1], LBOUND_SHARE * self.ratio) if follows else budget[1]
        # types, finite numbers and lower bounds, for the CLI and the API alike
        check_fields(self, MINIMUMS, positive=("max_memory_gb",))
        if self.agent_options:
            check_agent_options(self.agent, self.agent_options)
        check_threads(self.threads)
        check_device_name(self.device)
        check_threads(self.latency_threads, "--latency-threads")
        self.env_config  # validates target, ratio, lbound, channel_round and reward
        if self.episodes < 1:
            raise AmcError(f"--episodes must be at least 1, got {self.episodes}")
        if self.calibration_images < 1:
            raise AmcError("--calibration-images must be at least 1")
        for f in search_options():
            names = f.metadata["choices"] and f.metadata["choices"]()
            if names and getattr(self, f.name) not in names:
                raise AmcError(f"--{f.name.replace('_', '-')} must be one of {', '.join(names)}, got "
                               f"{getattr(self, f.name)!r}")
        if self.method == "fine-grained" and (self.target != "params" and self.reward == "acc"
                                              or self.reward == "acc-macs"):
            raise AmcError("fine-grained pruning shrinks the parameters, not dense MACs or latency; use "
                           "--target params (or --reward acc-params)")
        if self.finalists < 1 or self.finalist_steps < 1:
            raise AmcError(f"--finalists and --finalist-steps must be at least 1, got {self.finalists} and "
                           f"{self.finalist_steps}; --finalists 1 turns the stage off")
        if self.finalists > 1 and (self.reward != "acc" or self.method != "channel"):
            raise AmcError("--finalists compares fine-tuned accuracy under a budget: it needs --reward acc and "
                           "--method channel; use --finalists 1 here")
        if self.workers < 1:
            raise AmcError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and not (self.workers > 1 and 0 < self.gpus_per_worker <= 1):
            raise AmcError(f"--gpus-per-worker must be in (0, 1] and comes with --workers > 1, got "
                           f"{self.gpus_per_worker} with --workers {self.workers}; pass e.g. --workers 4 "
                           "--gpus-per-worker 0.25, or drop it")
        if self.workers > 1 and self.method == "fine-grained":
            raise AmcError("--workers > 1 supports channel pruning only; drop --workers for fine-grained")
        if self.latency_threads < 1 or self.latency_batch < 1:
            raise AmcError("--latency-threads and the latency batch must be at least 1")
        if self.racing and self.reward != "acc":
            raise AmcError("--racing stops candidates that cannot beat the best accuracy, which is the reward only "
                           "with --reward acc; drop --racing for the accuracy-guaranteed rewards")

    @property
    def env_config(self):
        """The environment these settings imply (budget target and ratio, lower bound, rounding, reward), an
        `amc.budget.EnvConfig`."""
        from amc.budget import EnvConfig
        return EnvConfig(self.target, self.ratio, self.lbound, self.channel_round, self.reward, self.drop_blocks,
                         self.drop_share)

    @property
    def races(self) -> bool:
        """Whether candidates are raced: as asked, else by default wherever racing applies. On by default
        because it kept the best and found better policies in the same episodes (benchmarks/RESULTS.md)."""
        return self.racing if self.racing is not None else self.reward == "acc"

    @property
    def warmup_episodes(self) -> int:
        return self.warmup if self.warmup is not None else default_warmup(self.episodes)

    @property
    def episodes_to_run(self) -> int:
        return episodes_to_run(self.agent, self.episodes)

    @property
    def agent_settings(self) -> dict:
        """Keyword settings for `amc.agents.make_agent`: the DDPG warm-up, then the user's --agent-option."""
        warmup = {"warmup_episodes": self.warmup_episodes} if self.agent == "ddpg" else {}
        return {**warmup, **self.agent_options}

    @property
    def resource(self) -> str:
        """The share a progress line shows per episode: "params" where parameters are traded, else "macs"."""
        return "params" if "params" in (self.target, self.reward.removeprefix("acc-")) else "macs"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "SearchConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    @classmethod
    def resolve(cls, config: "SearchConfig | None" = None, **options) -> "SearchConfig":
        """One validated config from `config` (or the defaults) with keyword `options` replacing its fields;
        `config` itself, already validated, where nothing replaces any of them."""
        if config is not None and not options:
            return config
        try:
            # without a config, the defaults that depend on the model (the budget) follow the model given
            return cls(**{**(asdict(config) if config else {}), **options})
        except TypeError as e:
            raise AmcError(f"unknown search setting: {e}") from None


def search_options() -> list[Field]:
    """SearchConfig's fields that are options of `amc search` (declared with `setting`), in declaration order."""
    return [f for f in fields(SearchConfig) if "help" in f.metadata]


def default(name: str):
    """The declared default of SearchConfig's field `name`, without building (and so checking) a config."""
    f = SearchConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default is MISSING else f.default


def default_agent(reward: str, finalists: int) -> str:
    """The searcher where none is named. Under a budget the knapsack: after the same fine-tune it came closest to
    the best policy known on every ResNet-20 budget measured (0 to 0.3 points under it, DDPG 0.07 to 0.96) in
    seconds to minutes (benchmarks/RESULTS.md, issue 30). DDPG where the knapsack cannot serve: the
    accuracy-guaranteed rewards have no budget to allocate, and finalists need more than one candidate."""
    return "knapsack" if reward == "acc" and finalists == 1 else "ddpg"


def episodes_to_run(agent: str, episodes: int) -> int:
    """The episodes a search of `agent` plans: the uniform and knapsack agents are deterministic, so their one
    episode is the whole search."""
    return 1 if agent in ("uniform", "knapsack") else episodes


def default_warmup(episodes: int) -> int:
    """DDPG's warm-up episodes when --warmup is not given: a quarter of the search, at most 100."""
    return min(100, episodes // 4)


# the least value of each integer setting that the checks in __post_init__ do not already cover
MINIMUMS = {"seed": 0, "threads": 1, "warmup": 0, "heldout_limit": 1, "bn_recalibration": 0, "points_per_image": 1,
            "eval_batch_size": 1}


def check_agent_options(agent: str, options: dict) -> None:
    """--agent-option names the agent takes (an unknown one is refused with the valid names listed) and values
    it accepts (types as declared, DDPG's own bounds, a named anchor), all refused here, before any work,
    instead of minutes later when the agent is built."""
    from amc.agents import AGENTS, ANCHORS, DDPGConfig, option_types
    if agent not in AGENTS:
        return  # an unknown agent is refused by name
    declared = option_types(agent)
    unknown = sorted(set(options) - set(declared))
    if unknown:
        takes = f"it takes {', '.join(declared)}" if declared else "it takes none"
        raise ConfigError(f"bad --agent-option for {agent}: unknown setting {', '.join(unknown)}; {takes}")
    for name, value in options.items():
        kind = declared[name]
        if kind in KINDS and not fits(value, kind):
            raise ConfigError(f"bad --agent-option for {agent}: {name} must be {KINDS[kind]}, got {value!r}")
    if agent != "ddpg":
        return
    anchor = options.get("anchor")
    if isinstance(anchor, str) and anchor not in (*ANCHORS, "none"):
        raise ConfigError(f"bad --agent-option for ddpg: unknown anchor {anchor!r}; use one of "
                          f"{', '.join([*ANCHORS, 'none'])}, a ratio, or a list with one ratio per decision")
    try:  # the config's own bounds (noise_sigma_min <= noise_sigma, ...); a named anchor is resolved later
        DDPGConfig(**{k: v for k, v in options.items() if not (k == "anchor" and isinstance(v, str))})
    except (TypeError, ValueError) as e:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ConfigError(f"bad --agent-option for ddpg: {str(e).split(': DDPGConfig(')[0]}; given {given}") from None


# keys a settings file (`amc search --config`) may hold besides SearchConfig's fields, and their field: the
# options' own flags (keep_ratio for --keep-ratio, agent_option for --agent-option)
FILE_ALIASES = {key: f.name for f in search_options() for flag in f.metadata["flags"]
                if (key := flag.split("/")[0].lstrip("-").replace("-", "_")) != f.name}
FILE_ONLY = ("out",)  # the run directory: a command-line setting, not a search's


def read_settings_file(path) -> dict:
    """The settings in a TOML, JSON or YAML (PyYAML installed) file, for `amc search --config`: SearchConfig's
    field names (dashes or underscores; `keep_ratio` for `ratio`) and `out`, paths as on the command line. A
    run's config.json gives its "search" section (the rest, fingerprints and versions, is the run's record).
    An unknown key is one line listing the valid ones; values are checked as the options are."""
    from pathlib import Path

    path = Path(path)
    try:
        text = read_regular_bytes(path, "config file", "pass a TOML, JSON or YAML file to --config").decode()
    except FileNotFoundError:
        raise AmcError(f"config file not found: {path}; check the path given to --config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AmcError(f"cannot read config file {path} ({type(e).__name__}); pass a TOML, JSON or YAML file") \
            from None
    raw = _parse_settings(path, text)
    if isinstance(raw, dict) and isinstance(raw.get("search"), dict) and "versions" in raw:
        raw = raw["search"]  # a run's config.json: repeat its settings
    if not isinstance(raw, dict):
        raise AmcError(f"config file {path} must hold a table of settings (KEY = VALUE), not {type(raw).__name__}")
    valid = sorted({f.name for f in fields(SearchConfig)} | set(FILE_ALIASES) | set(FILE_ONLY))
    settings = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in valid:
            raise AmcError(f"unknown setting {key!r} in {path}; valid settings: {', '.join(valid)}")
        settings[FILE_ALIASES.get(name, name)] = value
    if settings.get("out") is not None and not isinstance(settings["out"], str):
        raise ConfigError(f"out in {path} must be a path (a string), got {settings['out']!r}; write it in quotes, "
                          "e.g. out = \"runs/r56\", or pass --out")
    return settings


def _parse_settings(path, text: str):
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib
            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise AmcError(f"{path} is YAML, which needs PyYAML (pip install pyyaml); or write it as TOML "
                               "or JSON") from None
            return yaml.safe_load(text)
        import json
        return json.loads(text)
    except AmcError:
        raise
    except Exception as e:  # noqa: BLE001 - each parser has its own error class; all mean the same here
        kind = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}.get(suffix, "JSON")
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AmcError(f"config file {path} is not valid {kind} ({first}); fix it or pass another --config") \
            from None


def __getattr__(name: str):
    """`DEFAULTS`, the defaults as a config, built when first asked: checking one imports torch."""
    if name == "DEFAULTS":
        globals()["DEFAULTS"] = SearchConfig()
        return globals()["DEFAULTS"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AGENT", "BUDGET", "DEFAULT_BUDGET", "DEFAULT_DATA", "DEFAULT_MODEL", "LBOUND_SHARE", "METHODS", "MODEL",
           "MODEL_BUDGETS", "PERFORMANCE", "PRUNING", "RUN", "THREADS_HELP", "SearchConfig", "check_agent_options",
           "default", "default_agent", "default_warmup", "episodes_to_run", "read_settings_file", "search_options",
           "setting"]
