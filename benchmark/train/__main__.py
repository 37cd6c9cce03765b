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

from benchmark.train.trainer import train

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Train one baseline; returns the final mean validation DSC (for Hydra sweepers)."""
    if cfg.trainer.num_threads is not None:
        # Only the command line sets threads: library code and tests leave torch's default.
        torch.set_num_threads(int(cfg.trainer.num_threads))
    output_dir = cfg.trainer.output_dir or HydraConfig.get().runtime.output_dir
    overrides = list(HydraConfig.get().overrides.task)
    command = " ".join(["python -m benchmark.train", *(shlex.quote(o) for o in overrides)])
    result = train(cfg, output_dir=output_dir, command=command)
    return result.final_val.mean_dsc


if __name__ == "__main__":
    main()
