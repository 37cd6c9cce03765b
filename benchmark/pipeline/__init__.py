"""The evaluation task (one sweep point to tidy rows) and the job around every task."""

from __future__ import annotations

from benchmark.pipeline.evaluate import run_point
from benchmark.pipeline.job import STATUS_FILE, Task, run_job

__all__ = ["STATUS_FILE", "Task", "run_job", "run_point"]
