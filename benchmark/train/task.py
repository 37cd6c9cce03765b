"""``task=train``: one FP32 baseline from a plain config (what ``python -m benchmark.train`` runs
through the entry point with ``conf/train.yaml``)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmark.models.stride import input_grid, size_problem
from benchmark.train.config import TrainerConfigError
from benchmark.train.trainer import train

__all__ = ["check_patch_size", "run_training"]


def check_patch_size(cfg: Mapping[str, Any]) -> None:
    """Check the training patch (also the validation ROI) against the network's total stride.

    Raises:
        TrainerConfigError: naming the patch size, the stride and a size that fits.
    """
    trainer, model = cfg.get("trainer") or {}, cfg["model"]
    explicit = trainer.get("patch_size") is not None
    patch = [int(s) for s in (trainer["patch_size"] if explicit else model["patch_size"])]
    grid = input_grid(model["net"], source=f"model {model['name']!r}")
    problem = None if grid is None else size_problem(patch, grid)
    if problem:
        key = "trainer.patch_size" if explicit else "model.patch_size"
        raise TrainerConfigError(f"{key}={patch} does not fit model={model['name']}: it {problem}")


def run_training(cfg: Mapping[str, Any], output_dir: str | Path, overrides: Sequence[str]) -> float:
    """Train one baseline into ``trainer.output_dir`` (else ``output_dir``); returns the final
    mean validation DSC (for Hydra sweepers)."""
    trainer = cfg.get("trainer") or {}
    if trainer.get("num_threads") is not None:
        # Only the command line sets threads: library code and tests leave torch's default.
        torch.set_num_threads(int(trainer["num_threads"]))
    command = " ".join(["python -m benchmark.train", *(shlex.quote(o) for o in overrides)])
    check_patch_size(cfg)
    result = train(cfg, output_dir=trainer.get("output_dir") or output_dir, command=command)
    return result.final_val.mean_dsc
