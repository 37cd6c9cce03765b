"""``python -m benchmark.train model=<name> data=<name> [trainer.key=value ...]`` (Hydra).

Composes ``conf/train.yaml`` and calls :func:`benchmark.train.train`; outputs go to
``trainer.output_dir`` or Hydra's run folder (``outputs/train/<model>_<data>_seed<seed>`` by
default, a fixed path so that re-running an interrupted command resumes it).
"""

from __future__ import annotations

import shlex

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from benchmark.cli import one_line_errors, run_cli
from benchmark.models.stride import input_grid, size_problem
from benchmark.train.config import TrainerConfigError
from benchmark.train.trainer import train

__all__ = ["check_patch_size", "main"]


def check_patch_size(cfg: DictConfig) -> None:
    """Check the training patch (also the validation ROI) against the network's total stride.

    Raises:
        TrainerConfigError: naming the patch size, the stride and a size that fits.
    """
    explicit = cfg.trainer.get("patch_size") is not None
    patch = [int(s) for s in (cfg.trainer.patch_size if explicit else cfg.model.patch_size)]
    grid = input_grid(cfg.model.net, source=f"model {cfg.model.name!r}")
    problem = None if grid is None else size_problem(patch, grid)
    if problem:
        key = "trainer.patch_size" if explicit else "model.patch_size"
        raise TrainerConfigError(f"{key}={patch} does not fit model={cfg.model.name}: it {problem}")


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Train one baseline; returns the final mean validation DSC (for Hydra sweepers)."""
    if cfg.trainer.num_threads is not None:
        # Only the command line sets threads: library code and tests leave torch's default.
        torch.set_num_threads(int(cfg.trainer.num_threads))
    output_dir = cfg.trainer.output_dir or HydraConfig.get().runtime.output_dir
    overrides = list(HydraConfig.get().overrides.task)
    command = " ".join(["python -m benchmark.train", *(shlex.quote(o) for o in overrides)])
    with one_line_errors():
        check_patch_size(cfg)
        result = train(cfg, output_dir=output_dir, command=command)
    return result.final_val.mean_dsc


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
