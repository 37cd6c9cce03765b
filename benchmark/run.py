"""``python -m benchmark.run [-m] key=value ...``: the one Hydra entry point.

Hydra composes the config; :func:`benchmark.config.build_point` checks it once and turns it into
the frozen :class:`~benchmark.schema.RunPoint`; :data:`TASKS` maps ``task=`` to the function
that takes it; :func:`benchmark.pipeline.run_job` skips a run whose config hash already has
results and writes the run files and ``status.json``. ``experiment=NAME`` selects a preset
from ``conf/experiment/``; the preset sweeps set ``hydra.mode: MULTIRUN`` so they need no
``-m``. ``--config-name train`` composes ``conf/train.yaml`` instead, whose ``task: train``
trains an FP32 baseline (what ``python -m benchmark.train`` runs).

A single run is checked before any work (:func:`benchmark.preflight.check_point`); a sweep
checks all its points before its first job (:class:`benchmark.callbacks.CollectResults`).
Errors end as one line on stderr and Ctrl-C as one line (:func:`benchmark.errors.run_cli`;
``MEDQBENCH_TRACEBACK=1`` shows tracebacks).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from benchmark.analysis.sensitivity import run_sensitivity
from benchmark.config import build_point, register_configs
from benchmark.deploy.pipeline import run_deploy
from benchmark.deploy.summary import finished_run_text
from benchmark.errors import one_line_errors, run_cli
from benchmark.pipeline import Task, run_job, run_point
from benchmark.preflight import check_point
from benchmark.train.task import run_training

__all__ = ["TASKS", "main"]

#: ``task=`` -> the function that runs it on a run point (and its provenance).
TASKS: dict[str, Task] = {
    "evaluate": run_point,
    "sensitivity": run_sensitivity,
    "deploy": run_deploy,
}

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one job of a run or sweep (see :func:`benchmark.pipeline.run_job`)."""
    runtime = HydraConfig.get()
    overrides = list(runtime.overrides.task)
    with one_line_errors():
        if cfg.get("task") == "train":
            plain = OmegaConf.to_container(cfg, resolve=True)
            return run_training(plain, runtime.runtime.output_dir, overrides)
        in_sweep = runtime.mode == RunMode.MULTIRUN
        # a sweep's points were all checked (input sizes included) before its first job
        status = run_job(
            (lambda: build_point(cfg, in_sweep=True)) if in_sweep else (lambda: check_point(cfg)),
            TASKS,
            output_dir=runtime.runtime.output_dir,
            in_sweep=in_sweep,
            log_folder=Path(cfg.paths.log_dir) / cfg.experiment_name,
            overrides=overrides,
        )
    if status.get("task") == "deploy" and status["status"] in ("ok", "skipped"):
        print(finished_run_text(status))  # a deploy run ends with its backends' table
    return None


#: What Ctrl-C prints: finished runs are kept, and the same command skips them.
INTERRUPTED = "interrupted: finished runs are kept; the same command resumes, skipping them"

if __name__ == "__main__":
    raise SystemExit(run_cli(main, interrupted=INTERRUPTED))
