"""One job: build the run point, skip if done, run the task, write the run files and
``status.json``. The entry point (:mod:`benchmark.run`) hands in how to build the point and
its table of tasks, so this module knows neither Hydra nor the tasks.

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.errors import error_message, raise_if_interrupted, traceback_requested
from benchmark.pipeline.summary import summary_for_run
from benchmark.points import cache
from benchmark.points.context import RunContext, point_columns
from benchmark.results import (
    ROW_COLUMNS,
    recorded_weights,
    run_done,
    run_path,
    write_json,
    write_run_record,
    write_run_rows,
)

__all__ = ["STATUS_FILE", "Task", "Terminated", "mark_interrupted", "run_job"]

#: A task: the run (point and provenance) in, its tidy rows out.
Task = Callable[[RunContext], pd.DataFrame]

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

    A running job holds the lock of its status file (:func:`benchmark.points.cache.locked`);
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


def _print_summary(context: RunContext, overrides: Sequence[str] | None) -> None:
    """Print the run's summary line; a failure here is reported, the run stays done."""
    try:
        line = summary_for_run(context.experiment_dir, context.run_id, context.point, overrides)
    except Exception as exc:  # the rows are written; only the summary is lost
        log.warning("no summary for %s: %s: %s", context.run_id, type(exc).__name__, exc)
        return
    print(line, flush=True)


def _complete(rows: pd.DataFrame, context: RunContext) -> pd.DataFrame:
    """Fill the per-run columns that a task's rows lack (sensitivity and deploy rows)."""
    rows = rows.copy()
    for key, value in point_columns(context).items():
        if key not in rows.columns:
            rows[key] = value
    for key in ROW_COLUMNS:
        if key not in rows.columns:
            rows[key] = float("nan") if key == "tolerance_mm" else None
    rows["run_id"], rows["config_hash"] = context.run_id, context.config_hash
    return rows


def _run_task(
    task: Task, context: RunContext, output_dir: str | None, start: float
) -> pd.DataFrame:
    """Run the task and write its rows and run record; the rows file is written last, so a
    run counts as done (:func:`~benchmark.results.run_done`) only once everything is there."""
    point = context.point
    rows = _complete(task(context), context)
    record = {
        **context.provenance,
        "run_id": context.run_id,
        "config_hash": context.config_hash,
        "spec": point.spec.to_dict(),
        "output_dir": output_dir,
        "weights": context.weights,
        "wall_s": time.perf_counter() - start,
    }
    for key in ("calibration_s", "inference_s", "scoring_s"):
        if key in rows.columns and len(rows):
            record[key] = float(rows[key].iloc[0])
    write_run_record(context.experiment_dir, context.run_id, point.resolved_yaml, record)
    write_run_rows(rows, context.experiment_dir, context.run_id)
    return rows


def _done_with_these_weights(context: RunContext) -> bool:
    """Whether the run exists and was made with the weights it would load now. The config hash
    names the checkpoint, not what it holds: retrained or replaced weights make the run again
    rather than keep its old rows (records from before runs recorded their weights count as
    made with these)."""
    if not run_done(context.experiment_dir, context.run_id):
        return False
    made_with = recorded_weights(context.experiment_dir, context.run_id)
    if made_with is None or made_with == context.weights:
        return True
    log.warning(
        "%s was made with other weights (%s, now %s): running it again",
        context.run_id,
        made_with,
        context.weights,
    )
    return False


def run_job(
    make_point: Callable[[], Any],
    tasks: Mapping[str, Task],
    output_dir: str | Path | None = None,
    in_sweep: bool = False,
    log_folder: str | Path | None = None,
    overrides: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run one point end to end and return its status record.

    Args:
        make_point: builds the checked :class:`~benchmark.schema.RunPoint` (its errors are
            recorded like the task's).
        tasks: the task of each ``task=`` name.
        output_dir: the job's output dir (``status.json`` goes there); None for none.
        in_sweep: the job is part of a multirun (errors are recorded, not raised).
        log_folder: the experiment's log folder, searched for jobs that died ``running``.
        overrides: the command line's overrides (for the FP32 command of the summary line).

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
    if log_folder is not None:
        for path in mark_interrupted(log_folder, skip=status_path):
            log.warning("marked %s interrupted: its job ended without a result", path)
    guard = contextlib.ExitStack()  # released in `finally`, after the last status is written
    if status_path:
        guard.enter_context(cache.locked(status_path))
        write_json(status_path, status)
    _catch_sigterm(guard)
    try:
        raise_if_interrupted()  # a Ctrl-C that an earlier job's fork hook dropped
        point = make_point()
        context = RunContext.start(point)
        status.update(
            task=point.task,
            run_id=context.run_id,
            config_hash=context.config_hash,
            experiment_dir=str(context.experiment_dir),
        )
        if status_path:  # a job that dies from here on is known by its run
            write_json(status_path, status)
        rows_path = run_path(context.experiment_dir, context.run_id)
        with cache.locked(rows_path):
            if point.run.skip_existing and _done_with_these_weights(context):
                status["status"] = "skipped"
                log.info("skipped %s: %s exists (same config hash)", context.run_id, rows_path)
            else:
                rows = _run_task(tasks[point.task], context, status["output_dir"], start)
                status.update(status="ok", rows=len(rows))
                log.info("%s: %d rows -> %s", context.run_id, len(rows), rows_path)
    except Exception as exc:
        status.update(
            status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
        if not in_sweep:
            raise  # reported once, by the entry point (benchmark.errors)
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
    if not in_sweep and status["status"] in ("ok", "skipped") and point.task == "evaluate":
        _print_summary(context, overrides)
    return status
