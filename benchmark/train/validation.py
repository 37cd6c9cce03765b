"""Validation DSC: sliding-window prediction scored on each case's original grid.

Scoring follows the benchmark's own evaluation, so a baseline's recorded validation DSC is the
number the runner reproduces at FP32: MONAI sliding-window softmax on the preprocessed volume
(:func:`benchmark.infer.predict_probabilities`), probabilities resampled back to the original
grid (:meth:`PreparedCase.restore`), argmax, then :func:`benchmark.metrics.dice` per foreground
class against the original label.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmark.data import PreparedCase
from benchmark.infer import predict_probabilities
from benchmark.metrics import dice

__all__ = ["ValidationResult", "validate"]


@dataclass(frozen=True)
class ValidationResult:
    """DSC of one validation pass.

    Attributes:
        per_case: ``{case_id: {class_name: DSC}}`` (NaN where a class is absent from both the
            prediction and the reference).
        per_class: ``{class_name: mean DSC over the cases}`` (NaN-aware mean).
        mean_dsc: mean of ``per_class`` over the foreground classes (NaN-aware).
    """

    per_case: dict[str, dict[str, float]]
    per_class: dict[str, float]
    mean_dsc: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes ``None``)."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {
            "mean_dsc": clean(self.mean_dsc),
            "per_class": {k: clean(v) for k, v in self.per_class.items()},
            "per_case": {c: {k: clean(v) for k, v in d.items()} for c, d in self.per_case.items()},
        }


def validate(
    model: nn.Module,
    cases: Sequence[PreparedCase],
    labels: Mapping[int, str],
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> ValidationResult:
    """Score ``model`` on prepared cases with per-class DSC on the original grids.

    Args:
        model: segmentation network; put in eval mode here and left in eval mode.
        cases: prepared validation cases.
        labels: ``{label: name}`` with 0 = background (background is not scored).
        roi_size: sliding-window patch ``[D, H, W]``.
        overlap: sliding-window overlap.
        sw_batch_size: patches per forward pass.
        device: where the network runs.
        amp: CUDA autocast (ignored on the CPU).

    Returns:
        :class:`ValidationResult`.

    Raises:
        ValueError: no cases, or no foreground label.
    """
    if not cases:
        raise ValueError("validate: no validation cases; check data.split.fractions")
    foreground = {int(k): str(v) for k, v in labels.items() if int(k) != 0}
    if not foreground:
        raise ValueError(f"validate: labels {dict(labels)} have no foreground class")
    model.eval()
    per_case: dict[str, dict[str, float]] = {}
    for case in cases:
        probs = predict_probabilities(
            model,
            case.image,
            roi_size=roi_size,
            overlap=overlap,
            sw_batch_size=sw_batch_size,
            device=device,
            amp=amp,
        )
        pred = case.restore(probs).argmax(dim=0).numpy().astype(np.int16)
        scores = dice(pred, np.asarray(case.label), list(foreground))
        per_case[case.case_id] = {foreground[k]: float(v) for k, v in scores.items()}
    per_class = {}
    for name in foreground.values():
        values = np.array([d[name] for d in per_case.values()], dtype=float)
        per_class[name] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    finite = [v for v in per_class.values() if not math.isnan(v)]
    mean = float(np.mean(finite)) if finite else math.nan
    return ValidationResult(per_case=per_case, per_class=per_class, mean_dsc=mean)
