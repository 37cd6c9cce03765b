"""Tidy result rows: schema, provenance, atomic per-run files and the consolidated table.

``python -m benchmark.results collect DIR`` rebuilds ``DIR/results.parquet`` from ``DIR/runs/``.
"""

from __future__ import annotations

from benchmark.results.provenance import config_hash, git_state, hardware, provenance
from benchmark.results.schema import COLUMN_DOCS, EXTRA_COLUMN_DOCS, ROW_COLUMNS, SchemaError
from benchmark.results.store import (
    RESULTS_FILE,
    atomic_write_bytes,
    atomic_write_text,
    collect,
    read_results,
    recorded_weights,
    run_done,
    run_path,
    write_json,
    write_run_record,
    write_run_rows,
)

__all__ = [
    "COLUMN_DOCS",
    "EXTRA_COLUMN_DOCS",
    "RESULTS_FILE",
    "ROW_COLUMNS",
    "SchemaError",
    "atomic_write_bytes",
    "atomic_write_text",
    "collect",
    "config_hash",
    "git_state",
    "hardware",
    "provenance",
    "read_results",
    "recorded_weights",
    "run_done",
    "run_path",
    "write_json",
    "write_run_record",
    "write_run_rows",
]
