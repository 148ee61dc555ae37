"""A finished search run as figures and one self-contained HTML page (`write_report`, `amc report`)."""

from amc.report.page import render_html, write_report
from amc.report.run import LayerRow, Run, layer_rows, load_run, warmup_episodes
from amc.report.timing import measure_run_latency, read_latency
from amc.runs import LAYERS_FIGURE, REPORT_FILE, SEARCH_FIGURE, TIMINGS_FILE

__all__ = ["LAYERS_FIGURE", "REPORT_FILE", "SEARCH_FIGURE", "TIMINGS_FILE", "LayerRow", "Run", "layer_rows",
           "load_run", "measure_run_latency", "read_latency", "render_html", "warmup_episodes", "write_report"]
