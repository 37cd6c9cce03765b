"""``python -m benchmark.run [-m] key=value ...``: the Hydra entry point.

One job = compose the config, then :func:`benchmark.pipeline.run_job` (validate, skip if its
config hash already has results, run the task, write the run files and ``status.json``).
``experiment=NAME`` selects a preset from ``conf/experiment/``; the preset sweeps set
``hydra.mode: MULTIRUN`` so they need no ``-m``.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmark.config import register_configs
from benchmark.pipeline import run_job

__all__ = ["main"]

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run one job of a run or sweep (see :func:`benchmark.pipeline.run_job`)."""
    runtime = HydraConfig.get()
    run_job(cfg, output_dir=runtime.runtime.output_dir, in_sweep=runtime.mode == RunMode.MULTIRUN)


if __name__ == "__main__":
    main()
