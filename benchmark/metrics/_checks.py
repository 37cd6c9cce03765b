"""Input validation shared by the metric functions: loud errors that name the bad value."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "as_label_array",
    "as_labels",
    "as_spacing",
    "as_tolerance",
    "check_same_shape",
    "integer_valued",
    "tolerance_for",
]


def as_label_array(name: str, array: object) -> np.ndarray:
    """Return ``array`` as an integer (or boolean) numpy array, refusing floats."""
    if hasattr(array, "detach"):  # torch.Tensor without importing torch here
        array = array.detach().cpu().numpy()
    out = np.asarray(array)
    if out.dtype != bool and not np.issubdtype(out.dtype, np.integer):
        raise TypeError(
            f"{name} must hold integer class labels, got dtype {out.dtype}; "
            "take argmax of probabilities (or round and cast) before scoring."
        )
    return out


def integer_valued(name: str, array: np.ndarray) -> np.ndarray:
    """A label map read from disk as an integer array: integer and boolean arrays as they are,
    real floats holding only whole numbers cast to int64 (files often store labels as float).

    Raises:
        TypeError: complex, structured (RGB) or object voxels.
        ValueError: NaN, infinite or fractional values (probabilities rather than labels).
    """
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"{name} holds voxels of type {array.dtype}; label maps must hold integer class "
            "labels (integer or whole-number float voxels)."
        )
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
        raise ValueError(
            f"{name} holds non-integer values (dtype {array.dtype}); label maps must hold "
            "integer class labels, not probabilities."
        )
    return array.astype(np.int64)


def check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    """Raise if prediction and reference are not on the same grid."""
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred shape {pred.shape} != gt shape {gt.shape}: both label maps must be on the "
            "same voxel grid (resample the prediction to the reference grid first)."
        )


def as_labels(labels: Iterable[int]) -> tuple[int, ...]:
    """Labels to score as a tuple of distinct non-negative ints (a mapping gives its keys)."""
    out = tuple(int(label) for label in labels)
    if not out:
        raise ValueError("labels is empty: pass the class labels to score, e.g. [1, 2, 3].")
    if any(label < 0 for label in out) or len(set(out)) != len(out):
        raise ValueError(f"labels must be distinct non-negative integers, got {list(out)}.")
    return out


def as_spacing(spacing_mm: Sequence[float], ndim: int) -> tuple[float, ...]:
    """Voxel spacing in mm, one finite positive value per array axis."""
    try:
        out = tuple(float(s) for s in spacing_mm)
    except TypeError as err:
        raise TypeError(
            f"spacing_mm must be a sequence of {ndim} floats (mm per voxel along each axis), "
            f"got {spacing_mm!r}."
        ) from err
    if len(out) != ndim or not all(math.isfinite(s) and s > 0 for s in out):
        raise ValueError(
            f"spacing_mm={spacing_mm!r} must hold {ndim} finite positive values in mm, one per "
            "array axis in the same order as the label array."
        )
    return out


def as_tolerance(tolerance_mm: float) -> float:
    """Surface tolerance in mm: finite and non-negative."""
    out = float(tolerance_mm)
    if not (math.isfinite(out) and out >= 0):
        raise ValueError(f"tolerance_mm={tolerance_mm!r} must be a finite value >= 0 in mm.")
    return out


def tolerance_for(tolerance_mm: float | Mapping[int, float], label: int) -> float:
    """The NSD tolerance of ``label``: one value for all classes or a ``{label: mm}`` mapping."""
    if isinstance(tolerance_mm, Mapping):
        if label not in tolerance_mm:
            raise KeyError(
                f"tolerance_mm has no entry for label {label}; give one per scored label "
                f"(got labels {sorted(tolerance_mm)})."
            )
        return as_tolerance(tolerance_mm[label])
    return as_tolerance(tolerance_mm)
