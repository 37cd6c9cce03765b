"""Schema of the ``trainer:`` section of ``conf/train.yaml``, validated before any work starts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["OPTIMIZERS", "RESUME_KEYS", "TrainerConfig", "TrainerConfigError"]

OPTIMIZERS = ("adamw", "sgd")

#: Keys that change what a resumed run computes; a checkpoint written under other values is
#: refused (``epochs`` may grow, which lengthens the poly schedule from that point on).
RESUME_KEYS = (
    "iterations_per_epoch",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "poly_exponent",
    "patch_size",
    "foreground_fraction",
    "flip_prob",
    "flip_axes",
    "intensity_prob",
    "intensity_scale",
    "intensity_shift",
    "grad_clip_norm",
    "seed",
)


class TrainerConfigError(ValueError):
    """An invalid ``trainer.*`` value; the message names the key and the allowed values."""


@dataclass
class TrainerConfig:
    """Hyper-parameters and run options of :class:`benchmark.train.Trainer`.

    Defaults are a short schedule for trying a model out; the shipped phantom baselines set a
    longer one on the command line, which each baseline's record (``<name>.json``, ``command``)
    names. ``conf/train.yaml`` gives the reasoning behind each default.

    Example:
        ``TrainerConfig(epochs=2, iterations_per_epoch=4, patch_size=[16, 32, 32])`` trains
        2 x 4 iterations of batches ``[2, C, 16, 32, 32]``.
    """

    epochs: int = 20
    iterations_per_epoch: int = 25
    batch_size: int = 2
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 3e-5
    momentum: float = 0.99
    poly_exponent: float = 0.9
    patch_size: list[int] | None = None
    foreground_fraction: float = 0.67
    flip_prob: float = 0.0
    flip_axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    intensity_prob: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    grad_clip_norm: float | None = 12.0
    val_every: int = 5
    val_overlap: float = 0.5
    val_sw_batch_size: int = 2
    max_val_cases: int | None = None
    seed: int = 0
    device: str = "cpu"
    amp: bool = True
    num_workers: int = 0
    num_threads: int | None = None
    output_dir: str | None = None
    resume: bool = True
    progress: bool = True
    export_dir: str | None = None

    def __post_init__(self) -> None:
        positive = (
            "epochs",
            "iterations_per_epoch",
            "batch_size",
            "val_every",
            "val_sw_batch_size",
        )
        for key in positive:
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise TrainerConfigError(
                    f"trainer.{key} must be an int >= 1, got {getattr(self, key)!r}"
                )
        if self.optimizer not in OPTIMIZERS:
            raise TrainerConfigError(
                f"trainer.optimizer={self.optimizer!r} is unknown; use one of {list(OPTIMIZERS)}"
            )
        if not self.lr > 0:
            raise TrainerConfigError(f"trainer.lr must be > 0, got {self.lr!r}")
        for key in ("foreground_fraction", "flip_prob", "intensity_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise TrainerConfigError(
                    f"trainer.{key} must lie in [0, 1], got {getattr(self, key)!r}"
                )
        if not 0.0 <= self.val_overlap < 1.0:
            raise TrainerConfigError(
                f"trainer.val_overlap must lie in [0, 1), got {self.val_overlap!r}"
            )
        if self.patch_size is not None and (
            len(self.patch_size) != 3 or min(int(s) for s in self.patch_size) < 1
        ):
            raise TrainerConfigError(
                f"trainer.patch_size must be null (the model's patch_size) or [D, H, W], "
                f"got {self.patch_size!r}"
            )
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise TrainerConfigError(
                f"trainer.flip_axes must hold spatial axes 0 (D), 1 (H), 2 (W), got {self.flip_axes!r}"
            )
        if self.num_workers < 0:
            raise TrainerConfigError(f"trainer.num_workers must be >= 0, got {self.num_workers!r}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> TrainerConfig:
        """Build from the ``trainer`` mapping of a composed config (unknown keys are errors)."""
        if cfg is None:
            return cls()
        values = (
            OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainerConfigError(f"unknown trainer key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (for checkpoints and the training record)."""
        return dataclasses.asdict(self)
