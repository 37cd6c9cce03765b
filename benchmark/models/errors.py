"""Exceptions raised by the model registry and checkpoint loading.

Each names the offending model, key or file in its message, so that a failing sweep job says what to
fix without a debugger.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ModelConfigError",
    "UnknownModelError",
]


class ModelConfigError(ValueError):
    """A model YAML is malformed: a missing, unknown or ill-typed key."""


class UnknownModelError(ModelConfigError):
    """No ``conf/model/<name>.yaml`` exists for the requested name."""


class CheckpointError(RuntimeError):
    """A checkpoint file or folder is missing, unreadable or of an unexpected layout."""


class CheckpointMismatchError(CheckpointError):
    """A state dict does not fit the network: missing/unexpected keys or shape mismatches.

    Attributes:
        missing: parameter/buffer names the network has but the checkpoint lacks.
        unexpected: names in the checkpoint that the network does not have.
        mismatched: ``(name, checkpoint_shape, network_shape)`` for keys present in both.
    """

    def __init__(
        self,
        message: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
