"""Help texts and choice lists that several commands share, so that one option reads the same everywhere."""

from __future__ import annotations

from amc.data import DATASETS as DATASET_NAMES

DATASETS = "|".join(DATASET_NAMES)  # the metavar: the names the data registry knows
JSON_HELP = "Print one JSON object (the result) on stdout instead of the line for people."
THREADS_HELP = "torch CPU threads (default: torch's choice; one for tiny models)."
FROM_RUN = "Default: the run's."
TRUST_HELP = ("Import and run a model factory (package.module:function) that the run's files name: it is Python code "
              "that came with the run. Without it, such a run is refused (a factory you name with --model needs no "
              "flag).")
