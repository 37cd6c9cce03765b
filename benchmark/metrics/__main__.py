"""``python -m benchmark.metrics PRED GT [--tolerance MM] [--json]``."""

from __future__ import annotations

from benchmark.errors import run_cli
from benchmark.metrics.cli import main

raise SystemExit(run_cli(main))
