"""The disk cache of decoded ImageFolder images (`amc.data.image_cache`) and the memory bound of loading one."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from amc.data import datasets, load_dataset
from amc.errors import DataError

SIZE = 16


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    """Two classes of 40x30 JPEGs and PNGs in train/ and val/, with amc's cache under tmp_path."""
    from PIL import Image

    monkeypatch.setenv("AMC_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "imgs"
    for sub, count in (("train", 4), ("val", 2)):
        for c, name in enumerate(("ant", "bee")):
            (root / sub / name).mkdir(parents=True)
            for i in range(count):
                image = Image.new("RGB", (40, 30), (60 * i, 120 * c, 90))
                image.save(root / sub / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "imagefolder").glob("*.npz"))


def load(root: Path, **kw):
    return load_dataset("imagefolder", root, image_size=SIZE, heldout_per_class=1, **kw)


def no_decoding(*_):
    raise AssertionError("decoded although the cache holds these images")


def assert_same(a, b) -> None:
    for name in ("train", "heldout", "test"):
        x, y = getattr(a, name), getattr(b, name)
        assert torch.equal(x.x, y.x) and torch.equal(x.y, y.y) and torch.equal(x.indices, y.indices), name


def test_the_second_load_reads_the_cache_instead_of_decoding(folder, tmp_path, monkeypatch):
    first = load(folder)
    assert len(cache_files(tmp_path)) == 1
    assert first.load_stats["cached"] is False and first.load_stats["images"] == 12
    assert first.load_stats["bytes"] == 12 * 3 * SIZE * SIZE == first.nbytes
    monkeypatch.setattr(datasets, "_decode", no_decoding)
    second = load(folder)
    assert_same(first, second)
    assert second.load_stats["cached"] is True and second.load_stats["bytes"] == first.load_stats["bytes"]
    assert second.class_names == first.class_names and len(cache_files(tmp_path)) == 1


def test_replacing_adding_or_removing_an_image_is_another_key(folder, tmp_path, monkeypatch):
    from PIL import Image

    first = load(folder)
    image = folder / "train" / "ant" / "0.png"
    Image.new("RGB", (40, 30), (255, 255, 255)).save(image)
    os.utime(image, ns=(1, 1))  # another mtime even where the clock is coarse
    changed = load(folder)
    assert not torch.equal(changed.train.x, first.train.x) or not torch.equal(changed.heldout.x, first.heldout.x)
    assert changed.load_stats["cached"] is False and len(cache_files(tmp_path)) == 2
    (folder / "val" / "bee" / "1.jpg").unlink()
    assert len(load(folder).test) == 3 and len(cache_files(tmp_path)) == 3
    monkeypatch.setattr(datasets, "_decode", no_decoding)
    assert len(load(folder).test) == 3  # the same files again: the cache


def test_a_corrupted_cache_file_is_ignored_with_a_warning_and_rebuilt(folder, tmp_path):
    import io

    import numpy as np

    first = load(folder)
    [kept] = cache_files(tmp_path)
    npy = io.BytesIO()
    np.save(npy, first.test.x.numpy())
    for damage in (kept.read_bytes()[: kept.stat().st_size // 2], b"", b"not an archive at all", npy.getvalue()):
        kept.write_bytes(damage)
        with pytest.warns(UserWarning, match="ignoring the image cache .*decoded again") as caught:
            again = load(folder)
        assert len(caught) == 1 and "\n" not in str(caught[0].message)
        assert_same(first, again)
        assert again.load_stats["cached"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(folder).load_stats["cached"] is True  # rebuilt


def test_a_cache_file_of_other_shapes_is_ignored(folder, tmp_path, monkeypatch):
    import numpy as np

    first = load(folder)
    [kept] = cache_files(tmp_path)
    with open(kept, "wb") as f:
        np.savez(f, train=np.zeros((8, 3, SIZE, SIZE), np.uint8), val=np.zeros((3, 3, SIZE, SIZE), np.uint8))
    with pytest.warns(UserWarning, match=r"val is uint8 \[3, 3, 16, 16\], expected uint8 \[4, 3, 16, 16\]"):
        assert_same(first, load(folder))


def test_without_the_cache_nothing_is_written(folder, tmp_path):
    data = load(folder, cache=False)
    assert data.load_stats["cached"] is False and not (tmp_path / "cache").exists()
    with pytest.raises(DataError, match="cache=False applies only to imagefolder"):
        load_dataset("digits", cache=False)


def test_an_unwritable_cache_directory_costs_a_warning_not_the_load(folder, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("AMC_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with pytest.warns(UserWarning, match="decoded images are not kept .*set AMC_CACHE_DIR"):
        assert len(load(folder).train) == 6


def test_the_memory_bound_refuses_before_decoding_and_names_the_option(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_decode", no_decoding)
    with pytest.raises(DataError) as refused:
        load(folder, max_memory_gb=1e-6)  # 12 images of 768 bytes need ~9 KB
    message = str(refused.value)
    assert "\n" not in message and "limit 1e-06 GiB" in message and "--max-memory-gb" in message
    for bad in (0, -1.0, float("nan"), True, "16"):
        with pytest.raises(DataError, match="max_memory_gb must be a positive number"):
            load(folder, max_memory_gb=bad)
    assert not cache_files(tmp_path)


def test_the_search_progress_says_how_long_decoding_took_and_the_memory_it_takes(folder, capsys, monkeypatch):
    import sys

    from amc.cli import progress as cli_progress
    monkeypatch.setattr(cli_progress.console, "_file", sys.stderr)  # a plain console, captured
    printer = cli_progress.EpisodeProgress(2)
    for stats in (load(folder).load_stats, load(folder).load_stats, {"images": 12_000, "bytes": 3 * 2**30,
                                                                       "seconds": 41.25, "cached": False}):
        printer.phase({"phase": "features", "label": "sampling features", "elapsed": 1.0, "eta": None,
                       "loaded": stats})
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("data: 12 images decoded in ") and lines[0].endswith(" s, 0.0 MiB in memory")
    assert lines[2].startswith("data: 12 images read from the cache in ")
    assert lines[4] == "data: 12,000 images decoded in 41.2 s, 3.00 GiB in memory"
    assert lines[1] == "sampling features  elapsed 1s"
