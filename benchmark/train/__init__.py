"""FP32 baseline training (``python -m benchmark.train model=... data=...``).

Entry points: :func:`train` / :class:`Trainer` with a composed config (``model``, ``data`` and
``trainer`` sections, see ``conf/train.yaml``); :func:`validate` for the validation DSC.
"""

from __future__ import annotations

from benchmark.train.checkpoint import CheckpointReadError, load_checkpoint, save_checkpoint
from benchmark.train.config import TrainerConfig, TrainerConfigError
from benchmark.train.patches import PatchDataset, TrainingVolume, make_training_volume
from benchmark.train.record import build_record, export_baseline, format_dsc
from benchmark.train.trainer import EpochCallback, ResumeError, Trainer, TrainResult, train
from benchmark.train.validation import ValidationResult, validate

__all__ = [
    "CheckpointReadError",
    "EpochCallback",
    "PatchDataset",
    "ResumeError",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
    "TrainerConfigError",
    "TrainingVolume",
    "ValidationResult",
    "build_record",
    "export_baseline",
    "format_dsc",
    "load_checkpoint",
    "make_training_volume",
    "save_checkpoint",
    "train",
    "validate",
]
