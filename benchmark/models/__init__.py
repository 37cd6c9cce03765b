"""Model registry: networks built from ``conf/model/<name>.yaml`` and their checkpoint loading."""

from __future__ import annotations

from benchmark.models.checkpoints import (
    CHECKPOINT_FORMATS,
    build_from_nnunet_folder,
    load_weights,
    read_state_dict,
    shipped_weights_path,
)
from benchmark.models.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ModelConfigError,
    UnknownModelError,
)
from benchmark.models.registry import (
    available_models,
    build_model,
    count_parameters,
    load_model_config,
)

__all__ = [
    "CHECKPOINT_FORMATS",
    "CheckpointError",
    "CheckpointMismatchError",
    "ModelConfigError",
    "UnknownModelError",
    "available_models",
    "build_from_nnunet_folder",
    "build_model",
    "count_parameters",
    "load_model_config",
    "load_weights",
    "read_state_dict",
    "shipped_weights_path",
]
