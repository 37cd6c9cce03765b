"""One Hydra job: validate, skip if done, run the task, write the run files and ``status.json``.

Hydra's sweepers re-raise the first failed job after a batch, which ends the sweep and skips
``on_multirun_end``; a job inside a sweep therefore records its error in ``status.json`` and
returns, and the sweep's end-of-run callback reports failures after collecting the rest.
Outside a sweep the error is re-raised after it is recorded.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from benchmark.config import validate
from benchmark.pipeline import cache
from benchmark.pipeline.context import RunContext, config_yaml, point_columns
from benchmark.results import (
    ROW_COLUMNS,
    run_done,
    run_path,
    write_json,
    write_run_record,
    write_run_rows,
)

__all__ = ["STATUS_FILE", "run_job", "task_function"]

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


def task_function(task: str) -> Callable[[DictConfig], pd.DataFrame]:
    """The pipeline of ``task``: evaluate, sensitivity or deploy (imported on demand)."""
    if task == "evaluate":
        from benchmark.pipeline.evaluate import run_point

        return run_point
    if task == "sensitivity":
        from benchmark.analysis.sensitivity import run_sensitivity

        return run_sensitivity
    if task == "deploy":
        from benchmark.deploy.pipeline import run_deploy

        return run_deploy
    raise ValueError(f"task={task!r} is not one of evaluate, sensitivity, deploy")


def _complete(rows: pd.DataFrame, cfg: DictConfig, context: RunContext) -> pd.DataFrame:
    """Fill the per-run columns that a task's rows lack (sensitivity and deploy rows)."""
    rows = rows.copy()
    for key, value in point_columns(cfg, context).items():
        if key not in rows.columns:
            rows[key] = value
    for key in ROW_COLUMNS:
        if key not in rows.columns:
            rows[key] = float("nan") if key == "tolerance_mm" else None
    rows["run_id"], rows["config_hash"] = context.run_id, context.config_hash
    return rows


def run_job(
    cfg: DictConfig, output_dir: str | Path | None = None, in_sweep: bool = False
) -> dict[str, Any]:
    """Run one config end to end and return its status record.

    Args:
        cfg: the composed config.
        output_dir: the job's Hydra output dir (``status.json`` goes there); None for none.
        in_sweep: the job is part of a multirun (errors are recorded, not raised; a float
            precision crossed with granularities collapses to one run).

    Returns:
        ``{"status": "ok" | "skipped" | "failed", "run_id", "config_hash", "experiment_dir",
        "rows", "seconds", "error"}`` (also written to ``<output_dir>/status.json``).

    Raises:
        Exception: whatever the run raised, when not ``in_sweep``.
    """
    start = time.perf_counter()
    status: dict[str, Any] = {
        "status": "running",
        "output_dir": str(output_dir) if output_dir else None,
    }
    status_path = Path(output_dir) / STATUS_FILE if output_dir else None
    if status_path:
        write_json(status_path, status)
    try:
        checked = validate(cfg, in_sweep=in_sweep)
        context = RunContext.from_config(checked)
        status.update(
            run_id=context.run_id,
            config_hash=context.config_hash,
            experiment_dir=str(context.experiment_dir),
        )
        rows_path = run_path(context.experiment_dir, context.run_id)
        with cache.locked(rows_path):
            if checked.run.skip_existing and run_done(context.experiment_dir, context.run_id):
                status["status"] = "skipped"
                log.info("skipped %s: %s exists (same config hash)", context.run_id, rows_path)
            else:
                rows = _complete(task_function(checked.task)(checked), checked, context)
                record = {
                    **context.provenance,
                    "run_id": context.run_id,
                    "config_hash": context.config_hash,
                    "output_dir": status["output_dir"],
                    "wall_s": time.perf_counter() - start,
                }
                for key in ("calibration_s", "inference_s", "scoring_s"):
                    if key in rows.columns and len(rows):
                        record[key] = float(rows[key].iloc[0])
                write_run_record(
                    context.experiment_dir, context.run_id, config_yaml(checked), record
                )
                write_run_rows(rows, context.experiment_dir, context.run_id)
                status.update(status="ok", rows=len(rows))
                log.info("%s: %d rows -> %s", context.run_id, len(rows), rows_path)
    except Exception as exc:
        status.update(
            status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
        log.error("run failed: %s", status["error"], exc_info=True)
        if not in_sweep:
            raise
    finally:
        status["seconds"] = round(time.perf_counter() - start, 3)
        if status_path:
            write_json(status_path, status)
    return status
