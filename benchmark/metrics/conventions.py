"""What a metric is worth when a structure is missing from the prediction, the reference or both.

A structure (label) can be absent from a case for good reasons (a resected gallbladder, an organ
outside the field of view) and a model can miss it or hallucinate it. The formulas of DSC, NSD and
HD95 are undefined or degenerate there, so every benchmark picks a convention; picking a different
one moves mean scores by whole points on datasets like BTCV, where some organs are absent in some
cases. The convention is therefore explicit, configurable and recorded per value as a
:class:`StructureStatus`, so tables can mark such cells instead of silently averaging them.

Default (:data:`NNUNET_CONVENTIONS`), and why:

* **both empty -> NaN**, excluded from means. This is what nnU-Net's evaluation does
  (``nnunetv2/evaluation/evaluate_predictions.py``: Dice is NaN when ``tp + fp + fn == 0`` and
  class means use ``nanmean``), what MONAI's ``DiceMetric`` / ``compute_surface_dice`` return
  (NaN for "neither present", ignored by their NaN-aware reduction), and what DeepMind's
  ``surface-distance`` gives (``compute_dice_coefficient`` and the NSD ratio are 0/0). The
  MedQuanBench convention is not stated in its public abstract or tables; its models come
  from the nnU-Net and MONAI frameworks, whose evaluations both use NaN, so NaN keeps our
  means comparable with its tables. Scoring "nothing predicted where nothing is" as a perfect
  1.0 would instead reward every model equally on absent organs and inflate means.
* **reference empty but predicted -> 0** for DSC and NSD (what the formulas give: no overlap,
  no surface agreement), **inf** for HD95 (no reference surface to be near).
* **predicted empty but in the reference -> 0** for DSC and NSD, **inf** for HD95.

:data:`PERFECT_IF_BOTH_EMPTY` scores "both empty" as 1.0 (DSC, NSD) and 0.0 mm (HD95), as the
FLARE challenge evaluation scripts do; use it to compare against such tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "EmptyConventions",
    "NNUNET_CONVENTIONS",
    "PERFECT_IF_BOTH_EMPTY",
    "StructureStatus",
    "status_from_counts",
]


class StructureStatus(str, Enum):
    """Presence of one structure in one case; rows carry its value in a ``status`` column.

    ``PRESENT`` means present in both prediction and reference: the only status whose metric
    values come from the metric formula rather than from :class:`EmptyConventions`.
    """

    PRESENT = "present"
    BOTH_EMPTY = "both_empty"
    GT_EMPTY = "gt_empty"
    PRED_EMPTY = "pred_empty"

    def __str__(self) -> str:
        return self.value


def status_from_counts(n_pred: int, n_gt: int) -> StructureStatus:
    """Classify a structure from its voxel counts in the prediction and the reference."""
    if n_pred and n_gt:
        return StructureStatus.PRESENT
    if n_gt:
        return StructureStatus.PRED_EMPTY
    if n_pred:
        return StructureStatus.GT_EMPTY
    return StructureStatus.BOTH_EMPTY


@dataclass(frozen=True)
class EmptyConventions:
    """Values assigned to overlap (DSC, NSD) and distance (HD95) metrics of empty structures.

    Args:
        both_empty: DSC and NSD when the structure is in neither prediction nor reference.
        gt_empty: DSC and NSD when it is predicted but absent from the reference.
        pred_empty: DSC and NSD when it is in the reference but not predicted.
        hd_both_empty: HD95 in mm when it is in neither.
        hd_one_empty: HD95 in mm when it is in exactly one of the two.

    Raises:
        ValueError: If an overlap value is outside [0, 1] (NaN allowed) or a distance is
            negative.
    """

    both_empty: float = math.nan
    gt_empty: float = 0.0
    pred_empty: float = 0.0
    hd_both_empty: float = math.nan
    hd_one_empty: float = math.inf

    def __post_init__(self) -> None:
        for name in ("both_empty", "gt_empty", "pred_empty"):
            value = getattr(self, name)
            if not (math.isnan(value) or 0.0 <= value <= 1.0):
                raise ValueError(
                    f"EmptyConventions.{name}={value!r}: overlap scores must lie in [0, 1] "
                    "or be NaN (excluded from means)."
                )
        for name in ("hd_both_empty", "hd_one_empty"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(
                    f"EmptyConventions.{name}={value!r}: distances must be >= 0, inf or NaN."
                )

    def overlap(self, status: StructureStatus) -> float:
        """DSC/NSD value for an empty structure; ``PRESENT`` has no convention (a formula)."""
        if status is StructureStatus.BOTH_EMPTY:
            return self.both_empty
        if status is StructureStatus.GT_EMPTY:
            return self.gt_empty
        if status is StructureStatus.PRED_EMPTY:
            return self.pred_empty
        raise ValueError("StructureStatus.PRESENT has no empty-structure convention.")

    def distance(self, status: StructureStatus) -> float:
        """HD95 value in mm for an empty structure."""
        if status is StructureStatus.BOTH_EMPTY:
            return self.hd_both_empty
        if status in (StructureStatus.GT_EMPTY, StructureStatus.PRED_EMPTY):
            return self.hd_one_empty
        raise ValueError("StructureStatus.PRESENT has no empty-structure convention.")


NNUNET_CONVENTIONS = EmptyConventions()
PERFECT_IF_BOTH_EMPTY = EmptyConventions(both_empty=1.0, hd_both_empty=0.0)
