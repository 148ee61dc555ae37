"""Channel selection and least-squares weight reconstruction on precomputed Gram statistics."""

from __future__ import annotations

import torch

from amc.pruning.features import LayerStats


def magnitude_ranking(*weights: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Input channels of conv [O, C, kh, kw] / linear [O, C] weights, most important (largest Lp norm) first.

    Several weights (the consumers of one coupled group) add their norms, each scaled to mean 1.
    """
    importance = 0
    for weight in weights:
        rows = weight.detach().transpose(0, 1).reshape(weight.shape[1], -1)
        norm = rows.abs().sum(1) if p == 1 else torch.linalg.vector_norm(rows, ord=p, dim=1)
        importance = importance + (norm / norm.mean().clamp_min(1e-12) if len(weights) > 1 else norm)
    # stable sort so that ties resolve the same way on every run
    return torch.sort(importance, descending=True, stable=True).indices


def _columns(channels: torch.Tensor, area: int) -> torch.Tensor:
    """Columns of the unfolded input that belong to `channels` (unfold is channel-major)."""
    return (channels.unsqueeze(1) * area + torch.arange(area, device=channels.device)).reshape(-1)


def least_squares(stats: LayerStats, keep: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """Weights W [O, len(keep) * area] minimising |X_keep W^T - Y|^2 + ridge-scaled |W|^2.

    Solves only the kept sub-block of the precomputed Gram matrix, so it costs O(D^3) in the kept
    size instead of a pass over the features. The ridge is relative to the mean diagonal.
    """
    cols = _columns(keep, stats.kernel_area)
    gram = stats.gram[cols][:, cols]
    damp = ridge * gram.diagonal().mean().clamp_min(1e-12)
    gram = gram + damp * torch.eye(len(cols), dtype=gram.dtype, device=gram.device)
    solution = torch.linalg.solve(gram, stats.cross[cols])          # [D_keep, O]
    return solution.T.float()


def reconstruction_error(stats: LayerStats, keep: torch.Tensor, weight: torch.Tensor) -> float:
    """Relative squared error |X_keep W^T - Y|^2 / |Y|^2 of `weight` [O, D_keep] from the statistics alone."""
    cols = _columns(keep, stats.kernel_area)
    w = weight.detach().double().T                                           # [D_keep, O]
    gram = stats.gram[cols][:, cols]
    cross = stats.cross[cols]
    err = stats.y_energy - 2 * float((w * cross).sum()) + float((w * (gram @ w)).sum())
    return err / max(stats.y_energy, 1e-12)


def greedy_ranking(stats: LayerStats, ridge: float = 1e-4) -> torch.Tensor:
    """Input channels ordered by backward elimination on the reconstruction error (least useful last).

    Starting from all channels, repeatedly drop the channel whose removal raises the least-squares
    error least, using the block-downdate of the inverse Gram matrix (no re-solve per candidate).
    The returned order is most important first, so every keep count reads a prefix.
    """
    area = stats.kernel_area
    channels = stats.gram.shape[0] // area
    damp = ridge * stats.gram.diagonal().mean().clamp_min(1e-12)
    device = stats.gram.device
    inverse = torch.linalg.inv(stats.gram + damp * torch.eye(stats.gram.shape[0], dtype=stats.gram.dtype,
                                                              device=device))
    weights = inverse @ stats.cross                                  # [D, O] full least-squares solution
    alive = list(range(channels))
    removed: list[int] = []
    while len(alive) > 1:
        n = len(alive)
        blocks = torch.arange(n * area, device=device).reshape(n, area)
        s = inverse[blocks.unsqueeze(2), blocks.unsqueeze(1)]        # [n, area, area] diagonal blocks
        w = weights[blocks]                                          # [n, area, O]
        increase = (w * torch.linalg.solve(s, w)).sum((1, 2))         # error added by dropping each channel
        worst = int(torch.argmin(increase))
        b = blocks[worst]
        correction = inverse[:, b] @ torch.linalg.inv(s[worst])      # [D, area]
        weights = weights - correction @ weights[b]
        inverse = inverse - correction @ inverse[b]
        keep_cols = torch.cat([blocks[:worst].reshape(-1), blocks[worst + 1:].reshape(-1)])
        inverse = inverse[keep_cols][:, keep_cols]
        weights = weights[keep_cols]
        removed.append(alive.pop(worst))
    return torch.tensor(alive + removed[::-1], dtype=torch.long, device=device)
