"""Loaders for the supported datasets, each returning a `Dataset` with a seeded held-out split.

Everything is validated here, at the edge: a bad path, layout or array gives a one-line `DataError`.
"""

from __future__ import annotations

import math
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from amc.cache import make_cache_dir
from amc.data.image_cache import image_key, read_images, write_images
from amc.data.splits import Dataset, Split, carve_heldout, pick_per_class
from amc.errors import DataError
from amc.safe_open import REGULAR, NotAFileError, check_regular_file, file_kind, open_regular

DATASETS = ("digits", "cifar10", "imagefolder")

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_FOLDER = "cifar-10-batches-py"       # the folder name torchvision's reader insists on
NPZ_KEYS = ("train_x", "train_y", "test_x", "test_y")
CIFAR10_FILES = ("batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch")

DIGITS_HELDOUT_PER_CLASS = 30
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 0      # the test split never moves with `seed`, so no seed can train on another's test images
CIFAR10_HELDOUT_PER_CLASS = 500
IMAGEFOLDER_SIZE = 224
RESIZE_RATIO = 1.14       # shorter side resized to size * 1.14 before the centre crop (256 for 224)
INTERPOLATION = "bilinear"
MAX_MEMORY_GB = 16.0      # imagefolder: decoded images held in memory, all splits, in GiB


def load_dataset(name: str, data_dir: str | Path | None = None, *, heldout_per_class: int | None = None,
                 seed: int = 0, download: bool = False, image_size: int | None = None, cache: bool = True,
                 max_memory_gb: float = MAX_MEMORY_GB) -> Dataset:
    """Load a dataset by name (see `DATASETS`) into memory, with train / held-out / test splits.

    `heldout_per_class` images of every class are carved from the training set by `seed` (defaults:
    digits 30, cifar10 500, imagefolder min(50, 10% of the smallest class)); train keeps the rest in
    the original order. `data_dir`: cifar10 takes an .npz (train_x/test_x uint8 [N, H, W, 3],
    train_y/test_y) or the folder holding `cifar-10-batches-py`; imagefolder takes a root with
    `train/` and `val/` class folders. `download` fetches CIFAR-10 (into `data_dir`, else amc's cache:
    $AMC_CACHE_DIR/data or ~/.cache/amc/data).
    `image_size` is the imagefolder crop side in pixels (default 224).

    imagefolder only: the decoded images are kept in amc's cache directory (`amc.data.image_cache`) and read
    back from there while no image changes; `cache=False` decodes and writes nothing (refused for the other
    datasets, which have nothing to decode). A folder whose decoded images would exceed `max_memory_gb` GiB
    is refused before decoding (the other datasets ignore it: their arrays are read as stored). The dataset's
    `load_stats` says how long decoding or reading the cache took and how many bytes the images hold.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not cache and key != "imagefolder":
        raise DataError(f"cache=False applies only to imagefolder ({key} decodes no images to cache); drop it")
    path = None if data_dir is None else Path(data_dir).expanduser()
    if key == "digits":
        if path is not None:
            raise DataError("digits ships with scikit-learn and reads no files; drop --data-dir")
        dataset = _load_digits(seed, DIGITS_HELDOUT_PER_CLASS if heldout_per_class is None else heldout_per_class)
    elif key == "cifar10":
        dataset = _load_cifar10(path, download, seed, heldout_per_class)
    else:
        if download:
            raise DataError("imagefolder cannot be downloaded; drop --download and pass --data-dir with "
                            "train/ and val/")
        dataset = _load_imagefolder(path, IMAGEFOLDER_SIZE if image_size is None else image_size, seed,
                                    heldout_per_class, cache, max_memory_gb)
    if image_size is not None and image_size != dataset.input_shape[1]:
        raise DataError(f"image_size={image_size} applies only to imagefolder ({key} images are "
                        f"{dataset.input_shape[1]}x{dataset.input_shape[2]}); drop image_size")
    return dataset


def _assemble(name: str, train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray,
              class_names: list[str], per_class: int, seed: int, hflip: bool,
              test_indices: np.ndarray | None = None, train_indices: np.ndarray | None = None,
              load_stats: dict | None = None) -> Dataset:
    """Carve held-out from the (already validated) training arrays and wrap everything in a `Dataset`.

    `train_indices` / `test_indices` map rows to positions in a larger source (digits), if any.
    """
    train_pos, heldout_pos = carve_heldout(train_y, per_class, seed, class_names)
    train_source = np.arange(len(train_y)) if train_indices is None else train_indices
    test_source = np.arange(len(test_y)) if test_indices is None else test_indices
    labels = torch.from_numpy(train_y.astype(np.int64))

    def part(positions: np.ndarray) -> Split:
        index = torch.from_numpy(positions.astype(np.int64))
        return Split(train_x[index], labels[index], hflip, torch.from_numpy(train_source[positions].astype(np.int64)))

    test = Split(test_x, torch.from_numpy(test_y.astype(np.int64)), hflip,
                 torch.from_numpy(test_source.astype(np.int64)))
    return Dataset(name, part(train_pos), part(heldout_pos), test, len(class_names),
                   tuple(train_x.shape[1:]), list(class_names), load_stats)


def _open(path: str | Path, what: str, fix: str) -> BinaryIO:
    """A data file opened to read; a FIFO or device in its place is a DataError (reading it would never end)."""
    try:
        return open_regular(path, what, fix)
    except NotAFileError as e:
        raise DataError(str(e)) from None


# digits ---------------------------------------------------------------------------------------------------------

def _load_digits(seed: int, per_class: int) -> Dataset:
    """scikit-learn's 1,797 8x8 digits; 20% stratified test (fixed), held-out by `seed`, train the rest."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Values are 0..16; spread them over the uint8 range like any other image.
    x = torch.from_numpy(np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
    y = bunch.target.astype(np.int64)
    counts = np.bincount(y, minlength=10)
    test_counts = [int(round(DIGITS_TEST_FRACTION * n)) for n in counts]
    test_pos = np.sort(np.concatenate(pick_per_class(y, test_counts, 10, np.random.default_rng(DIGITS_TEST_SEED))))
    pool = np.setdiff1d(np.arange(len(y)), test_pos)
    return _assemble("digits", x[torch.from_numpy(pool)], y[pool], x[torch.from_numpy(test_pos)], y[test_pos],
                     [str(d) for d in range(10)], per_class, seed, hflip=False, test_indices=test_pos,
                     train_indices=pool)


# cifar10 --------------------------------------------------------------------------------------------------------

def _load_cifar10(path: Path | None, download: bool, seed: int, heldout_per_class: int | None) -> Dataset:
    """CIFAR-10 from an .npz of HWC arrays or torchvision's python folder (optionally downloaded)."""
    if path is None:
        if not download:
            raise DataError("cifar10 needs its data: pass --data-dir with the .npz or the CIFAR-10 python folder, "
                            "or --download")
        path = make_cache_dir("data")
    kind = file_kind(path)
    if kind not in (None, REGULAR, "a directory"):
        raise DataError(f"{path} is {kind}, not a data file or folder; pass the CIFAR-10 .npz or python folder")
    if kind == REGULAR:
        if path.suffix != ".npz":
            raise DataError(f"{path}: expected a .npz file or a CIFAR-10 python folder, got a {path.suffix or 'no'}"
                            " extension; pass the .npz or the folder holding cifar-10-batches-py")
        arrays = _read_npz(path)
    elif kind == "a directory" or download:
        arrays = _read_cifar_folder(path, download)
    else:
        raise DataError(f"{path} does not exist; pass the CIFAR-10 .npz or python folder, or --download")
    train_x, train_y, test_x, test_y = _check_arrays(str(path), arrays, 10)
    per_class = CIFAR10_HELDOUT_PER_CLASS if heldout_per_class is None else heldout_per_class
    return _assemble("cifar10", train_x, train_y, test_x, test_y, CIFAR10_CLASSES, per_class, seed, hflip=True)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with _open(path, "data file", "pass the .npz") as f, np.load(f, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path} is missing keys {', '.join(missing)}; it needs {', '.join(NPZ_KEYS)}")
            return {k: npz[k] for k in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as .npz ({type(e).__name__}); pass an npz written by numpy.savez "
                        "with plain (non-object) arrays") from None


def _read_cifar_folder(path: Path, download: bool) -> dict[str, np.ndarray]:
    from torchvision.datasets import CIFAR10

    # torchvision wants the folder *containing* cifar-10-batches-py; accept either.
    root = path.parent if path.name == CIFAR10_FOLDER else path
    if not download and not (root / CIFAR10_FOLDER).is_dir():
        raise DataError(f"{path}: not a CIFAR-10 folder (no {CIFAR10_FOLDER}/ inside); pass the .npz, the folder "
                        f"holding {CIFAR10_FOLDER}, or --download")
    for name in CIFAR10_FILES:  # torchvision opens them blindly: a FIFO among them would hang it
        try:
            check_regular_file(root / CIFAR10_FOLDER / name, "CIFAR-10 file", "re-download it with --download or "
                               "pass the .npz")
        except NotAFileError as e:
            raise DataError(str(e)) from None
    arrays = {}
    for train in (True, False):
        try:
            # Only the first construction downloads; the second finds the files in place.
            data = CIFAR10(str(root), train=train, download=download and train)
        except (RuntimeError, OSError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"cannot read CIFAR-10 from {root / CIFAR10_FOLDER} ({reason}); "
                            "re-download it with --download or pass the .npz") from None
        split = "train" if train else "test"
        arrays[f"{split}_x"], arrays[f"{split}_y"] = data.data, np.asarray(data.targets)
    return arrays


def _check_arrays(source: str, arrays: dict[str, np.ndarray],
                  num_classes: int) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Validate HWC uint8 images and integer labels; return (train_x NCHW, train_y, test_x NCHW, test_y)."""
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dtype != np.uint8:
            raise DataError(f"{source}: {split}_x must be uint8 pixels 0..255, got {x.dtype}; "
                            "convert with (x * 255).round().astype('uint8') if it holds floats in 0..1")
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise DataError(f"{source}: {split}_x must be [N, H, W, C] with C 1 or 3, got {list(x.shape)}; "
                            "store images channel-last")
        if len(x) == 0:
            raise DataError(f"{source}: the {split} split is empty; provide at least one {split} image")
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{source}: {split}_y must be {len(x)} integer labels [N], got {y.dtype} "
                            f"{list(y.shape)}; store one integer class index per image")
        if y.min() < 0 or y.max() >= num_classes:
            raise DataError(f"{source}: {split}_y has labels {int(y.min())}..{int(y.max())} outside "
                            f"0..{num_classes - 1}; store class indices 0..{num_classes - 1}")
        # One contiguous HWC -> CHW copy here, so every batch later is a plain slice.
        out += [torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y.astype(np.int64)]
    if out[0].shape[1:] != out[2].shape[1:]:
        raise DataError(f"{source}: train images are {list(out[0].shape[1:])} but test images are "
                        f"{list(out[2].shape[1:])} (CHW); store both splits at the same size")
    return out[0], out[1], out[2], out[3]


# imagefolder ----------------------------------------------------------------------------------------------------

def _load_imagefolder(path: Path | None, size: int, seed: int, heldout_per_class: int | None, cache: bool,
                      max_memory_gb: float) -> Dataset:
    """`path/train` and `path/val` in ImageFolder layout, resized and centre-cropped to `size` and held
    as uint8 in memory: [N, 3, size, size] bytes per split, so this is for modest datasets, not ImageNet.
    Decoded once, then read from the cache while no image changes (`cache=False`: decoded every time)."""
    from torchvision.datasets import ImageFolder

    if path is None:
        raise DataError("imagefolder needs --data-dir: a folder with train/ and val/ class subfolders")
    kind = file_kind(path)
    if kind is None:
        raise DataError(f"{path} does not exist; pass a folder with train/ and val/ class subfolders")
    if kind != "a directory":
        raise DataError(f"{path} is {kind}; imagefolder needs a folder with train/ and val/ class subfolders")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"image_size must be a positive integer, got {size!r}; pass e.g. 224")
    if isinstance(max_memory_gb, bool) or not isinstance(max_memory_gb, (int, float)) \
            or not math.isfinite(max_memory_gb) or max_memory_gb <= 0:
        raise DataError(f"max_memory_gb must be a positive number of GiB, got {max_memory_gb!r}; pass e.g. 16")
    for sub in ("train", "val"):
        if not (path / sub).is_dir():
            raise DataError(f"{path} has no {sub}/ folder; imagefolder needs train/ and val/ with one "
                            "subfolder per class (val/ is the test split)")
    folders = {}
    for sub in ("train", "val"):
        try:
            folders[sub] = ImageFolder(str(path / sub))
        except (FileNotFoundError, OSError) as e:
            reason = " ".join(str(e).split())   # torchvision's messages may span lines
            raise DataError(f"{path / sub}: {reason}; put images in one subfolder per class") from None
    classes = folders["train"].classes
    extra = sorted(set(folders["val"].classes) - set(classes))
    if extra:
        raise DataError(f"{path / 'val'} has classes not in train/: {', '.join(extra)}; "
                        "give val/ the same class folders")
    # val/ may lack some classes, so map its labels through the class names, not its own numbering.
    val_to_train = [classes.index(c) for c in folders["val"].classes]
    train_files = folders["train"].samples
    val_files = [(f, val_to_train[t]) for f, t in folders["val"].samples]
    images = len(train_files) + len(val_files)
    total_bytes = images * 3 * size * size
    if total_bytes > max_memory_gb * 2**30:
        raise DataError(f"{path}: {images} images at {size}x{size} need {total_bytes / 2**30:.1f} GiB in memory "
                        f"(limit {max_memory_gb:g} GiB); raise max_memory_gb (--max-memory-gb), or use a smaller "
                        "image_size or a subset of the images")
    started = time.perf_counter()
    shapes = {"train": (len(train_files), 3, size, size), "val": (len(val_files), 3, size, size)}
    transform = {"size": size, "resize_ratio": RESIZE_RATIO, "interpolation": INTERPOLATION}
    key = image_key(path, [f for f, _ in train_files + val_files], transform) if cache else None
    kept = read_images(key, shapes) if cache else None
    if kept is not None:
        train_x, test_x = torch.from_numpy(kept["train"]), torch.from_numpy(kept["val"])
    else:
        train_x, test_x = _decode(train_files, size), _decode(val_files, size)
    stats = {"images": images, "bytes": total_bytes, "seconds": round(time.perf_counter() - started, 3),
             "cached": kept is not None}
    train_y = np.array([t for _, t in train_files], dtype=np.int64)
    test_y = np.array([t for _, t in val_files], dtype=np.int64)
    if heldout_per_class is None:
        smallest = int(np.bincount(train_y, minlength=len(classes)).min())
        # At least one held-out image per class when possible, never a class's last training image.
        heldout_per_class = min(50, max(1, smallest // 10), smallest - 1)
    dataset = _assemble("imagefolder", train_x, train_y, test_x, test_y, list(classes), heldout_per_class, seed,
                        hflip=True, load_stats=stats)
    if cache and kept is None:  # only a folder that loads: one refused leaves nothing in the cache
        write_images(key, {"train": train_x.numpy(), "val": test_x.numpy()})
    return dataset


def _decode(files: list[tuple[str, int]], size: int) -> torch.Tensor:
    """Decode, resize (shorter side to size * 1.14) and centre-crop images into uint8 [N, 3, size, size]."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    short_side = int(size * RESIZE_RATIO)

    def load(i: int) -> None:
        try:
            with _open(files[i][0], "image", "remove or replace it") as f, Image.open(f) as img:
                img = TF.resize(img.convert("RGB"), short_side, InterpolationMode(INTERPOLATION))
                x[i] = TF.pil_to_tensor(TF.center_crop(img, size))
        except OSError as e:
            raise DataError(f"cannot read image {files[i][0]} ({type(e).__name__}); remove or replace it") from None

    # PIL releases the GIL while decoding and resizing, so threads scale with cores.
    with ThreadPoolExecutor() as pool:
        list(pool.map(load, range(len(files))))
    return x
