"""The files of a fine-tune grid, read and written here only: a bundle (jobs.json, the packed data, the weights)
and the results.jsonl a `finetune_grid.py run` appends to.

A job is one policy: its id, the scorer `setup` that rebuilds it (a small dict, `setup_spec`), its keep counts
and its fine-tune seeds. A result line is one fine-tune ({"id", "ft_seed", "test_top1", ...}), a failure
({"id", "ft_seed", "error"}) or a study curve alone ({"id", "ft_seed": null, "short": {...}}).
The data travels as JPEG streams re-encoded at quality 75 plus the exact residual, so the decoded pixels are
bit-identical (checked by SHA-256 on arrival).
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import pickle
from pathlib import Path

import numpy as np

JOBS_FILE, DATA_FILE, RESULTS_FILE = "jobs.json", "data.pkl", "results.jsonl"
SETUP_FIELDS = {"model": "model", "seed": "seed", "bn": "bn_recalibration", "calibration_images": "calibration_images",
                "points_per_image": "points_per_image"}  # a job's setup key -> the SearchConfig field it holds


# ---- the scorer a job's policy is rebuilt with ----------------------------------------------------------
def setup_spec(config) -> dict:
    """The part of a `SearchConfig` that decides how a policy is rebuilt (model, calibration images, BN batches;
    `"lsq": False` where least squares is off and `"selection"` where it is not magnitude, absent otherwise, so
    that earlier bundles' keys still match)."""
    spec = {key: getattr(config, field) for key, field in SETUP_FIELDS.items()}
    spec = spec if config.reconstruct else {**spec, "lsq": False}
    return spec if config.selection == "magnitude" else {**spec, "selection": config.selection}


def setup_config(spec: dict, **settings):
    """The `SearchConfig` that rebuilds `spec`'s policies (CIFAR-10), with other `settings` (weights, data_dir)."""
    from amc.config import SearchConfig

    return SearchConfig(data="cifar10", **{field: spec[key] for key, field in SETUP_FIELDS.items()},
                        reconstruct=spec.get("lsq", True), selection=spec.get("selection", "magnitude"), **settings)


def setup_key(spec: dict) -> str:
    return "-".join(f"{k}{spec[k]}" for k in sorted(spec))


def job_key(spec: dict, keep: list[int], model_file: str | None = None) -> str:
    """What makes two jobs one policy: the same setup and keep counts (or the same model file)."""
    return json.dumps([spec, keep, model_file])


# ---- jobs.json ------------------------------------------------------------------------------------------
def read_jobs(path: str | Path) -> list[dict]:
    """The jobs of a bundle directory, or of a jobs.json file itself."""
    path = Path(path)
    return json.loads((path / JOBS_FILE if path.is_dir() else path).read_text())


def write_jobs(bundle: str | Path, jobs: list[dict]) -> None:
    Path(bundle).mkdir(parents=True, exist_ok=True)
    (Path(bundle) / JOBS_FILE).write_text(json.dumps(jobs, indent=1))


# ---- results.jsonl --------------------------------------------------------------------------------------
def read_records(paths) -> list[dict]:
    """Every line of the results files that exist, in order (a later file's record of a pair comes later)."""
    return [json.loads(line) for path in map(Path, paths) if path.exists() for line in path.read_text().splitlines()]


def fine_tunes(records: list[dict]) -> dict[tuple[str, int], dict]:
    """The finished fine-tunes by (job id, fine-tune seed); a later record of a pair wins."""
    return {(r["id"], r["ft_seed"]): r for r in records if "test_top1" in r}


def append_record(path: str | Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---- data.pkl: JPEG streams (common header once) + exact residual ----------------------------------------
def pack_images(x: np.ndarray) -> dict:
    from PIL import Image
    streams, residual = [], np.empty(x.shape, np.int8)
    for i, im in enumerate(x):
        b = io.BytesIO()
        Image.fromarray(im).save(b, "JPEG", quality=75, subsampling=2)
        streams.append(b.getvalue())
        decoded = np.asarray(Image.open(io.BytesIO(streams[-1])).convert("RGB"))
        diff = im.astype(np.int16) - decoded
        assert np.abs(diff).max() < 128
        residual[i] = diff
    header = os.path.commonprefix(streams[:2000])
    header = header[:header.rfind(b"\xff\xda")]  # up to the start-of-scan marker, which every stream has
    assert all(s.startswith(header) for s in streams)
    return {"header": header, "lengths": np.array([len(s) - len(header) for s in streams], np.int32),
            "bodies": b"".join(s[len(header):] for s in streams), "residual": lzma.compress(residual.tobytes()),
            "shape": x.shape, "sha256": hashlib.sha256(x.tobytes()).hexdigest()}


def unpack_images(p: dict) -> tuple[np.ndarray, bool]:
    from PIL import Image
    residual = np.frombuffer(lzma.decompress(p["residual"]), np.int8).reshape(p["shape"])
    out = np.empty(p["shape"], np.uint8)
    offset = 0
    for i, n in enumerate(p["lengths"]):
        stream = p["header"] + p["bodies"][offset:offset + n]
        offset += n
        out[i] = (np.asarray(Image.open(io.BytesIO(stream)).convert("RGB")).astype(np.int16) + residual[i])
    return out, hashlib.sha256(out.tobytes()).hexdigest() == p["sha256"]


def pack_dataset(npz: Path, dest: Path) -> None:
    d = np.load(npz)
    packed = {k: pack_images(d[k]) for k in ("train_x", "test_x")}
    packed.update(train_y=d["train_y"], test_y=d["test_y"])
    dest.write_bytes(pickle.dumps(packed))


def unpack_dataset(src: Path, npz: Path) -> bool:
    """Write the bundle's data as the .npz amc reads; whether the pixels are bit-identical to the packed ones."""
    packed = pickle.loads(src.read_bytes())
    arrays, exact = {}, True
    for k in ("train_x", "test_x"):
        arrays[k], ok = unpack_images(packed[k])
        exact &= ok
    np.savez(npz, train_x=arrays["train_x"], train_y=packed["train_y"], test_x=arrays["test_x"],
             test_y=packed["test_y"])
    return exact
