"""The runner's pipeline: one sweep point from config to tidy rows, and the Hydra job around it."""

from __future__ import annotations

from benchmark.pipeline.context import RunContext, experiment_dir
from benchmark.pipeline.evaluate import quant_spec, roi_size, run_point
from benchmark.pipeline.job import STATUS_FILE, run_job

__all__ = [
    "STATUS_FILE",
    "RunContext",
    "experiment_dir",
    "quant_spec",
    "roi_size",
    "run_job",
    "run_point",
]
