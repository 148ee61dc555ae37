"""Command-line arguments the search benchmarks share (they run as scripts: benchmarks/ is on sys.path)."""

from __future__ import annotations

import argparse


def add_model_and_data(parser: argparse.ArgumentParser, model: str | None = None) -> None:
    """--model (required when no default is given), --weights, --data, --data-dir and the MACs --ratio."""
    parser.add_argument("--model", default=model, required=model is None)
    parser.add_argument("--weights")
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--data-dir")
    parser.add_argument("--ratio", type=float, default=0.5)
