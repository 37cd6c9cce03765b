"""``python -m benchmark.results collect DIR [DIR ...]``: rebuild ``results.parquet`` from run files.

The same collection runs at the end of every sweep; this command is for sweeps that ended
early (a failed or killed job, a SLURM array still draining) or runs copied in from elsewhere.
Recorded runs that no run file backs (a clone of committed results) are kept unless
``--run-files-only``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from benchmark.errors import run_cli
from benchmark.results.store import RESULTS_FILE, collect

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.results", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_collect = sub.add_parser(
        "collect", help="rebuild DIR/results.parquet from DIR/runs/*.parquet"
    )
    p_collect.add_argument("dirs", nargs="+", metavar="DIR", help="results/<experiment> folder(s)")
    p_collect.add_argument(
        "--run-files-only",
        action="store_true",
        help="drop recorded runs that no run file backs (after deleting a run's file)",
    )
    args = parser.parse_args(argv)
    for directory in args.dirs:
        try:
            table = collect(directory, keep_recorded=not args.run_files_only)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        runs = table["run_id"].nunique() if len(table) else 0
        print(f"{directory}/{RESULTS_FILE}: {len(table)} rows from {runs} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
