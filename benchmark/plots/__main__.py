"""``python -m benchmark.plots RESULTS [--out DIR]``: the standard figures of a results table.

RESULTS is a ``results.parquet`` file or a ``results/<experiment>`` folder; figures go to
``--out`` (default: ``figures/`` next to the results) as PNG and PDF. Figures whose data the
results lack are skipped with a message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmark.errors import run_cli
from benchmark.plots import make_figures
from benchmark.results import read_results

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Draw the figures; returns 0, or 1 when nothing could be drawn."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.plots", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("results", help="results.parquet or results/<experiment> folder")
    parser.add_argument("--out", default=None, help="output folder (default: <results>/figures)")
    args = parser.parse_args(argv)
    path = Path(args.results)
    try:
        results = read_results(path)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (path if path.is_dir() else path.parent) / "figures"
    drawn = make_figures(results, out)
    for name, outcome in drawn.items():
        if isinstance(outcome, str):
            print(f"{name}: {outcome}")
        else:
            print(f"{name}: " + ", ".join(str(p) for p in outcome))
    return 0 if any(not isinstance(o, str) for o in drawn.values()) else 1


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
