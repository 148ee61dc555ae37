"""Train the embedded default model (digits_cnn on scikit-learn's digits) and bundle its weights.

    python scripts/train_digits_cnn.py        # about 20 s on 2 CPU cores

Writes src/amc/models/weights/digits_cnn.pt (a plain state dict, ~0.5 MB), which `amc search` with no
arguments prunes. Deterministic for a given torch build (seed 0).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from amc import models
from amc.data import load_dataset
from amc.train import TrainConfig, train

OUT = Path(__file__).resolve().parents[1] / "src" / "amc" / "models" / "weights" / "digits_cnn.pt"


def main() -> None:
    torch.manual_seed(0)
    dataset = load_dataset("digits")
    model = models.create("digits_cnn")
    with tempfile.TemporaryDirectory() as tmp:
        final = train(model, dataset, Path(tmp) / "ckpt.pt",
                      TrainConfig(epochs=40, batch_size=64, lr=0.05, weight_decay=5e-4, seed=0),
                      progress=lambda r: print(f"epoch {r['epoch']}: held-out {r['heldout_top1']:.4f}"))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), OUT)
    print(f"held-out top-1 {final['heldout_top1']:.4f}, test top-1 {final['test_top1']:.4f} -> {OUT}")


if __name__ == "__main__":
    main()
