"""Tables and the sweep figure from tidy results (``python -m benchmark.report RESULTS``)."""

from __future__ import annotations

from benchmark.report.render import FORMATS, render
from benchmark.report.table import make_table, read_published, run_means

__all__ = ["FORMATS", "make_table", "read_published", "render", "run_means"]
