"""`SearchConfig`: every setting of a search, validated once, and the one source of the CLI's defaults.

What the settings imply is derived here too (the environment's `EnvConfig`, the DDPG warm-up, whether
candidates are raced, how many episodes run), so no other module re-derives it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from amc.agents import AGENTS
from amc.blocks import DROP_SHARE
from amc.env import EnvConfig
from amc.errors import AmcError, ConfigError
from amc.evaluate import PRECISIONS
from amc.latency.backends import BACKENDS
from amc.pruning.channel import SELECTIONS
from amc.safe_open import read_regular_bytes
from amc.threads import check_threads

DEFAULT_MODEL, DEFAULT_DATA = "digits_cnn", "digits"
METHODS = ("channel", "fine-grained")
# the budget (ratio, lbound) where none is given: half the cost, except for the embedded digits CNN, whose
# default run must show what a search buys: at 50% every policy scores alike there, at 5% MACs (lbound 0.05) the
# searched policy beats uniform by 6-7 test points (benchmarks/RESULTS.md, issue 20)
DEFAULT_BUDGET = (0.5, 0.2)
MODEL_BUDGETS = {DEFAULT_MODEL: (0.05, 0.05)}


@dataclass
class SearchConfig:
    """Everything that determines a search; written to config.json and used to resume it."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    data: str = DEFAULT_DATA
    data_dir: str | None = None
    download: bool = False
    target: str = "macs"
    ratio: float | None = None           # share of the cost kept; None: DEFAULT_BUDGET or the model's own
    lbound: float | None = None          # smallest share kept of any layer; None: as `ratio`
    channel_round: int = 1
    group_coupled: bool = False          # also prune residual-coupled channel groups, one decision each
    drop_blocks: bool = False            # a residual block's decision may remove the whole block (amc.blocks)
    drop_share: float = DROP_SHARE       # at most this share of each stage's blocks may be dropped
    reward: str = "acc"
    agent: str = "ddpg"
    episodes: int = 300
    warmup: int | None = None            # DDPG warm-up episodes; default min(100, episodes // 4)
    agent_options: dict = field(default_factory=dict)  # extra agent settings, e.g. {"noise_sigma_min": 0.1}
    seed: int = 0
    calibration_images: int = 3000
    points_per_image: int = 10
    selection: str = "magnitude"         # "magnitude" or "greedy" (reconstruction-aware)
    reconstruct: bool = True             # least-squares reconstruction of each pruned layer
    bn_recalibration: int = 2            # batches of 100 calibration images to re-estimate BN statistics on
                                         # before scoring (0 = off); on by default: +10 points before
                                         # fine-tuning, ranking kept (benchmarks/RESULTS.md, issue 5)
    heldout_limit: int | None = None     # score on the first N held-out images only
    racing: bool | None = None           # stop scoring a candidate early once it cannot plausibly be the best;
                                         # None: wherever it applies (--reward acc), see `races`
    eval_batch_size: int = 100
    precision: str = "fp32"              # scoring precision of candidates: "fp32" or "bf16" (faster)
    threads: int | None = None
    method: str = "channel"              # "channel" (structured) or "fine-grained" (weights, for model size)
    workers: int = 1                     # > 1: score episodes in parallel on Ray actors
    ray_address: str | None = None       # an existing Ray cluster (default: start a local one)
    latency_backend: str = "torch"       # target latency: the runtime it is measured on (torch, onnxruntime)
    latency_threads: int = 1             # ... with this many threads
    latency_batch: int = 1               # ... at this batch size
    tensorboard: bool = False            # also log every episode for TensorBoard (RUN_DIR/tensorboard)
    finalists: int = 1                   # > 1: the top-K distinct candidates get short fine-tunes (successive
                                         # halving) and the winner is exported (amc.finalists); 1 = off
    finalist_steps: int = 100            # SGD steps per finalist per round of that stage

    def __post_init__(self) -> None:
        budget = MODEL_BUDGETS.get(self.model, DEFAULT_BUDGET) if isinstance(self.model, str) else DEFAULT_BUDGET
        if self.ratio is None:
            self.ratio = budget[0]
        if self.lbound is None:
            self.lbound = budget[1]
        check_fields(self, MINIMUMS)  # types, finite numbers and lower bounds, for the CLI and the API alike
        check_threads(self.threads)
        check_threads(self.latency_threads, "--latency-threads")
        self.env_config  # validates target, ratio, lbound, channel_round and reward
        if self.episodes < 1:
            raise AmcError(f"--episodes must be at least 1, got {self.episodes}")
        if self.calibration_images < 1:
            raise AmcError("--calibration-images must be at least 1")
        if self.precision not in PRECISIONS:
            raise AmcError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.selection not in SELECTIONS:
            raise AmcError(f"--selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.method not in METHODS:
            raise AmcError(f"--method must be channel or fine-grained, got {self.method!r}")
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
        if self.workers > 1 and self.method == "fine-grained":
            raise AmcError("--workers > 1 supports channel pruning only; drop --workers for fine-grained")
        if self.latency_backend not in BACKENDS:
            raise AmcError(f"--latency-backend must be one of {', '.join(BACKENDS)}, got {self.latency_backend!r}")
        if self.latency_threads < 1 or self.latency_batch < 1:
            raise AmcError("--latency-threads and the latency batch must be at least 1")
        if self.racing and self.reward != "acc":
            raise AmcError("--racing stops candidates that cannot beat the best accuracy, which is the reward only "
                           "with --reward acc; drop --racing for the accuracy-guaranteed rewards")
        if self.agent not in AGENTS:  # the registry itself: an agent added to it is valid here at once
            raise AmcError(f"--agent must be one of {', '.join(AGENTS)}, got {self.agent!r}")

    @property
    def env_config(self) -> EnvConfig:
        """The environment these settings imply (budget target and ratio, lower bound, rounding, reward)."""
        return EnvConfig(self.target, self.ratio, self.lbound, self.channel_round, self.reward, self.drop_blocks,
                         self.drop_share)

    @property
    def races(self) -> bool:
        """Whether candidates are raced: as asked, else by default wherever racing applies. On by default
        because it kept the best and found better policies in the same episodes (benchmarks/RESULTS.md)."""
        return self.racing if self.racing is not None else self.reward == "acc"

    @property
    def warmup_episodes(self) -> int:
        return self.warmup if self.warmup is not None else min(100, self.episodes // 4)

    @property
    def episodes_to_run(self) -> int:
        """The uniform and knapsack agents are deterministic: their one episode is the whole search."""
        return 1 if self.agent in ("uniform", "knapsack") else self.episodes

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
        """One validated config from `config` (or the defaults) with keyword `options` replacing its fields."""
        try:
            # without a config, the defaults that depend on the model (the budget) follow the model given
            return cls(**{**(asdict(config) if config else {}), **options})
        except TypeError as e:
            raise AmcError(f"unknown search setting: {e}") from None


# the least value of each integer setting that the checks in __post_init__ do not already cover
MINIMUMS = {"seed": 0, "threads": 1, "warmup": 0, "heldout_limit": 1, "bn_recalibration": 0, "points_per_image": 1,
            "eval_batch_size": 1}
KINDS = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string",
         "dict": "a dict"}


def check_fields(config, minimums: dict, positive: tuple[str, ...] = ()) -> None:
    """Refuse a setting of the wrong type (`episodes=2.5`, a list for a dict), a non-finite number, a number
    below its minimum or not above 0 (`positive`), naming the option; for the search's and training's configs."""
    for f in fields(config):
        value, kind = getattr(config, f.name), str(f.type).split(" |")[0]
        if value is None and "None" in str(f.type):
            continue
        option = "--" + f.name.replace("_", "-")
        if not _fits(value, kind):
            raise ConfigError(f"{option} must be {KINDS[kind]}, got {value!r}")
        if f.name in minimums and value < minimums[f.name]:
            raise ConfigError(f"{option} must be at least {minimums[f.name]}, got {value}")
        if f.name in positive and value <= 0:
            raise ConfigError(f"{option} must be above 0, got {value}")
    if getattr(config, "agent_options", None):
        check_agent_options(config.agent, config.agent_options)


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
        if kind in KINDS and not _fits(value, kind):
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


def _fits(value, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return not (kind in KINDS and not isinstance(value, {"bool": bool, "str": str, "dict": dict}[kind]))



# keys a settings file (`amc search --config`) may hold besides SearchConfig's fields, and their field
FILE_ALIASES = {"keep_ratio": "ratio", "agent_option": "agent_options"}
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


DEFAULTS = SearchConfig()  # what the CLI shows and uses where an option is not given

__all__ = ["DEFAULTS", "DEFAULT_BUDGET", "DEFAULT_DATA", "DEFAULT_MODEL", "MODEL_BUDGETS", "SearchConfig",
           "read_settings_file"]
