"""``python -m benchmark.data verify ROOT [--format F] [--force]``: check a dataset folder.

Reads every case of an nnU-Net raw or Decathlon folder as a run would before its first case
(see :mod:`benchmark.data.integrity`) and lists every problem. Exit status 0 when all cases
pass, 1 otherwise. Cases that passed are remembered, so a run afterwards does not read them again.
"""

from __future__ import annotations

import argparse
import sys

from benchmark.data.integrity import summary_line, verify_dataset
from benchmark.errors import run_cli

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, check the dataset, print the outcome; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.data", description="Dataset tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify",
        help="check every case of a dataset folder (files, geometry, declared labels)",
        description="Check every case of a dataset folder: each file exists and reads to the "
        "end, image and label share one voxel grid, label values are declared in dataset.json, "
        "image voxels are finite.",
    )
    verify.add_argument("root", help="the dataset folder holding dataset.json")
    verify.add_argument(
        "--format",
        choices=("auto", "nnunet_raw", "msd"),
        default="auto",
        help="folder layout (auto: from dataset.json's keys)",
    )
    verify.add_argument(
        "--force", action="store_true", help="read every case, even those that passed before"
    )
    verify.add_argument(
        "--cache-dir", default=None, help="where results are remembered (default: the cache)"
    )
    verify.add_argument("--workers", type=int, default=None, help="reading threads (default 4)")
    args = parser.parse_args(argv)
    report = verify_dataset(args.root, args.format, args.cache_dir, args.force, args.workers)
    if not report.ok:
        print(f"error: {report.error()}", file=sys.stderr)
        return 1
    print(summary_line(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
