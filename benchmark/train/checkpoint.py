"""Training checkpoints: written atomically every epoch, read back with ``weights_only=True``.

A checkpoint holds everything a resumed run needs to continue as if never stopped: model,
optimizer, learning-rate scheduler and AMP grad-scaler states, the number of completed epochs,
the validation history and best DSC, the accumulated training wall time, the random-number
generator states (Python, NumPy, torch CPU and CUDA) and the config it was trained under.

Everything is stored as tensors, numbers, strings, lists and dicts so that ``torch.load`` with
``weights_only=True`` reads it (NumPy's RNG state is converted to a tensor for that reason).
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.results import atomic_write_bytes

__all__ = [
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "CheckpointReadError",
    "atomic_torch_save",
    "ResumeError",
    "capture_rng_state",
    "check_same_config",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pt"
#: Bumped when the checkpoint layout changes; older files are refused with a clear message.
CHECKPOINT_VERSION = 1


class CheckpointReadError(RuntimeError):
    """A training checkpoint that cannot be read or was written by another layout version."""


class ResumeError(RuntimeError):
    """A checkpoint in the output folder was written under a different model, data or recipe."""


def check_same_config(
    saved: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]], path: Path
) -> None:
    """Refuse to resume from a checkpoint whose recorded config differs from the current one.

    Args:
        saved: ``{section: {key: value}}`` stored in the checkpoint.
        current: the same for the run about to resume.
        path: the checkpoint (for the message).

    Raises:
        ResumeError: naming every differing ``section.key`` with both values.
    """
    details = []
    for section in sorted(set(saved) | set(current)):
        mine, theirs = current.get(section, {}), saved.get(section, {})
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                details.append(
                    f"{section}.{key}: checkpoint {theirs.get(key)!r} vs now {mine.get(key)!r}"
                )
    if details:
        raise ResumeError(
            f"{path} was written by a different run ({', '.join(details)}); use another "
            "trainer.output_dir or trainer.resume=false to start over"
        )


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the target folder, then ``os.replace`` it.

    A crash mid-write leaves the previous file intact (``os.replace`` is atomic on POSIX when
    source and target are on the same file system, hence the temp file beside the target).

    Args:
        obj: anything ``torch.save`` accepts.
        path: destination file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def capture_rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's and torch's global generators (CUDA when initialised)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a training checkpoint atomically, stamping it with :data:`CHECKPOINT_VERSION`.

    Args:
        path: destination (conventionally ``<output_dir>/checkpoint.pt``).
        state: keys ``epoch``, ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``rng``,
            ``history``, ``best_val_dsc``, ``best_epoch``, ``train_wall_s``, ``config``.

    Returns:
        The written path.
    """
    return atomic_torch_save({"version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on the CPU).

    Raises:
        CheckpointReadError: unreadable file, or another layout version.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # torch's unpickling errors span many lines; the first names the problem.
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointReadError(
            f"{path}: cannot read the training checkpoint ({reason}); delete it or set "
            "trainer.resume=false to start over"
        ) from err
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        found = state.get("version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointReadError(
            f"{path}: checkpoint layout version {found!r}, expected {CHECKPOINT_VERSION}; "
            "delete it or set trainer.resume=false to start over"
        )
    return state
