"""``python -m benchmark.readiness RESULTS... [--model NAME ...] --out DIR [--tolerance 0.01]``."""

from __future__ import annotations

import argparse
import sys

from benchmark.errors import run_cli
from benchmark.readiness.report import load_results, write_reports

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Write a readiness report per model; prints the written paths. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.readiness",
        description="Quantization readiness scorecard (Markdown + HTML) per model from tidy "
        "results.",
    )
    parser.add_argument(
        "results", nargs="+", help="results.parquet files or results/<experiment>/ folders"
    )
    parser.add_argument(
        "--model", action="append", help="model name (repeatable; default: every model)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--tolerance", type=float, default=0.01, help="gate tolerance on the relative mean DSC drop"
    )
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results)
        models = args.model or sorted(results["model"].dropna().unique())
        if not models:
            raise ValueError(f"no model rows in {args.results}")
        written = write_reports(results, models, args.out, args.tolerance)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
