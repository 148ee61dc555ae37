"""The methods peers.py compares, by name: a registry of what each one is, read by peers.py (how to run it), by
finetune_grid.py (which rows it fine-tunes) and by its report (the order of the tables).

A method is one of five kinds: a fixed allocation at the budget, torch-pruning's global pruning, NVIDIA
ModelOpt's FastNAS (an optional extra), a search through `amc.search`, or a peer that could not be run (its row
carries the reason). No torch here: the grid's report reads the registry on a machine that only tabulates.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar


@dataclass(frozen=True)
class FixedPolicy:
    """One allocation at the budget (`anchor`: an `amc.agents.ANCHORS` name: uniform, the paper's ramps
    "shallower" / "deeper", or the knapsack), played through the budget as an agent's answers are and pruned
    by our pruner (magnitude + least squares), with BN recalibration where `recalibrate`."""

    anchor: str
    recalibrate: bool = False
    seeded: ClassVar[bool] = False  # deterministic: one row, seed 0


@dataclass(frozen=True)
class TorchPruning:
    """torch-pruning's global pruning with `importance` ("magnitude" or "taylor"), as one of three `variant`s:
    "raw" (its own surgery), "lsq" (its kept channels, our least-squares reconstruction) or "counts" (its
    per-layer counts through our pruner). One run of an importance writes all three rows."""

    importance: str
    variant: str
    recalibrate: ClassVar[bool] = False
    seeded: ClassVar[bool] = False

    @property
    def family(self) -> str:
        return f"tp-{self.importance}"


@dataclass(frozen=True)
class FastNAS:
    """NVIDIA ModelOpt's FastNAS search at the budget, as one of three `variant`s: "raw" (its model as returned),
    "bn" (the same with BN statistics re-estimated) or "counts" (its per-layer counts through our pruner, with
    BN recalibration). One search writes all three rows."""

    variant: str
    seeded: ClassVar[bool] = False

    @property
    def recalibrate(self) -> bool:
        return self.variant != "raw"


@dataclass(frozen=True)
class Search:
    """`amc.search` with `agent` and its `agent_options` (`--agent-option`), BN recalibration where
    `recalibrate`, `finalists` > 1 for the finalist stage, `candidates_factor` times --candidates episodes."""

    agent: str
    recalibrate: bool = False
    agent_options: dict = field(default_factory=dict)
    finalists: int = 1
    candidates_factor: int = 1
    seeded: ClassVar[bool] = True  # one search per --seeds


@dataclass(frozen=True)
class NotRun:
    """A peer that could not be compared: its row is `reason` (`short_reason` in the table)."""

    reason: str
    short_reason: str
    recalibrate: ClassVar[bool] = False
    seeded: ClassVar[bool] = False


Method = FixedPolicy | TorchPruning | FastNAS | Search | NotRun

FASTNAS_CHECKPOINT = "fastnas_search.pth"  # FastNAS's own search state, beside the `fastnas` row: a killed run resumes
FASTNAS_INSTALL = "pip install nvidia-modelopt torchprofile==0.0.4 (or pip install -e '.[fastnas]')"

# What happened when NNI's AMC pruner was tried against torch 2.14.1 (in a separate venv).
NNI_REASON = (
    "not run: nni 3.0 (latest) has no AMC pruner (ModuleNotFoundError: No module named "
    "'nni.algorithms.compression'); nni 2.10.1's AMCPruner imports on torch 2.14.1 once tensorboard is "
    "installed but needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (it torch.load()s pickled models), then its "
    "ModelSpeedup fails on the option-A shortcut (RuntimeError: Has not supported replacing module with "
    "type: PadShortcut); with that module patched to no_replace it runs, but its 'total_sparsity' FLOPs "
    "target of 0.5 landed at 0.33 of ResNet-20's counted MACs (another accounting), so no comparable number")
NNI_SHORT = "not run: no AMC pruner in nni 3.0; nni 2.10.1 breaks on the padded shortcut (see note)"
NNCF_REASON = (
    "not run: NNCF 3.4 dropped structured filter pruning; nncf.prune offers only unstructured magnitude and "
    "regularisation modes (a share of parameters), so it is a peer of --method fine-grained (model size), not of "
    "a channel (MACs) budget; benchmarks/peer_nncf.py compares it with that mode")
NNCF_SHORT = "not run: NNCF 3.4 has no filter pruning, only unstructured (see note)"

_FIXED = {"uniform": FixedPolicy("uniform"), "deeper-more": FixedPolicy("deeper"),
          "shallower-more": FixedPolicy("shallower"), "knapsack": FixedPolicy("knapsack")}
_BUDGET_WARMUP = {"warmup_noise": "budget"}  # warm-up policies perturbed whole and fitted to the budget
_SHALLOWER_BUDGET = {"anchor": "shallower", **_BUDGET_WARMUP}
_DDPG_BN = Search("ddpg", recalibrate=True)

METHODS: dict[str, Method] = {
    **_FIXED,
    **{f"{name}+bn": replace(method, recalibrate=True) for name, method in _FIXED.items()},
    **{f"tp-{importance}{suffix}": TorchPruning(importance, variant)
       for importance in ("magnitude", "taylor") for suffix, variant in (("", "raw"), ("+lsq", "lsq"),
                                                                         ("-counts", "counts"))},
    **{f"fastnas{suffix}": FastNAS(variant) for suffix, variant in (("", "raw"), ("+bn", "bn"),
                                                                     ("-counts", "counts"))},
    "random": Search("random"),
    "tpe": Search("tpe"),
    "ddpg": Search("ddpg"),
    "ddpg+bn": _DDPG_BN,
    "tpe+bn": Search("tpe", recalibrate=True),  # the agent's share of ddpg+bn's lead, apart from the scorer's
    "ddpg+bn-shallower": replace(_DDPG_BN, agent_options={"anchor": "shallower"}),
    "ddpg+bn-knapsack": replace(_DDPG_BN, agent_options={"anchor": "knapsack"}),
    # exploration noise symmetric in the logit of the ratio
    "ddpg+bn-logit": replace(_DDPG_BN, agent_options={"noise_space": "logit"}),
    "ddpg+bn-budget": replace(_DDPG_BN, agent_options=_BUDGET_WARMUP),
    "ddpg+bn-shallower-budget": replace(_DDPG_BN, agent_options=_SHALLOWER_BUDGET),
    # the same search with the finalist stage (top 4), and searching twice the candidates: equal CPU time
    "ddpg+bn-shallower-budget-fin4": replace(_DDPG_BN, agent_options=_SHALLOWER_BUDGET, finalists=4),
    "ddpg+bn-shallower-budget-x2": replace(_DDPG_BN, agent_options=_SHALLOWER_BUDGET, candidates_factor=2),
    # learned-phase actions as multiples of the fair share of the remaining budget
    "ddpg+bn-uniform-budget-share": replace(_DDPG_BN, agent_options={"anchor": "uniform", **_BUDGET_WARMUP,
                                                                     "actions": "share"}),
    "ddpg+bn-shallower-budget-share": replace(_DDPG_BN, agent_options={**_SHALLOWER_BUDGET, "actions": "share"}),
    "nni-amc": NotRun(NNI_REASON, NNI_SHORT),
    "nncf-filter": NotRun(NNCF_REASON, NNCF_SHORT),
}


def names(kind: type, *, recalibrate: bool | None = None) -> tuple[str, ...]:
    """The registered methods of `kind` (with or without BN recalibration if given), in registry order."""
    return tuple(name for name, m in METHODS.items()
                 if isinstance(m, kind) and (recalibrate is None or m.recalibrate == recalibrate))


def without_finalists(name: str) -> str | None:
    """The registered method that is `name`'s search without the finalist stage (None if there is none)."""
    method = METHODS[name]
    if not isinstance(method, Search) or method.finalists == 1:
        return None
    plain = replace(method, finalists=1)
    return next((other for other, m in METHODS.items() if m == plain), None)


# torch-pruning's best variant (its channels, our reconstruction): it stands for torch-pruning in the grid
TORCH_PRUNING_BEST = "tp-magnitude+lsq"
