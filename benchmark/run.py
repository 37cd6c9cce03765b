"""``python -m benchmark.run [-m] key=value ...``: the Hydra entry point.

One job = compose the config, then :func:`benchmark.pipeline.run_job` (validate, skip if its
config hash already has results, run the task, write the run files and ``status.json``).
``experiment=NAME`` selects a preset from ``conf/experiment/``; the preset sweeps set
``hydra.mode: MULTIRUN`` so they need no ``-m``.

A single run is checked before any work (:func:`benchmark.pipeline.preflight.check_point`); a
sweep checks all its points before its first job. Errors end as one line on stderr and Ctrl-C
as one line (:func:`benchmark.cli.run_cli`; ``MEDQBENCH_TRACEBACK=1`` shows tracebacks).
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmark.cli import one_line_errors, run_cli
from benchmark.config import register_configs
from benchmark.pipeline import run_job
from benchmark.pipeline.preflight import check_point

__all__ = ["main"]

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run one job of a run or sweep (see :func:`benchmark.pipeline.run_job`)."""
    runtime = HydraConfig.get()
    in_sweep = runtime.mode == RunMode.MULTIRUN
    with one_line_errors():
        if not in_sweep:  # a sweep's points were all checked before its first job
            check_point(cfg)
        run_job(cfg, output_dir=runtime.runtime.output_dir, in_sweep=in_sweep)


#: What Ctrl-C prints: finished runs are kept, and the same command skips them.
INTERRUPTED = "interrupted: finished runs are kept; the same command resumes, skipping them"

if __name__ == "__main__":
    raise SystemExit(run_cli(main, interrupted=INTERRUPTED))
