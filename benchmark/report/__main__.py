"""``python -m benchmark.report RESULTS [--format md|csv|tex] [--ci] [--calibration]
[--published CSV]``.

RESULTS is a ``results.parquet`` file or a ``results/<experiment>`` folder (its run files are
collected first when ``results.parquet`` is missing). For the BTCV reproduction
(``experiment=medquanbench_btcv``) the published MedQuanBench figures are put side by side.
A model without an FP32 run in RESULTS gets its baseline from the cached FP32 predictions of
the same model, data and inference settings (:mod:`benchmark.report.baseline`), or a message on
stderr saying why not and which run adds it. ``--format csv`` writes numbers, one per column.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import benchmark
from benchmark.errors import run_cli
from benchmark.report.baseline import cached_baselines
from benchmark.report.render import FORMATS, table_text
from benchmark.report.table import read_published
from benchmark.report.weights import (
    mixed_weights_notes,
    shipped_digests,
    unshipped_weights_notes,
)
from benchmark.results import read_results

__all__ = ["PUBLISHED", "main"]

#: Published figures shipped with the project, by experiment name.
PUBLISHED = {
    "medquanbench_btcv": Path(benchmark.__file__).resolve().parents[1]
    / "experiments"
    / "medquanbench_btcv"
    / "published.csv",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("results", help="results.parquet or results/<experiment> folder")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="md",
        help="md or tex: the published layout; csv: one number per column (default md)",
    )
    parser.add_argument(
        "--ci", action="store_true", help="add paired-bootstrap 95%% CIs of the drop from FP32"
    )
    parser.add_argument(
        "--calibration",
        action="store_true",
        help="add the case-level ECE and Brier score and their change from FP32",
    )
    parser.add_argument("--published", help="CSV of published figures to show side by side")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        results = read_results(args.results)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not len(results):
        print(f"error: {args.results} holds no result rows", file=sys.stderr)
        return 1
    published_path = args.published
    experiments = set(results["experiment"].dropna().unique())
    if published_path is None and len(experiments) == 1:
        candidate = PUBLISHED.get(next(iter(experiments)))
        published_path = candidate if candidate is not None and candidate.is_file() else None
    published = read_published(published_path) if published_path else None
    # notes go to stderr, so the table itself stays clean CSV/LaTeX when redirected
    if published_path:
        print(f"published figures beside ours: {published_path}", file=sys.stderr)
    path = Path(args.results)
    baselines, notes = cached_baselines(results, path if path.is_dir() else path.parent)
    shipped = shipped_digests(results["model"].dropna().unique())
    weights_notes = [*mixed_weights_notes(results), *unshipped_weights_notes(results, shipped)]
    for note in [*notes, *weights_notes]:
        print(note, file=sys.stderr)
    if len(baselines):
        results = pd.concat([results, baselines], ignore_index=True)
    text = table_text(
        results, args.format, ci=args.ci, published=published, calibration=args.calibration
    )
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
