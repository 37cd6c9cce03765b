"""Run a composed config the way the entry point does: build the point once, then the task."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig

from benchmark.config import build_point
from benchmark.pipeline import run_job
from benchmark.points.context import RunContext
from benchmark.run import TASKS
from benchmark.schema import RunPoint

CONF = Path(__file__).resolve().parents[1] / "conf"


def context_of(cfg: DictConfig | RunPoint, in_sweep: bool = False) -> RunContext:
    """The run (point and provenance) of a composed config or of a point built already."""
    point = cfg if isinstance(cfg, RunPoint) else build_point(cfg, in_sweep=in_sweep)
    return RunContext.start(point)


def run_task(cfg: DictConfig | RunPoint):
    """The rows of the config's task, as one job computes them (without writing files)."""
    context = context_of(cfg)
    return TASKS[context.point.task](context)


def run_config(cfg: DictConfig, output_dir=None, in_sweep: bool = False) -> dict:
    """:func:`benchmark.pipeline.run_job` on a composed config, as :mod:`benchmark.run` calls it
    once the preflight (input size) has passed."""
    return run_job(
        lambda: build_point(cfg, in_sweep=in_sweep),
        TASKS,
        output_dir=output_dir,
        in_sweep=in_sweep,
        log_folder=Path(cfg.paths.log_dir) / cfg.experiment_name,
    )


def conf_settings(cls: type, group: str, option: str = "default", **changes):
    """``conf/<group>/<option>.yaml`` as an instance of its schema ``cls``, with ``changes``
    (the values a run of that option gets; constructing it runs the schema's own checks)."""
    values = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())
    values.pop("defaults", None)
    return cls(**{**values, **changes})
