"""Score one case: every metric of every class as tidy rows, plus the metric registry.

``score_case`` is what the runner calls once per case; its rows become the ``class``, ``metric``,
``value``, ``tolerance_mm`` and ``status`` columns of the result schema (DESIGN.md). Surface
distances are computed once per class and shared by NSD and HD95, and DSC and presence come from
one pass over the voxels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from benchmark.metrics._checks import as_label_array, as_labels, tolerance_for
from benchmark.metrics.calibration import calibration_stats, foreground_band
from benchmark.metrics.conventions import NNUNET_CONVENTIONS, EmptyConventions
from benchmark.metrics.overlap import dice
from benchmark.metrics.surface import (
    hd_from_distances,
    nsd_from_distances,
    surface_distances,
)

__all__ = ["CASE_CLASS", "METRICS", "MetricInfo", "score_case"]

CASE_CLASS = -1
"""``class`` value of rows that describe the whole case rather than one class (``ece_top``,
``brier_mc``)."""


@dataclass(frozen=True)
class MetricInfo:
    """What a metric id means. ``version`` is bumped whenever its definition changes."""

    name: str
    higher_is_better: bool
    unit: str
    version: int
    description: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("dsc", True, "", 1, "Dice similarity coefficient"),
        MetricInfo("nsd", True, "", 1, "normalised surface Dice at tolerance_mm (surfels)"),
        MetricInfo("hd95", False, "mm", 1, "95th-percentile Hausdorff distance (surfel-weighted)"),
        MetricInfo("ece", False, "", 1, "one-vs-rest ECE of the class, 15 equal-width bins"),
        MetricInfo("brier", False, "", 1, "one-vs-rest Brier score of the class"),
        MetricInfo("ece_top", False, "", 1, "top-label ECE of the case, 15 equal-width bins"),
        MetricInfo("brier_mc", False, "", 1, "multi-class Brier score of the case, in [0, 2]"),
    )
}


def _row(label: int, metric: str, value: float, tolerance: float, status: str | None) -> dict:
    return {
        "class": label,
        "metric": metric,
        "value": float(value),
        "tolerance_mm": tolerance,
        "status": status,
    }


def score_case(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_mm: Sequence[float],
    labels: Iterable[int],
    tolerance_mm: float | Mapping[int, float],
    probs: object = None,
    *,
    conventions: EmptyConventions = NNUNET_CONVENTIONS,
    calibration_band_mm: float | None = None,
    n_bins: int = 15,
    max_workers: int | None = None,
) -> list[dict]:
    """All metrics of one case as rows ``{class, metric, value, tolerance_mm, status}``.

    Args:
        pred: predicted integer label map ``[X, Y, Z]`` on the reference grid.
        gt: reference integer label map ``[X, Y, Z]``.
        spacing_mm: voxel spacing in mm along the array axes of ``gt``.
        labels: classes to score, exactly as given (pass foreground labels only unless the
            background should be scored too); a ``{label: name}`` mapping uses its keys.
        tolerance_mm: NSD tolerance in mm, one value or ``{label: τ}``.
        probs: optional softmax probabilities ``[K, X, Y, Z]`` (numpy or torch) on the same
            grid; adds per-class ``ece`` and ``brier`` (one-vs-rest) rows and case rows
            ``ece_top`` and ``brier_mc`` with ``class == CASE_CLASS``.
        conventions: values for structures absent from prediction and/or reference.
        calibration_band_mm: score calibration only within this distance of the foreground of
            reference or prediction (:func:`~benchmark.metrics.calibration.foreground_band`);
            None scores every voxel.
        n_bins: calibration bins.
        max_workers: threads for the surface metrics.

    Returns:
        One dict per class x metric. ``tolerance_mm`` is set on ``nsd`` rows and NaN elsewhere;
        ``status`` is the :class:`~benchmark.metrics.conventions.StructureStatus` value of the
        class (``"present"``, ``"both_empty"``, ``"gt_empty"``, ``"pred_empty"``), None on case
        rows, so tables can mark values that come from a convention rather than a formula.

    Raises:
        ValueError: If probs do not cover every scored label, or on any input error of the
            metric functions.
    """
    labels = as_labels(labels)
    pred = as_label_array("pred", pred)
    gt = as_label_array("gt", gt)
    dsc = dice(pred, gt, labels, conventions=conventions)
    distances = surface_distances(pred, gt, spacing_mm, labels, max_workers=max_workers)
    rows = []
    for label in labels:
        d = distances[label]
        status = d.status.value
        tolerance = tolerance_for(tolerance_mm, label)
        rows.append(_row(label, "dsc", dsc[label], math.nan, status))
        rows.append(
            _row(label, "nsd", nsd_from_distances(d, tolerance, conventions), tolerance, status)
        )
        rows.append(_row(label, "hd95", hd_from_distances(d, 95.0, conventions), math.nan, status))
    if probs is None:
        return rows

    if probs.shape[0] <= max(labels):
        raise ValueError(
            f"probs has {probs.shape[0]} class channels but label {max(labels)} is scored; "
            "probs must be [K, X, Y, Z] with K > every scored label."
        )
    region = None
    if calibration_band_mm is not None:
        region = foreground_band(gt, spacing_mm, calibration_band_mm, also=pred)
    stats = calibration_stats(probs, gt, n_bins=n_bins, region=region)
    per_class_ece = stats.ece_per_class()
    per_class_brier = stats.brier_per_class()
    for label in labels:
        status = distances[label].status.value
        rows.append(_row(label, "ece", per_class_ece[label], math.nan, status))
        rows.append(_row(label, "brier", per_class_brier[label], math.nan, status))
    rows.append(_row(CASE_CLASS, "ece_top", stats.ece_top_label(), math.nan, None))
    rows.append(_row(CASE_CLASS, "brier_mc", stats.brier_multiclass(), math.nan, None))
    return rows
