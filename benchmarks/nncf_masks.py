"""NNCF's unstructured magnitude pruning (`nncf.prune`) turned into plain masks, at an exact count of kept weights.

`nncf.prune` wraps the model in place and leaves every weight as it was: each pruned tensor gets a post-hook
(`UnstructuredPruningMask`, a bool buffer `binary_mask`) that multiplies the weight by its mask on every forward.
Here the masks are read out of a wrapped copy, as {module name: bool tensor}, for a plain model whose weights hold
the zeros themselves. NNCF prunes the weights of conv and linear layers (no biases, no norms), the same tensors
amc's fine-grained decisions cover; its `ratio` is the share of those weights it *removes*:

- local: every tensor of n weights loses `int((n - 1) * ratio) + 1` (the weights at or under the k-th smallest
  magnitude), so one ratio cannot hit every total count; `local_ratio` picks the one keeping the most weights at
  or under the target.
- global: one threshold over all tensors' magnitudes, each divided by its tensor's L2 norm (so not plain global
  magnitude), removing `int((n - 1) * ratio) + 1` of all n weights; `global_ratio` hits a count exactly, barring
  ties at the threshold.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from amc.errors import AmcError

NNCF_INSTALL = "pip install nncf (or pip install -e '.[nncf]')"
MODES = ("global", "local")


def require_nncf() -> None:
    """Import NNCF's pruning, or raise a one-line AmcError naming the install line."""
    try:
        import nncf
        nncf.prune  # noqa: B018 - NNCF before 3.x has no nncf.prune
    except (ImportError, AttributeError) as e:
        raise AmcError(f"the nncf methods need NNCF >= 3.4 with nncf.prune ({e}): {NNCF_INSTALL}") from None


def _removed(numel: int, ratio: float) -> int:
    """Weights NNCF removes from `numel` at `ratio` (its own arithmetic: the k-th smallest and all under it)."""
    return int((numel - 1) * ratio) + 1


def global_ratio(total: int, keep: int) -> float:
    """The global-mode ratio that keeps exactly `keep` of `total` weights (ties at the threshold aside)."""
    if not 0 <= keep < total:
        raise ValueError(f"NNCF removes at least one weight: cannot keep {keep} of {total}")
    return (total - keep - 0.5) / (total - 1)  # (total - 1) * ratio lands half-way between two integers


def local_kept(sizes: Sequence[int], ratio: float) -> int:
    """Weights local mode keeps of tensors of `sizes` at `ratio`."""
    return sum(n - _removed(n, ratio) for n in sizes)


def local_ratio(sizes: Sequence[int], keep: int) -> float:
    """The smallest local-mode ratio keeping at most `keep` weights (bisection: the count falls with the ratio)."""
    low, high = 0.0, 1.0
    if local_kept(sizes, low) <= keep:
        return low
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (low, middle) if local_kept(sizes, middle) <= keep else (middle, high)
    return high


def nncf_masks(model: nn.Module, mode: str, ratio: float, example: torch.Tensor) -> dict[str, torch.Tensor]:
    """NNCF's masks for `model` at `ratio` ({module name: bool tensor shaped like its weight}), from a wrapped
    copy traced on `example` (one input batch); `model` is left untouched. Checked: the wrapped copy and the
    original with the masks multiplied in give the same logits on a random batch."""
    import nncf
    from nncf.torch.function_hook.pruning.magnitude.algo import get_pruned_modules

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    wrapped = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    nncf_mode = (nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL if mode == "global"
                 else nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_LOCAL)
    wrapped = nncf.prune(wrapped, mode=nncf_mode, ratio=ratio, examples_inputs=example)
    masks = {}
    for tensor, hook in get_pruned_modules(wrapped).items():
        if not tensor.endswith(".weight"):
            raise AssertionError(f"NNCF masked {tensor}, not a module's weight")
        masks[tensor.removesuffix(".weight")] = hook.binary_mask.detach().clone().cpu()
    plain = apply_masks(model, masks)
    probe = torch.randn(2, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.allclose(wrapped(probe), plain.eval()(probe), atol=1e-5, rtol=1e-4):
            raise AssertionError("NNCF's wrapped model and its masks applied to a plain copy disagree")
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """A plain copy of `model` with each masked weight's pruned entries set to zero."""
    pruned = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    modules = dict(pruned.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name].weight.mul_(mask.to(modules[name].weight.device))
    return pruned
