"""Volumetric overlap: the Dice similarity coefficient (DSC) per class, and per-class presence.

One confusion count per class pair is all DSC needs, so every class of a case is scored from a
single ``bincount`` over the voxels instead of one boolean mask pair per class.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from benchmark.metrics._checks import as_label_array, as_labels, check_same_shape
from benchmark.metrics.conventions import (
    NNUNET_CONVENTIONS,
    EmptyConventions,
    StructureStatus,
    status_from_counts,
)

__all__ = ["dice", "overlap_counts", "structure_status"]


def overlap_counts(
    pred: np.ndarray, gt: np.ndarray, labels: Iterable[int]
) -> dict[int, tuple[int, int, int]]:
    """Per class, the voxel counts ``(intersection, |pred|, |gt|)`` from one pass.

    Args:
        pred: predicted integer label map (any shape; numpy array or CPU tensor).
        gt: reference integer label map, same shape.
        labels: class labels to count.

    Returns:
        ``{label: (|pred ∩ gt|, |pred|, |gt|)}``.

    Raises:
        TypeError: If a label map is not integer-valued.
        ValueError: If shapes differ or labels are invalid.
    """
    pred = as_label_array("pred", pred)
    gt = as_label_array("gt", gt)
    check_same_shape(pred, gt)
    labels = as_labels(labels)
    n = max(labels) + 1
    p, g = _nonnegative(pred, n).ravel(), _nonnegative(gt, n).ravel()
    pred_hist = np.bincount(p, minlength=n)
    gt_hist = np.bincount(g, minlength=n)
    agree = np.bincount(p[p == g], minlength=n)
    return {k: (int(agree[k]), int(pred_hist[k]), int(gt_hist[k])) for k in labels}


def _nonnegative(labels: np.ndarray, n: int) -> np.ndarray:
    """Label map that ``bincount`` accepts: negative values (ignore markers) become ``n``."""
    if labels.dtype == bool:
        return labels.view(np.uint8)
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        return np.where(labels < 0, n, labels)
    return labels


def structure_status(
    pred: np.ndarray, gt: np.ndarray, labels: Iterable[int]
) -> dict[int, StructureStatus]:
    """Presence of each class in prediction and reference (see :class:`StructureStatus`)."""
    return {
        k: status_from_counts(n_pred, n_gt)
        for k, (_, n_pred, n_gt) in overlap_counts(pred, gt, labels).items()
    }


def dice(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: Iterable[int],
    *,
    conventions: EmptyConventions = NNUNET_CONVENTIONS,
) -> dict[int, float]:
    r"""Dice similarity coefficient per class.

    .. math::
        \mathrm{DSC}(P, G) = \frac{2 |P \cap G|}{|P| + |G|}

    Identical to ``surface_distance.compute_dice_coefficient`` and to nnU-Net's
    ``2 tp / (2 tp + fp + fn)`` for present structures; absent structures follow ``conventions``
    (default: NaN when absent from both, 0 when absent from one).

    Args:
        pred: predicted integer label map (any shape).
        gt: reference integer label map, same shape.
        labels: class labels to score (a ``{label: name}`` mapping uses its keys).
        conventions: values for structures absent from prediction and/or reference.

    Returns:
        ``{label: DSC in [0, 1]}``.

    Example:
        >>> import numpy as np
        >>> gt = np.array([0, 1, 1, 1, 0]); pred = np.array([0, 0, 1, 1, 1])
        >>> dice(pred, gt, [1])
        {1: 0.6666666666666666}
    """
    out = {}
    for k, (inter, n_pred, n_gt) in overlap_counts(pred, gt, labels).items():
        status = status_from_counts(n_pred, n_gt)
        if status is StructureStatus.PRESENT:
            out[k] = 2.0 * inter / (n_pred + n_gt)
        else:
            out[k] = conventions.overlap(status)
    return out
