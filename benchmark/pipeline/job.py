"""One Hydra job: validate, skip if done, run the task, write the run files and ``status.json``.

Hydra's sweepers re-raise the first failed job after a batch, which ends the sweep and skips
``on_multirun_end``; a job inside a sweep therefore records its error in ``status.json`` and
returns, and the sweep's end-of-run callback reports failures after collecting the rest.
Outside a sweep the error is re-raised after it is recorded, and a run that finished (or was
skipped) prints its summary line (:mod:`benchmark.pipeline.summary`).

A job holds a lock on its ``status.json`` while it runs. Ctrl-C and SIGTERM are recorded as
``interrupted``; a job killed outright leaves ``running`` behind, and the next job of the same
experiment marks every such file whose lock nobody holds any more as ``interrupted``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

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

__all__ = ["STATUS_FILE", "Terminated", "mark_interrupted", "run_job", "task_function"]

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
_GONE = (
    "the process ended without recording a result (killed, or the machine stopped); "
    "rerunning the same command reruns it"
)


class Terminated(SystemExit):
    """SIGTERM arrived during a job (exit status 143, as the signal's default)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def _catch_sigterm(stack: contextlib.ExitStack) -> None:
    """Turn SIGTERM into :class:`Terminated` for the job, unless someone else handles it
    (submitit's handlers stay in charge on a cluster) or this is not the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    stack.callback(signal.signal, signal.SIGTERM, previous)


def mark_interrupted(folder: str | Path, skip: Path | None = None) -> list[Path]:
    """Mark the ``status.json`` files under ``folder`` left ``running`` by a dead job.

    A running job holds the lock of its status file (:func:`benchmark.pipeline.cache.locked`);
    a file whose lock can be taken at once belongs to a job that is gone.

    Returns:
        The files marked ``interrupted``.
    """
    marked: list[Path] = []
    folder = Path(folder)
    for path in sorted(folder.rglob(STATUS_FILE)) if folder.is_dir() else []:
        if path == skip or _status_of(path) != "running":
            continue
        # TimeoutError: its job is alive; OSError: not ours to write (left as it is)
        with contextlib.suppress(TimeoutError, OSError):
            with cache.locked(path, timeout_s=0):
                if _status_of(path) == "running":
                    record = json.loads(path.read_text())
                    record.update(status="interrupted", error=_GONE)
                    write_json(path, record)
                    marked.append(path)
                    _drop_run_lock(record)
    return marked


def _drop_run_lock(record: dict[str, Any]) -> None:
    """Remove the lock file a killed job left on its rows, unless a live job holds it again."""
    if record.get("experiment_dir") and record.get("run_id"):
        with contextlib.suppress(TimeoutError, OSError):
            with cache.locked(run_path(record["experiment_dir"], record["run_id"]), timeout_s=0):
                pass


def _status_of(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _interruption(exc: BaseException) -> str:
    if isinstance(exc, Terminated):
        return "terminated by SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by Ctrl-C (KeyboardInterrupt)"
    return f"{type(exc).__name__}: {exc}"


def _print_summary(checked: DictConfig, context: RunContext) -> None:
    """Print the run's summary line; a failure here is reported, the run stays done."""
    from benchmark.pipeline.summary import summary_for_run

    overrides = None
    with contextlib.suppress(ImportError, ValueError):
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            overrides = list(HydraConfig.get().overrides.task)
    try:
        line = summary_for_run(context.experiment_dir, context.run_id, checked, overrides)
    except Exception as exc:  # the rows are written; only the summary is lost
        log.warning("no summary for %s: %s: %s", context.run_id, type(exc).__name__, exc)
        return
    print(line, flush=True)


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
        "rows", "seconds", "error"}`` (also written to ``<output_dir>/status.json``, which
        says ``running`` meanwhile and ``interrupted`` after Ctrl-C or SIGTERM).

    Raises:
        Exception: whatever the run raised, when not ``in_sweep``.
        KeyboardInterrupt, Terminated: after recording the interruption.
    """
    start = time.perf_counter()
    status: dict[str, Any] = {
        "status": "running",
        "output_dir": str(output_dir) if output_dir else None,
    }
    status_path = Path(output_dir) / STATUS_FILE if output_dir else None
    logs = OmegaConf.select(cfg, "paths.log_dir"), OmegaConf.select(cfg, "experiment_name")
    if all(isinstance(v, str) for v in logs):
        for path in mark_interrupted(Path(logs[0]) / logs[1], skip=status_path):
            log.warning("marked %s interrupted: its job ended without a result", path)
    guard = contextlib.ExitStack()  # released in `finally`, after the last status is written
    if status_path:
        guard.enter_context(cache.locked(status_path))
        write_json(status_path, status)
    _catch_sigterm(guard)
    try:
        checked = validate(cfg, in_sweep=in_sweep)
        context = RunContext.from_config(checked)
        status.update(
            run_id=context.run_id,
            config_hash=context.config_hash,
            experiment_dir=str(context.experiment_dir),
        )
        if status_path:  # a job that dies from here on is known by its run
            write_json(status_path, status)
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
        if not in_sweep:
            raise  # reported once, by the entry point (benchmark.cli)
        from benchmark.cli import error_message, traceback_requested

        where = f" (traceback in {status_path})" if status_path else ""
        log.error("run failed: %s%s", error_message(exc), where, exc_info=traceback_requested())
    except (KeyboardInterrupt, SystemExit) as exc:  # recorded, then the process ends as asked
        status.update(status="interrupted", error=_interruption(exc))
        raise
    finally:
        status["seconds"] = round(time.perf_counter() - start, 3)
        try:
            if status_path:
                write_json(status_path, status)
        finally:
            guard.close()
    if not in_sweep and status["status"] in ("ok", "skipped") and checked.task == "evaluate":
        _print_summary(checked, context)
    return status
