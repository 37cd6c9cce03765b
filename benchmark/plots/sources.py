"""Where the notebooks find their results: an environment variable, else the first experiment
folder under ``results/`` that has any, else an error naming the command that makes them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import benchmark
from benchmark.results import RESULTS_FILE

__all__ = ["REPOSITORY", "find_results"]

#: The repository root (``results/`` lives here, whatever the working directory).
REPOSITORY = Path(benchmark.__file__).resolve().parents[1]


def find_results(experiments: Sequence[str], env_var: str, root: Path | None = None) -> Path:
    """The results to read: ``$env_var`` when set, else ``<root>/results/<experiment>`` for
    the first experiment that has a ``results.parquet`` or run files.

    Args:
        experiments: experiment names in order of preference (``["demo", "smoke"]``).
        env_var: environment variable that overrides the search (a parquet file or folder).
        root: repository root (default :data:`REPOSITORY`).

    Raises:
        FileNotFoundError: nothing found; the message gives the commands that produce it.
    """
    override = os.environ.get(env_var)
    if override:
        return Path(override)
    base = (root or REPOSITORY) / "results"
    for name in experiments:
        folder = base / name
        if (folder / RESULTS_FILE).is_file() or any((folder / "runs").glob("*.parquet")):
            return folder
    commands = "; ".join(f"python -m benchmark.run experiment={n}" for n in experiments)
    raise FileNotFoundError(
        f"no results under {base} for {list(experiments)} and ${env_var} is unset; run one of: "
        f"{commands}"
    )
