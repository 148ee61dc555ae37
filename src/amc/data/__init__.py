"""Datasets held in memory as uint8 splits (train / held-out / test) and the batches models train on.

``load_dataset("digits")`` needs no files; ``load_dataset("cifar10", "cifar10.npz")`` reads CIFAR-10.
The held-out split is carved from the training set by a seed, so searches never score on images the
model trained on, and the test split stays untouched for final reports. Nothing here knows about models.
"""

from amc.data.batching import batches
from amc.data.datasets import DATASETS, load_dataset
from amc.data.splits import Dataset, Split, fingerprint

__all__ = ["DATASETS", "Dataset", "Split", "batches", "fingerprint", "load_dataset"]
