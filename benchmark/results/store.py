"""Run files and the consolidated table of an experiment.

Layout of ``<results_dir>/<experiment>/``::

    runs/<run_id>.parquet   tidy rows of one run (written last: its presence marks the run done)
    runs/<run_id>.yaml      the run's resolved config
    runs/<run_id>.json      provenance and timings of the run
    results.parquet         all run files concatenated (rebuilt by :func:`collect`), and the
                            recorded runs no run file backs (a clone of committed results)

Every file is written to a temporary name in the same folder and renamed into place, so a reader
(or a restarted sweep) sees either the whole file or none of it, even when parallel workers or a
killed process are involved.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.results.schema import ROW_COLUMNS, SchemaError, check_rows

__all__ = [
    "RESULTS_FILE",
    "atomic_write_bytes",
    "atomic_write_text",
    "collect",
    "recorded_weights",
    "run_done",
    "run_path",
    "write_json",
    "write_run_record",
    "write_run_rows",
]

RESULTS_FILE = "results.parquet"
_RUNS = "runs"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode())


def write_json(path: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Atomically write ``record`` as indented JSON (non-JSON values as their ``str``)."""
    return atomic_write_text(path, json.dumps(dict(record), indent=2, default=str) + "\n")


def run_path(experiment_dir: str | os.PathLike[str], run_id: str, suffix: str = ".parquet") -> Path:
    """Path of one of a run's files (``.parquet`` rows, ``.yaml`` config, ``.json`` record)."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise ValueError(f"run_id={run_id!r} must be a non-empty file name without '/'")
    return Path(experiment_dir) / _RUNS / f"{run_id}{suffix}"


def run_done(experiment_dir: str | os.PathLike[str], run_id: str) -> bool:
    """Whether the run's rows file exists (it is written last, so the run is complete)."""
    return run_path(experiment_dir, run_id).is_file()


def recorded_weights(experiment_dir: str | os.PathLike[str], run_id: str) -> str | None:
    """The weights digest a finished run was made with (its record's ``weights``); ``None`` for
    records written before runs recorded it, or a missing or unreadable record."""
    path = run_path(experiment_dir, run_id, ".json")
    try:
        return json.loads(path.read_text()).get("weights")
    except (OSError, ValueError):
        return None


def write_run_rows(rows: pd.DataFrame, experiment_dir: str | os.PathLike[str], run_id: str) -> Path:
    """Write one run's tidy rows to ``runs/<run_id>.parquet`` atomically.

    Args:
        rows: tidy rows with at least :data:`~benchmark.results.schema.ROW_COLUMNS`.
        experiment_dir: ``<results_dir>/<experiment>``.
        run_id: the run's id (file name stem).

    Returns:
        The path written.

    Raises:
        SchemaError: a required column is missing, or ``run_id`` differs from the rows'.
    """
    check_rows(rows, where=f"run {run_id}")
    ids = set(rows["run_id"].astype(str))
    if ids and ids != {run_id}:
        raise SchemaError(f"run {run_id}: rows carry run_id values {sorted(ids)}")
    path = run_path(experiment_dir, run_id)
    ordered = rows[list(ROW_COLUMNS) + [c for c in rows.columns if c not in ROW_COLUMNS]]
    return atomic_write_bytes(path, ordered.reset_index(drop=True).to_parquet(index=False))


def write_run_record(
    experiment_dir: str | os.PathLike[str],
    run_id: str,
    config_yaml: str,
    record: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write the run's resolved config (``.yaml``) and provenance/timings (``.json``) atomically.

    Written before the rows, so every rows file has its config and record next to it.
    """
    cfg_path = atomic_write_text(run_path(experiment_dir, run_id, ".yaml"), config_yaml)
    rec_path = write_json(run_path(experiment_dir, run_id, ".json"), record)
    return cfg_path, rec_path


def collect(experiment_dir: str | os.PathLike[str], *, keep_recorded: bool = True) -> pd.DataFrame:
    """Rebuild ``<experiment_dir>/results.parquet`` from the run files and return it.

    The consolidated file is derived, never appended to: runs killed before their rows file was
    renamed into place simply do not appear, a rewritten run replaces its rows, and re-running
    :func:`collect` is idempotent. Temporary files of runs in flight are ignored. Run files are
    not committed (``runs/`` is ignored), so a clone of committed results holds rows no run file
    backs: with ``keep_recorded`` those runs are kept, so that adding one point to a cloned
    experiment does not drop the rest; without it the table holds run files only (the way to
    drop a run: delete its run file, then collect with ``keep_recorded=False``).

    Raises:
        FileNotFoundError: ``experiment_dir`` does not exist.
        SchemaError: a run file lacks required columns (named with its path).
    """
    experiment_dir = Path(experiment_dir)
    if not experiment_dir.is_dir():
        raise FileNotFoundError(
            f"no results folder {experiment_dir}; run the experiment first "
            "(python -m benchmark.run experiment=NAME)"
        )
    frames = []
    for path in sorted((experiment_dir / _RUNS).glob("*.parquet")):
        frame = pd.read_parquet(path)
        check_rows(frame, where=str(path))
        frames.append(frame)
    frames = [f for f in frames if len(f)]
    if keep_recorded:
        frames = _recorded_only(experiment_dir, frames) + frames
    if frames:
        table = pd.concat(frames, ignore_index=True)
    else:
        table = pd.DataFrame({c: pd.Series(dtype="object") for c in ROW_COLUMNS})
    atomic_write_bytes(experiment_dir / RESULTS_FILE, table.to_parquet(index=False))
    return table


def _recorded_only(experiment_dir: Path, run_frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The rows of the existing consolidated file whose runs have no run file."""
    path = experiment_dir / RESULTS_FILE
    if not path.is_file():
        return []
    recorded = _read_parquet(path)
    check_rows(recorded, where=str(path))
    filed = {run for frame in run_frames for run in frame["run_id"].unique()}
    kept = recorded[~recorded["run_id"].isin(filed)]
    return [kept] if len(kept) else []


def _read_parquet(path: Path) -> pd.DataFrame:
    """A parquet file, or a one-line ValueError that names the way to rebuild it."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(
            f"{path} is not a readable parquet file ({exc}); rebuild it from the run files "
            "alone with python -m benchmark.results collect --run-files-only <its folder>"
        ) from exc


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Tidy rows from a results parquet or a run file, or the ``results.parquet`` of a results
    folder (rebuilt from its run files when absent): what every reader of results opens.

    Raises:
        FileNotFoundError: nothing readable at ``path``.
        ValueError: ``path`` is not a parquet file (truncated, or some other file), or it holds
            no tidy rows (no ``model``/``metric``/``value`` columns).
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
    frame = _read_parquet(path)
    missing = [c for c in ("model", "metric", "value") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} is not a tidy results file: no column(s) {missing}")
    return frame
