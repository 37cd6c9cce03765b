"""``python -m benchmark.report RESULTS [--format md|csv|tex] [--ci] [--published CSV]``.

RESULTS is a ``results.parquet`` file or a ``results/<experiment>`` folder (its run files are
collected first when ``results.parquet`` is missing). For the BTCV reproduction
(``experiment=medquanbench_btcv``) the published MedQuanBench figures are put side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import benchmark
from benchmark.report.render import FORMATS, render
from benchmark.report.table import make_table, read_published
from benchmark.results import RESULTS_FILE, collect

__all__ = ["PUBLISHED", "load_results", "main"]

#: Published figures shipped with the project, by experiment name.
PUBLISHED = {
    "medquanbench_btcv": Path(benchmark.__file__).resolve().parents[1]
    / "experiments"
    / "medquanbench_btcv"
    / "published.csv",
}


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a results parquet, or the ``results.parquet`` of a folder (collecting it if absent).

    Raises:
        FileNotFoundError: nothing readable at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / RESULTS_FILE).is_file():
            return collect(path)
        path = path / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no results at {path}; pass a results.parquet or a results/<experiment> folder"
        )
    return pd.read_parquet(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("results", help="results.parquet or results/<experiment> folder")
    parser.add_argument(
        "--format", choices=FORMATS, default="md", help="output format (default md)"
    )
    parser.add_argument(
        "--ci", action="store_true", help="add paired-bootstrap 95%% CIs of the drop from FP32"
    )
    parser.add_argument("--published", help="CSV of published figures to show side by side")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results)
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
    if published_path:
        # on stderr, so the table itself stays clean CSV/LaTeX when redirected
        print(f"published figures beside ours: {published_path}", file=sys.stderr)
    text = render(make_table(results, ci=args.ci, published=published), args.format)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
