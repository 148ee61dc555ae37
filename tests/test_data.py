"""amc.data: splits are disjoint, reproducible and validated; batches normalize and augment correctly."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from amc.data import DATASETS, Dataset, Split, batches, fingerprint, load_dataset
from amc.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_DIR = SHARED_DATA / "cifar10-jpeg"


# helpers ------------------------------------------------------------------------------------------------------

def brief_heldout(train_y: np.ndarray, per_class: int, seed: int, num_classes: int = 10) -> np.ndarray:
    """The reference held-out procedure, written out independently of the package."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero(train_y == c)
        picked.append(idx[rng.permutation(len(idx))[:per_class]])
    return np.sort(np.concatenate(picked))


def fake_cifar_arrays(train_per_class: int = 60, test_per_class: int = 5, size: int = 8,
                      seed: int = 1) -> dict[str, np.ndarray]:
    """Random uint8 HWC images with shuffled labels, like CIFAR but tiny."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        y = rng.permutation(np.repeat(np.arange(10), per_class))
        out[f"{split}_x"] = rng.integers(0, 256, (len(y), size, size, 3), dtype=np.uint8)
        out[f"{split}_y"] = y
    return out


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def write_cifar_folder(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    """torchvision's cifar-10-batches-py layout: five training pickles, a test pickle and the meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)   # the files store CHW rows
        with open(folder / name, "wb") as f:
            pickle.dump({"data": flat, "labels": [int(v) for v in y]}, f)

    for i, part in enumerate(np.array_split(np.arange(len(arrays["train_y"])), 5)):
        dump(f"data_batch_{i + 1}", arrays["train_x"][part], arrays["train_y"][part])
    dump("test_batch", arrays["test_x"], arrays["test_y"])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    return root


def write_imagefolder(root: Path, classes=("ant", "bee", "cat"), per_class: int = 6,
                      val_classes=("ant", "bee", "cat")) -> Path:
    """Solid-colour 40x48 PNGs, one colour per class, in train/ and val/ class folders."""
    from PIL import Image

    colours = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}
    for sub, names in (("train", classes), ("val", val_classes)):
        for name in names:
            (root / sub / name).mkdir(parents=True)
            for i in range(per_class if sub == "train" else 2):
                Image.new("RGB", (48, 40), colours[name]).save(root / sub / name / f"{i}.png")
    return root


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def per_class_counts(split: Split, num_classes: int = 10) -> list[int]:
    return torch.bincount(split.y, minlength=num_classes).tolist()


# digits -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_types_and_labels(digits: Dataset):
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10 and len(digits.class_names) == 10
    for split in (digits.train, digits.heldout, digits.test):
        assert split.x.dtype == torch.uint8 and split.x.shape[1:] == (1, 8, 8)
        assert split.y.dtype == torch.int64 and len(split.y) == len(split.x)
        assert 0 <= int(split.y.min()) and int(split.y.max()) < 10
        assert split.hflip is False            # mirrored digits are different symbols
    assert int(digits.train.x.max()) == 255    # 16 maps to 255


def test_digits_splits_partition_the_source_and_match_it(digits: Dataset):
    from sklearn.datasets import load_digits

    source = load_digits()
    parts = [digits.train.indices, digits.heldout.indices, digits.test.indices]
    together = torch.cat(parts)
    assert len(together) == len(source.target) == 1797
    assert torch.equal(together.sort().values, torch.arange(1797))      # disjoint and complete
    expected_x = torch.from_numpy(np.rint(source.images * 255 / 16).astype(np.uint8)).unsqueeze(1)
    for split in (digits.train, digits.heldout, digits.test):           # indices describe the real content
        assert torch.equal(split.x, expected_x[split.indices])
        assert torch.equal(split.y, torch.from_numpy(source.target)[split.indices])


def test_digits_heldout_and_test_sizes(digits: Dataset):
    from sklearn.datasets import load_digits

    assert per_class_counts(digits.heldout) == [30] * 10
    full = np.bincount(load_digits().target, minlength=10)
    assert per_class_counts(digits.test) == [int(round(0.2 * n)) for n in full]   # stratified 20%


def test_digits_deterministic_and_seeded(digits: Dataset):
    again = load_dataset("digits")
    for name in ("train", "heldout", "test"):
        assert fingerprint(getattr(again, name)) == fingerprint(getattr(digits, name))
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.heldout.indices.sort().values, digits.heldout.indices.sort().values)
    # The test split is fixed, so a model trained under one seed never sees another seed's test images.
    assert torch.equal(other.test.indices, digits.test.indices)
    assert per_class_counts(load_dataset("digits", heldout_per_class=5).heldout) == [5] * 10


def test_heldout_prefix_is_class_balanced(digits: Dataset):
    # Searches may score on the first N held-out images; each block of 10 holds every class once.
    for start in range(0, 300, 10):
        assert sorted(digits.heldout.y[start:start + 10].tolist()) == list(range(10))


def test_calibration_indices(digits: Dataset):
    idx = digits.calibration_indices(64, seed=3)
    assert idx.dtype == torch.int64 and len(idx) == 64 and len(idx.unique()) == 64
    assert 0 <= int(idx.min()) and int(idx.max()) < len(digits.train)
    assert torch.equal(idx, digits.calibration_indices(64, seed=3))
    assert not torch.equal(idx, digits.calibration_indices(64, seed=4))
    # Indices point into train, whose source positions never touch held-out.
    assert not set(digits.train.indices[idx].tolist()) & set(digits.heldout.indices.tolist())
    with pytest.raises(DataError) as e:
        digits.calibration_indices(len(digits.train) + 1, seed=0)
    assert_one_line_error(e, "calibration")


# cifar10 ------------------------------------------------------------------------------------------------------

def test_cifar10_npz(tmp_path: Path):
    arrays = fake_cifar_arrays()
    path = write_npz(tmp_path / "tiny.npz", **arrays)
    data = load_dataset("cifar10", path, heldout_per_class=20, seed=0)
    assert data.input_shape == (3, 8, 8) and data.num_classes == 10 and data.class_names[0] == "airplane"
    assert (len(data.train), len(data.heldout), len(data.test)) == (400, 200, 50)
    assert per_class_counts(data.heldout) == [20] * 10 and per_class_counts(data.train) == [40] * 10
    # HWC -> CHW conversion keeps each pixel where it belongs.
    assert torch.equal(data.test.x, torch.from_numpy(arrays["test_x"]).permute(0, 3, 1, 2))
    assert data.test.x.is_contiguous() and data.train.x.is_contiguous()
    assert torch.equal(data.train.x, torch.from_numpy(arrays["train_x"]).permute(0, 3, 1, 2)[data.train.indices])
    # Held-out is exactly the reference procedure; train is everything else, in the original order.
    held = data.heldout.indices.numpy()
    assert np.array_equal(np.sort(held), brief_heldout(arrays["train_y"], 20, 0))
    assert np.array_equal(data.train.indices.numpy(), np.setdiff1d(np.arange(600), held))
    again = load_dataset("cifar10", str(path), heldout_per_class=20, seed=0)
    assert fingerprint(again.heldout) == fingerprint(data.heldout)
    assert fingerprint(load_dataset("cifar10", path, heldout_per_class=20, seed=1).heldout) != fingerprint(data.heldout)


def test_cifar10_python_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torchvision.datasets.cifar as tv_cifar

    arrays = fake_cifar_arrays(size=32)        # torchvision's reader assumes 32x32
    root = write_cifar_folder(tmp_path / "cifar", arrays)
    # torchvision checks every file's md5 against the real release on each construction, not only when
    # downloading, so a hand-made folder can only pass with the check stubbed out.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    from_folder = load_dataset("cifar10", root, heldout_per_class=20)
    from_npz = load_dataset("cifar10", write_npz(tmp_path / "same.npz", **arrays), heldout_per_class=20)
    for name in ("train", "heldout", "test"):
        assert fingerprint(getattr(from_folder, name)) == fingerprint(getattr(from_npz, name))
    inner = load_dataset("cifar10", root / "cifar-10-batches-py", heldout_per_class=20)   # the inner folder works too
    assert fingerprint(inner.train) == fingerprint(from_npz.train)


def test_cifar10_python_folder_with_wrong_checksums_is_a_data_error(tmp_path: Path):
    root = write_cifar_folder(tmp_path / "cifar", fake_cifar_arrays(size=32))
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root, heldout_per_class=20)
    assert_one_line_error(e, "--download")


@pytest.mark.shared_data
def test_real_cifar10_npz_reproduces_the_shared_heldout():
    npz, reference = CIFAR_DIR / "cifar10_jpeg.npz", CIFAR_DIR / "heldout_idx_seed0.npy"
    if not (npz.is_file() and reference.is_file()):
        pytest.skip(f"needs {npz} and {reference} (shared data beside the repository); not present here")
    data = load_dataset("cifar10", npz)
    assert (len(data.train), len(data.heldout), len(data.test)) == (45000, 5000, 10000)
    assert data.input_shape == (3, 32, 32) and data.train.x.dtype == torch.uint8
    assert np.array_equal(np.sort(data.heldout.indices.numpy()), np.load(reference))
    assert per_class_counts(data.heldout) == [500] * 10
    assert not set(data.train.indices.tolist()) & set(data.heldout.indices.tolist())


# imagefolder --------------------------------------------------------------------------------------------------

def test_imagefolder(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AMC_CACHE_DIR", str(tmp_path / "cache"))  # the second load reads the first's decoding
    root = write_imagefolder(tmp_path / "imgs")
    data = load_dataset("imagefolder", root, image_size=32)
    assert data.class_names == ["ant", "bee", "cat"] and data.num_classes == 3 and data.input_shape == (3, 32, 32)
    # Default held-out: min(50, 10% of 6) rounds to 0, raised to 1 so searches have something to score.
    assert (len(data.train), len(data.heldout), len(data.test)) == (15, 3, 6)
    assert data.train.x.shape == (15, 3, 32, 32) and data.train.x.dtype == torch.uint8
    for split in (data.train, data.heldout, data.test):
        colour = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8)[split.y]
        assert torch.equal(split.x, colour[:, :, None, None].expand_as(split.x))
    assert per_class_counts(load_dataset("imagefolder", root, image_size=32, heldout_per_class=2).heldout, 3) == [2] * 3


def test_imagefolder_val_with_fewer_classes_keeps_train_numbering(tmp_path: Path):
    root = write_imagefolder(tmp_path / "imgs", val_classes=("bee", "cat"))
    data = load_dataset("imagefolder", root, image_size=16, cache=False)
    assert sorted(set(data.test.y.tolist())) == [1, 2]
    assert int(data.test.x[data.test.y == 2][:, 2].min()) == 255     # "cat" is blue in train and in val


# batches ------------------------------------------------------------------------------------------------------

def random_split(n: int = 10, shape=(3, 32, 32), hflip: bool = True) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g), torch.arange(n) % 3, hflip)


def test_batches_normalize_and_include_the_last_partial_batch():
    split, mean, std = random_split(), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    out = list(batches(split, 4, mean=mean, std=std))
    assert [len(y) for _, y in out] == [4, 4, 2]
    x = torch.cat([b for b, _ in out])
    m, s = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (mean, std))
    expected = (split.x.double() / 255 - m) / s
    assert x.dtype == torch.float32 and torch.allclose(x.double(), expected, atol=1e-5)
    assert torch.equal(torch.cat([y for _, y in out]), split.y)


def test_batches_shuffle_is_a_seeded_permutation():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 8, 8).contiguous()
    split = Split(images, torch.arange(20))

    def labels(seed: int) -> list[int]:
        return torch.cat([y for _, y in batches(split, 6, mean=(0.0,), std=(1.0,), shuffle=True,
                                                generator=torch.Generator().manual_seed(seed))]).tolist()

    assert labels(7) == labels(7) and sorted(labels(7)) == list(range(20)) and labels(7) != list(range(20))
    assert labels(7) != labels(8)
    for x, y in batches(split, 6, mean=(0.0,), std=(1.0,), shuffle=True, generator=torch.Generator().manual_seed(7)):
        assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())       # images travel with their labels


def test_augment_only_crops_and_flips_a_constant_image():
    split = Split(torch.full((16, 3, 32, 32), 200, dtype=torch.uint8), torch.zeros(16, dtype=torch.int64))
    g = torch.Generator().manual_seed(0)
    (x, _), = batches(split, 16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), augment=True, generator=g)
    assert x.shape == (16, 3, 32, 32)
    pixels = (x * 255).round()
    assert torch.all(pixels[:, :, 4:28, 4:28] == 200)               # at most 4 pixels of padding move in
    assert set(pixels.unique().tolist()) <= {0.0, 200.0}
    assert bool((x == 0).any())                                     # some crops do reach the black border


def column_directions(split: Split, seed: int) -> set[str]:
    """'kept' / 'mirrored' for each augmented image of a left-to-right ramp."""
    g = torch.Generator().manual_seed(seed)
    seen = set()
    for x, _ in batches(split, 64, mean=(0.0,), std=(1.0,), augment=True, generator=g):
        row = x[:, 0, 4, 2:6]                      # columns the 1-pixel padding never reaches
        steps = row[:, 1:] - row[:, :-1]
        assert bool(((steps > 0).all(1) | (steps < 0).all(1)).all())   # shifted or mirrored, never scrambled
        seen |= {"kept" if bool((s > 0).all()) else "mirrored" for s in steps}
    return seen


def test_augment_flips_only_when_allowed():
    ramp = (torch.arange(8, dtype=torch.uint8) * 30 + 10).expand(64, 1, 8, 8).contiguous()
    digits_like = Split(ramp, torch.zeros(64, dtype=torch.int64), hflip=False)
    assert column_directions(digits_like, 0) == {"kept"}
    photos = Split(ramp, torch.zeros(64, dtype=torch.int64), hflip=True)
    assert column_directions(photos, 0) == {"kept", "mirrored"}
    assert column_directions(photos, 0) == column_directions(photos, 0)


def test_fingerprint_tracks_content():
    split = random_split()
    assert fingerprint(split) == fingerprint(Split(split.x.clone(), split.y.clone()))
    assert len(fingerprint(split)) == 16
    changed = split.x.clone()
    changed[3, 1, 2, 2] ^= 1
    assert fingerprint(Split(changed, split.y)) != fingerprint(split)
    assert fingerprint(Split(split.x, split.y.flip(0))) != fingerprint(split)


def test_split_subset_keeps_flags_and_indices(digits: Dataset):
    part = digits.train.subset([4, 1])
    assert part.hflip is False and len(part) == 2
    assert torch.equal(part.indices, digits.train.indices[[4, 1]]) and torch.equal(part.x[1], digits.train.x[1])


# errors -------------------------------------------------------------------------------------------------------

def error_cases(tmp: Path) -> dict[str, tuple[dict, tuple[str, ...]]]:
    """name -> (load_dataset kwargs, fragments the one-line message must contain)."""
    good = fake_cifar_arrays()
    (tmp / "empty_dir").mkdir()
    (tmp / "notes.txt").write_text("not data")
    no_val = write_imagefolder(tmp / "no_val")
    for f in (no_val / "val").rglob("*.png"):
        f.unlink()
    for d in sorted((no_val / "val").rglob("*"), reverse=True):
        d.rmdir()
    (no_val / "val").rmdir()
    float_x = {**good, "train_x": good["train_x"].astype(np.float32)}
    flat_x = {**good, "test_x": good["test_x"].reshape(50, -1)}
    bad_y = {**good, "train_y": good["train_y"] + 1}
    empty_test = {**good, "test_x": good["test_x"][:0], "test_y": good["test_y"][:0]}
    no_labels = {k: v for k, v in good.items() if not k.endswith("_y")}
    # FIFOs where data belongs: opening one to read would wait forever for a writer
    os.mkfifo(tmp / "fifo.npz")
    fifo_image = write_imagefolder(tmp / "fifo_image", per_class=2)
    (fifo_image / "train" / "bee" / "0.png").unlink()
    os.mkfifo(fifo_image / "train" / "bee" / "0.png")
    (tmp / "fifo_batch" / "cifar-10-batches-py").mkdir(parents=True)
    os.mkfifo(tmp / "fifo_batch" / "cifar-10-batches-py" / "data_batch_1")
    npz = {name: write_npz(tmp / f"{name}.npz", **arrays) for name, arrays in
           (("good", good), ("float_x", float_x), ("flat_x", flat_x), ("bad_y", bad_y),
            ("empty_test", empty_test), ("no_labels", no_labels))}
    return {
        "unknown name": ({"name": "imagenet21k"}, ("imagenet21k", *DATASETS)),
        "cifar without data": ({"name": "cifar10"}, ("--data-dir", "--download")),
        "missing path": ({"name": "cifar10", "data_dir": tmp / "nope.npz"}, ("does not exist",)),
        "wrong extension": ({"name": "cifar10", "data_dir": tmp / "notes.txt"}, (".txt", ".npz")),
        "unknown layout": ({"name": "cifar10", "data_dir": tmp / "empty_dir"}, ("cifar-10-batches-py",)),
        "missing keys": ({"name": "cifar10", "data_dir": npz["no_labels"]}, ("train_y, test_y",)),
        "wrong dtype": ({"name": "cifar10", "data_dir": npz["float_x"], "heldout_per_class": 5}, ("uint8",)),
        "wrong shape": ({"name": "cifar10", "data_dir": npz["flat_x"], "heldout_per_class": 5},
                        ("test_x", "[50, 192]")),
        "label range": ({"name": "cifar10", "data_dir": npz["bad_y"], "heldout_per_class": 5}, ("0..9",)),
        "empty split": ({"name": "cifar10", "data_dir": npz["empty_test"], "heldout_per_class": 5}, ("empty",)),
        "heldout too large": ({"name": "cifar10", "data_dir": npz["good"]}, ("heldout_per_class=500", "below 60")),
        "heldout negative": ({"name": "digits", "heldout_per_class": -1}, ("non-negative",)),
        "digits with a path": ({"name": "digits", "data_dir": tmp}, ("--data-dir",)),
        "imagefolder without val": ({"name": "imagefolder", "data_dir": no_val, "image_size": 16}, ("val/",)),
        "imagefolder without data": ({"name": "imagefolder"}, ("--data-dir",)),
        "npz that is a FIFO": ({"name": "cifar10", "data_dir": tmp / "fifo.npz"}, ("a FIFO", "not a data file")),
        "device as data": ({"name": "cifar10", "data_dir": "/dev/zero"}, ("/dev/zero is a device",)),
        "device as imagefolder": ({"name": "imagefolder", "data_dir": "/dev/zero"}, ("/dev/zero is a device",)),
        "image that is a FIFO": ({"name": "imagefolder", "data_dir": fifo_image, "image_size": 16},
                                 ("cannot read image", "0.png: it is a FIFO")),
        "CIFAR-10 batch that is a FIFO": ({"name": "cifar10", "data_dir": tmp / "fifo_batch"},
                                          ("data_batch_1: it is a FIFO", "--download")),
        "image_size for cifar": ({"name": "cifar10", "data_dir": npz["good"], "heldout_per_class": 5,
                                  "image_size": 224}, ("imagefolder",)),
    }


def test_every_user_mistake_is_a_one_line_data_error(tmp_path: Path):
    for case, (kwargs, fragments) in error_cases(tmp_path).items():
        with pytest.raises(DataError) as e:
            load_dataset(**kwargs)
        try:
            assert_one_line_error(e, *fragments)
        except AssertionError as failure:
            raise AssertionError(f"{case}: {failure}") from None


def test_batches_reject_mismatched_normalization(digits: Dataset):
    with pytest.raises(DataError) as e:
        next(batches(digits.test, 8, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)))
    assert_one_line_error(e, "1 channel")
