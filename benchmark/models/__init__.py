"""Model registry: networks built from ``conf/model/<name>.yaml`` and their checkpoint loading."""

from __future__ import annotations

from benchmark.models.checkpoints import (
    CHECKPOINT_FORMATS,
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
from benchmark.models.nnunet_folder import NnUNetFolder, is_nnunet_folder, open_nnunet_folder
from benchmark.models.outputs import full_resolution_logits
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
    "NnUNetFolder",
    "build_model",
    "count_parameters",
    "full_resolution_logits",
    "is_nnunet_folder",
    "load_model_config",
    "load_weights",
    "open_nnunet_folder",
    "read_state_dict",
    "shipped_weights_path",
]
