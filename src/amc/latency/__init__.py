"""Latency: measuring it (`measure`), predicting it per policy from a per-layer table (`table`), and keeping a
latency budget honest on the real network (`guard`). `amc.latency.measure_latency` is the public entry."""

from amc.latency.backends import BACKENDS, Backend
from amc.latency.measure import (LatencyResult, check_settings, cpu_name, measure_latency, runner,
                                 time_calls)

__all__ = ["BACKENDS", "Backend", "LatencyResult", "check_settings", "cpu_name", "measure_latency", "runner", "time_calls"]
