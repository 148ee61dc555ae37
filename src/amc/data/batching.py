"""Normalized (and optionally augmented) float batches from a uint8 split, vectorized per batch."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from amc.data.splits import Split
from amc.errors import DataError


def batches(split: Split, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
            shuffle: bool = False, augment: bool = False, generator: torch.Generator | None = None,
            hflip: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float32 [B, C, H, W] normalized images, int64 [B] labels); the last batch may be short.

    Pixels go uint8 -> /255 -> (x - mean) / std, per channel. `augment` takes a random crop after zero
    padding of H//8 rows and W//8 columns (4 for 32x32, 1 for 8x8) and, if `hflip` (default:
    `split.hflip`), a random horizontal flip, each drawn per sample. `generator` drives the shuffle
    and the augmentation (the global RNG when None).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}; pass a positive batch size")
    check_normalization(split, mean, std)
    scale, shift = normalization(mean, std)
    flip = split.hflip if hflip is None else hflip
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            x, y = split.x[index], split.y[index]
        if augment:
            x = _crop_and_flip(x, flip, generator)
        yield x.float().mul_(scale).sub_(shift), y


def check_normalization(split: Split, mean: Sequence[float], std: Sequence[float]) -> None:
    """One mean and one positive std per channel of the split's images, or a one-line DataError."""
    channels = split.x.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise DataError(f"mean/std have {len(mean)}/{len(std)} values but the images have {channels} "
                        "channel(s); use a model made for this dataset")
    if any(s <= 0 for s in std):
        raise DataError(f"std must be positive, got {tuple(std)}; check the model's normalization")


def normalization(mean: Sequence[float], std: Sequence[float],
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) [1, C, 1, 1] such that `x.float().mul_(scale).sub_(shift)` is (x/255 - mean)/std of uint8
    pixels: one multiply-subtract per element, the same arithmetic wherever the pixels are normalised."""
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
    shift = (torch.tensor(mean, dtype=torch.float32, device=device) / std_t).view(1, -1, 1, 1)
    return scale, shift


class NormalizedImages:
    """uint8 images [N, C, H, W] that read as normalised float: `images[a:b]` is (x/255 - mean)/std of that slice,
    computed on the spot where the pixels are. What a search keeps its calibration images as: 3,000 at 224 px are
    0.45 GB, not 1.8 GB as floats, on whichever device they live. Indexable by slices only."""

    def __init__(self, pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]):
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise DataError(f"images must be uint8 [N, C, H, W], got {pixels.dtype} {list(pixels.shape)}")
        self.pixels, self.mean, self.std = pixels, tuple(mean), tuple(std)
        self._scale, self._shift = normalization(mean, std, pixels.device)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: slice) -> torch.Tensor:
        if not isinstance(index, slice):
            raise TypeError("NormalizedImages are read by slices, e.g. images[0:100]")
        return self.pixels[index].float().mul_(self._scale).sub_(self._shift)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    @property
    def shape(self) -> torch.Size:
        return self.pixels.shape

    def to(self, device: torch.device | str) -> NormalizedImages:
        return self if torch.device(device) == self.device else \
            NormalizedImages(self.pixels.to(device), self.mean, self.std)

    def __getstate__(self) -> dict:  # a Ray payload: the pixels and the constants, normalisation rebuilt on arrival
        return {"pixels": self.pixels, "mean": self.mean, "std": self.std}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["pixels"], state["mean"], state["std"])


def _crop_and_flip(x: torch.Tensor, hflip: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Random padded crop and optional mirror of each image in uint8 [B, C, H, W], in one gather."""
    b, c, h, w = x.shape
    pad_h, pad_w = h // 8, w // 8
    # Padding in uint8 before normalizing makes the border black, as torchvision's RandomCrop does.
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
    top = torch.randint(0, 2 * pad_h + 1, (b, 1), generator=generator)
    left = torch.randint(0, 2 * pad_w + 1, (b, 1), generator=generator)
    rows = top + torch.arange(h)                                   # [B, H]
    cols = left + torch.arange(w)                                  # [B, W]
    if hflip:
        mirrored = torch.rand(b, 1, generator=generator) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    return padded[torch.arange(b).view(b, 1, 1, 1), torch.arange(c).view(1, c, 1, 1),
                  rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
