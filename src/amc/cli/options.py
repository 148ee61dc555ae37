"""Help texts and choice lists that several commands share, so that one option reads the same everywhere."""

from __future__ import annotations

from amc.config import THREADS_HELP, dataset_names

DATASETS = dataset_names  # the metavar: the names the data registry knows, read when a help is shown
JSON_HELP = "Print one JSON object (the result) on stdout instead of the line for people."
FROM_RUN = "Default: the run's."
TRUST_HELP = ("Import and run a model factory (package.module:function) that the run's files name: it is Python code "
              "that came with the run. Without it, such a run is refused (a factory you name with --model needs no "
              "flag).")

__all__ = ["DATASETS", "FROM_RUN", "JSON_HELP", "THREADS_HELP", "TRUST_HELP"]
