"""A disk cache of decoded ImageFolder images, so that a folder is decoded once and read back fast after that.

One uncompressed .npz per key in amc's cache directory ($AMC_CACHE_DIR/imagefolder, else ~/.cache/amc/imagefolder).
The key is a SHA-256 over the file format, Pillow's version, the transform and every image's relative path, size
and modification time: changing, adding or removing an image, or asking for another crop, is another key. Files
are read without pickle and replaced atomically; one that cannot be read or does not hold what its key promises
costs a warning and a decode, never the load. Nothing evicts old entries: delete the directory to reclaim space.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from amc import cache as amc_cache
from amc.atomic import write_file_atomic
from amc.errors import AmcError, DataError
from amc.safe_open import file_kind, open_regular

CACHE_KIND = "imagefolder"
FORMAT = 1  # changes whenever what a file holds changes meaning, so that older files are never read as newer


def image_key(root: Path, files: Sequence[str], transform: dict) -> str:
    """The key of `files` (images under `root`) decoded by `transform` (crop size, resize ratio, interpolation).

    Sizes and modification times stand in for the content: hashing gigabytes of images would cost about
    what decoding them does.
    """
    from PIL import __version__ as pillow  # another decoder may give other pixels

    listing = []
    for file in files:
        try:
            stat = os.stat(file)
        except OSError as e:
            raise DataError(f"cannot read image {file} ({type(e).__name__}); remove or replace it") from None
        listing.append((Path(file).relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    described = {"format": FORMAT, "pillow": pillow, "transform": transform, "files": sorted(listing)}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def read_images(key: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The uint8 arrays kept under `key` (one per name in `shapes`, of that shape), or None where there are none.

    A file that cannot be read, or whose arrays are not those `shapes` promise, is ignored with a warning:
    the caller decodes the images again and replaces it.
    """
    try:
        path = amc_cache.cache_dir(CACHE_KIND) / f"{key}.npz"
    except amc_cache.CacheDirError:
        return None  # no home directory: `write_images` says so
    if file_kind(path) is None:
        return None
    try:
        with open_regular(path, "image cache", "remove it") as f:
            loaded = np.load(f, allow_pickle=False)  # a bare .npy loads as one array
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                return _ignore(path, "not an .npz archive")
            with loaded:
                arrays = {name: loaded[name] for name in shapes if name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AmcError) as e:
        return _ignore(path, type(e).__name__)
    for name, shape in shapes.items():
        if name not in arrays:
            return _ignore(path, f"no {name} images")
        found = arrays[name]
        if found.dtype != np.uint8 or found.shape != tuple(shape) or not found.flags.c_contiguous:
            return _ignore(path, f"{name} is {found.dtype} {list(found.shape)}, expected uint8 {list(shape)}")
    return arrays


def _ignore(path: Path, reason: str) -> None:
    warnings.warn(f"ignoring the image cache {path} ({reason}); the images are decoded again and it is replaced",
                  stacklevel=4)


def write_images(key: str, arrays: dict[str, np.ndarray]) -> None:
    """Keep `arrays` under `key` for the next load (where the cache cannot be written, a warning, not a failure)."""
    amc_cache.keep(CACHE_KIND, f"{key}.npz", lambda path: write_file_atomic(path, lambda f: np.savez(f, **arrays)),
                   "the decoded images are not kept for the next load")


__all__ = ["CACHE_KIND", "FORMAT", "image_key", "read_images", "write_images"]
