"""Tables and the sweep figure from tidy results (``python -m benchmark.report RESULTS``)."""

from __future__ import annotations

from benchmark.report.render import FORMATS, render, table_text
from benchmark.report.table import (
    make_table,
    numeric_table,
    read_published,
    run_lines,
    run_means,
)

__all__ = [
    "FORMATS",
    "make_table",
    "numeric_table",
    "read_published",
    "render",
    "run_lines",
    "run_means",
    "table_text",
]
