"""In-memory splits and the seeded per-class carving that makes held-out sets reproducible."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from amc.errors import DataError


@dataclass(eq=False)
class Split:
    """Images as a uint8 NCHW tensor `x` [N, C, H, W] and int64 labels `y` [N], kept in memory.

    `hflip` says whether horizontal flips are a valid augmentation (False for digits, whose mirror
    images are other symbols). `indices` [N] are the images' positions in the source array they were
    carved from (the original training or test set), or None when unknown.
    """

    x: torch.Tensor
    y: torch.Tensor
    hflip: bool = True
    indices: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise DataError(f"Split.x must be a uint8 [N, C, H, W] tensor, got {self.x.dtype} "
                            f"{list(self.x.shape)}; convert images to uint8 NCHW")
        if self.y.dtype != torch.int64 or self.y.dim() != 1 or len(self.y) != len(self.x):
            raise DataError(f"Split.y must be an int64 [N] tensor with N={len(self.x)}, got {self.y.dtype} "
                            f"{list(self.y.shape)}; pass one int64 label per image")
        if self.indices is not None and self.indices.shape != self.y.shape:
            raise DataError(f"Split.indices must have shape [{len(self.y)}], got {list(self.indices.shape)}; "
                            "pass one index per image or None")

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        # The dataclass default would print tensor contents.
        return f"Split(n={len(self)}, image_shape={tuple(self.x.shape[1:])}, hflip={self.hflip})"

    def subset(self, index: torch.Tensor | Sequence[int]) -> Split:
        """The images at `index` (positions in this split), keeping `hflip` and source indices."""
        index = torch.as_tensor(index, dtype=torch.int64)
        source = None if self.indices is None else self.indices[index]
        return Split(self.x[index], self.y[index], self.hflip, source)


@dataclass(eq=False)
class Dataset:
    """A dataset's three disjoint splits and its metadata.

    `train` excludes `heldout`; `heldout` is carved from the original training set and is what
    searches score on; `test` is only for final reports. `input_shape` is (C, H, W). `load_stats` says how
    decoded images were loaded (imagefolder): {"images", "bytes" (uint8, all splits), "seconds" (decoding, or
    reading amc's cache), "cached"}; None where nothing was decoded.
    """

    name: str
    train: Split
    heldout: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: list[str]
    load_stats: dict | None = None

    @property
    def nbytes(self) -> int:
        """The bytes the three splits' images hold in memory (the labels add 8 per image)."""
        return sum(split.x.nbytes for split in (self.train, self.heldout, self.test))

    def calibration_indices(self, n: int, seed: int) -> torch.Tensor:
        """`n` distinct int64 indices into `train` (never held-out), the same for the same seed.

        Returned in random order, not sorted: sources stored by class (the CIFAR npz) would otherwise
        give a calibration prefix of a single class.
        """
        if not 1 <= n <= len(self.train):
            raise DataError(f"cannot pick {n} calibration images from {len(self.train)} training images; "
                            f"ask for between 1 and {len(self.train)}")
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(len(self.train), generator=generator)[:n]


def pick_per_class(labels: np.ndarray, per_class: int | Sequence[int], num_classes: int,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """For each class c, `per_class` (or `per_class[c]`) random positions of label c, sorted.

    Draws exactly one `rng.permutation` per class in class order, so the same seed reproduces the
    held-out file shipped with the shared CIFAR-10 data (heldout_idx_seed0.npy).
    """
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        k = per_class if isinstance(per_class, int) else per_class[c]
        picked.append(np.sort(idx[rng.permutation(len(idx))[:k]]))
    return picked


def carve_heldout(labels: np.ndarray, per_class: int, seed: int,
                  class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Split positions of `labels` into (train, held-out) with `per_class` held-out images per class.

    Train keeps the original order. Held-out is interleaved by class (one image of each class, then
    the next, ...) so that any prefix, as used by `heldout_limit`, is class-balanced; its sorted
    positions are exactly `np.sort(np.concatenate(pick_per_class(...)))`.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 0:
        raise DataError(f"heldout_per_class must be a non-negative integer, got {per_class!r}; pass e.g. 50")
    per_class = int(per_class)
    counts = np.bincount(labels, minlength=len(class_names))
    if per_class > 0 and per_class >= counts.min():
        c = int(counts.argmin())
        raise DataError(f"heldout_per_class={per_class} leaves no training images for class "
                        f"{class_names[c]!r} ({counts[c]} images); pass heldout_per_class below {counts[c]}")
    picked = pick_per_class(labels, per_class, len(class_names), np.random.default_rng(seed))
    heldout = np.stack(picked, axis=1).reshape(-1) if per_class else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(labels), dtype=bool)
    keep[heldout] = False
    return np.flatnonzero(keep), heldout


def fingerprint(split: Split) -> str:
    """First 16 hex digits of the sha256 of the split's shapes, image bytes and label bytes."""
    digest = hashlib.sha256(f"{tuple(split.x.shape)}|{tuple(split.y.shape)}".encode())
    # Hash the buffers directly: a .tobytes() copy of 150 MB of CIFAR would double peak memory.
    digest.update(split.x.contiguous().numpy().data)
    digest.update(split.y.contiguous().numpy().data)
    return digest.hexdigest()[:16]
