"""Agreement of deployed models with the ground truth, the FP32 model and the fake-quant model.

Three questions, one table: does the INT8 model still segment well (against the ground truth),
how far did it move from the model it replaces (against FP32 predictions), and how faithful was
the simulation that predicted its accuracy (against the fake-quant model of the same
``QuantSpec``)? All three use the same overlap and surface metrics; only the reference changes.

Metric names in the rows:

* ``dsc``, ``nsd``: against the ground truth;
* ``dsc_vs_<ref>``, ``nsd_vs_<ref>``: the reference backend's prediction taken as ground truth;
* ``voxel_agreement_vs_<ref>``: fraction of voxels with the same argmax label (all classes,
  one row per case with ``class`` missing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.infer import predict_probabilities
from benchmark.metrics import dice, nsd

__all__ = ["predict_case_labels", "voxel_agreement", "agreement_rows", "DEFAULT_REFERENCES"]

#: Reference name (used in metric names) -> backend whose predictions are the reference.
DEFAULT_REFERENCES: dict[str, str] = {"fp32": "torch_fp32", "fakequant": "torch_fakequant"}


def predict_case_labels(
    predictor: nn.Module,
    case: Any,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
) -> np.ndarray:
    """Label map of one case on its original grid, as scored by the evaluation runs.

    Args:
        predictor: PyTorch model or :class:`benchmark.deploy.session.OrtSegmenter`.
        case: a ``benchmark.data.PreparedCase`` (``image [C, D, H, W]``, ``restore``).
        roi_size: sliding-window patch size ``(D, H, W)``.
        overlap: sliding-window overlap fraction.
        sw_batch_size: patches per forward call.

    Returns:
        ``int16`` labels with the shape of ``case.label``.
    """
    probs = predict_probabilities(
        predictor, case.image, roi_size, overlap=overlap, sw_batch_size=sw_batch_size
    )
    restored = case.restore(probs)
    labels = torch.as_tensor(restored).argmax(0)
    return labels.numpy().astype(np.int16)


def voxel_agreement(pred: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of voxels where two label maps of the same shape agree."""
    if pred.shape != reference.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} vs {reference.shape}")
    return float(np.mean(pred == reference))


def agreement_rows(
    case_id: str,
    predictions: Mapping[str, np.ndarray],
    ground_truth: np.ndarray,
    spacing_mm: Sequence[float],
    labels: Sequence[int],
    tolerance_mm: float,
    references: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Per-class DSC/NSD rows of every backend against the ground truth and the references.

    Args:
        case_id: case identifier written to the rows.
        predictions: backend name -> label map on the original grid (same shape as
            ``ground_truth``).
        ground_truth: reference labels.
        spacing_mm: voxel spacing in millimetres, same axis order as the label maps.
        labels: foreground class indices to score.
        tolerance_mm: NSD boundary tolerance in millimetres.
        references: reference name -> backend (default :data:`DEFAULT_REFERENCES`); references
            whose backend is absent from ``predictions`` are skipped, and a backend is never
            compared with itself.

    Returns:
        Dicts with keys ``backend``, ``case``, ``class``, ``metric``, ``value``,
        ``tolerance_mm`` (NaN for DSC and voxel agreement).
    """
    references = DEFAULT_REFERENCES if references is None else references
    labels = [int(c) for c in labels]
    rows: list[dict[str, Any]] = []

    def add(backend: str, metric: str, cls: int | None, value: float, tol: float) -> None:
        rows.append(
            {
                "backend": backend,
                "case": case_id,
                "class": cls,
                "metric": metric,
                "value": float(value),
                "tolerance_mm": tol,
            }
        )

    for backend, pred in predictions.items():
        targets = {"": ground_truth}
        for name, ref_backend in references.items():
            if ref_backend in predictions and ref_backend != backend:
                targets[f"_vs_{name}"] = predictions[ref_backend]
        for suffix, target in targets.items():
            for cls, value in dice(pred, target, labels).items():
                add(backend, f"dsc{suffix}", int(cls), value, float("nan"))
            for cls, value in nsd(pred, target, spacing_mm, tolerance_mm, labels).items():
                add(backend, f"nsd{suffix}", int(cls), value, float(tolerance_mm))
            if suffix:
                add(
                    backend,
                    f"voxel_agreement{suffix}",
                    None,
                    voxel_agreement(pred, target),
                    float("nan"),
                )
    return rows
