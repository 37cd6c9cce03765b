"""Accuracy gate: ship the INT8 model only if it keeps the FP32 model's accuracy, else keep FP32.

A candidate is accepted when all of these hold on the test cases:

1. mean relative DSC drop within ``tolerance_rel``:
   :math:`(\\overline{DSC}_{fp32} - \\overline{DSC}_{int8}) / \\overline{DSC}_{fp32} \\le tol`,
   where :math:`\\overline{DSC}` is the mean over foreground classes of the per-class mean over
   cases (classes weigh equally, as in the published tables);
2. every class's own relative drop within ``per_class_worst_drop`` (a mean can hide one organ
   that collapses);
3. batch-size consistency: the same patches give the same argmax at every batch size (a
   deployed service batches requests as load allows; a model whose answer depends on its
   neighbours in the batch, e.g. dynamic quantization with a batch-wide activation range, is
   not deployable as such);
4. voxel agreement: the mean fraction of voxels whose class equals the FP32 prediction's is at
   least ``min_agreement`` (when measured).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from benchmark.metrics import relative_drop as relative_drop_percent

__all__ = [
    "BatchConsistency",
    "GateDecision",
    "relative_drop",
    "check_batch_consistency",
    "decide",
]


@dataclass(frozen=True)
class BatchConsistency:
    """Outcome of running the same patches at several batch sizes.

    Attributes:
        consistent: ``mismatch_fraction <= max_mismatch``.
        batch_sizes: the sizes compared (the first is the reference).
        mismatch_fraction: largest fraction of voxels whose argmax differs from the reference.
        max_abs_diff: largest absolute logit difference from the reference.
        max_mismatch: the tolerance used.
    """

    consistent: bool
    batch_sizes: tuple[int, ...]
    mismatch_fraction: float
    max_abs_diff: float
    max_mismatch: float


@dataclass(frozen=True)
class GateDecision:
    """Accept/reject with the numbers behind it.

    Attributes:
        accepted: all three conditions hold; deploy the candidate, else keep FP32.
        mean_dsc: candidate mean foreground DSC; ``baseline_mean_dsc`` the FP32 one.
        mean_rel_drop: relative drop of the mean (positive = worse).
        worst_class: class with the largest relative drop; ``worst_class_rel_drop`` its drop.
        batch_consistent: outcome of the batch-size check.
        reasons: why it was rejected (empty when accepted).
        voxel_agreement: mean fraction of voxels with the FP32 class (NaN: not measured).
    """

    accepted: bool
    mean_dsc: float
    baseline_mean_dsc: float
    mean_rel_drop: float
    worst_class: int | None
    worst_class_rel_drop: float
    batch_consistent: bool
    reasons: tuple[str, ...]
    voxel_agreement: float = float("nan")

    @property
    def deployed(self) -> str:
        """``candidate`` when accepted, ``fp32`` otherwise."""
        return "candidate" if self.accepted else "fp32"


def relative_drop(value: float, baseline: float) -> float:
    """``(baseline - value) / baseline`` as a fraction (``benchmark.metrics.relative_drop`` / 100).

    NaN when the baseline is 0 or either value is NaN (such classes are left out of the gate).
    """
    return float(relative_drop_percent(value, baseline)) / 100.0


def check_batch_consistency(
    predict: Callable[[np.ndarray], np.ndarray],
    patches: np.ndarray,
    batch_sizes: Sequence[int] = (1, 2, 4),
    max_mismatch: float = 0.0,
) -> BatchConsistency:
    """Run the same patches at several batch sizes and compare the predictions.

    Args:
        predict: logits ``[B, K, *roi]`` for inputs ``[B, C, *roi]`` (e.g. an ONNX session).
        patches: ``[N, C, *roi]`` distinct inputs; ``N`` is cut to a multiple of every batch
            size (the least common multiple must not exceed ``N``).
        batch_sizes: sizes to compare; the first is the reference.
        max_mismatch: tolerated fraction of voxels with a different argmax.

    Raises:
        ValueError: fewer patches than the least common multiple of ``batch_sizes``.
    """
    sizes = tuple(int(b) for b in batch_sizes)
    period = math.lcm(*sizes)
    n = (len(patches) // period) * period
    if n == 0:
        raise ValueError(
            f"batch consistency needs at least lcm{sizes} = {period} patches, got {len(patches)}"
        )
    patches = np.asarray(patches[:n], dtype=np.float32)

    def run_at(b: int) -> np.ndarray:
        return np.concatenate([predict(patches[i : i + b]) for i in range(0, n, b)])

    reference = run_at(sizes[0])
    ref_labels = reference.argmax(1)
    mismatch, max_diff = 0.0, 0.0
    for b in sizes[1:]:
        logits = run_at(b)
        mismatch = max(mismatch, float(np.mean(logits.argmax(1) != ref_labels)))
        max_diff = max(max_diff, float(np.max(np.abs(logits - reference))))
    return BatchConsistency(
        consistent=mismatch <= max_mismatch,
        batch_sizes=sizes,
        mismatch_fraction=mismatch,
        max_abs_diff=max_diff,
        max_mismatch=float(max_mismatch),
    )


def decide(
    candidate_dsc: Mapping[int, float],
    baseline_dsc: Mapping[int, float],
    tolerance_rel: float = 0.01,
    per_class_worst_drop: float = 0.03,
    batch: BatchConsistency | bool = True,
    voxel_agreement: float = float("nan"),
    min_agreement: float = 0.0,
) -> GateDecision:
    """Apply the gate to per-class mean DSC values.

    Args:
        candidate_dsc: class -> mean DSC over the test cases of the INT8 model.
        baseline_dsc: class -> mean DSC of the FP32 model on the same cases.
        tolerance_rel: limit on the relative drop of the mean foreground DSC (0.01 = 1 %).
        per_class_worst_drop: limit on any single class's relative drop.
        batch: batch-consistency outcome (or a plain bool).
        voxel_agreement: mean fraction of voxels with the FP32 class (NaN: not checked).
        min_agreement: smallest accepted ``voxel_agreement``.

    Returns:
        The :class:`GateDecision`.

    Raises:
        ValueError: the class sets differ, or no class has a finite baseline.
    """
    if set(candidate_dsc) != set(baseline_dsc):
        raise ValueError(
            f"candidate classes {sorted(candidate_dsc)} != baseline classes {sorted(baseline_dsc)}"
        )
    classes = [
        c
        for c in sorted(baseline_dsc)
        if np.isfinite(baseline_dsc[c]) and np.isfinite(candidate_dsc[c])
    ]
    if not classes:
        raise ValueError(f"no class with finite DSC in both models: {dict(baseline_dsc)}")
    mean_c = float(np.mean([candidate_dsc[c] for c in classes]))
    mean_b = float(np.mean([baseline_dsc[c] for c in classes]))
    mean_drop = relative_drop(mean_c, mean_b)
    drops = {c: relative_drop(candidate_dsc[c], baseline_dsc[c]) for c in classes}
    drops = {c: d for c, d in drops.items() if np.isfinite(d)}
    worst = max(drops, key=drops.get) if drops else None
    consistent = batch.consistent if isinstance(batch, BatchConsistency) else bool(batch)

    reasons = []
    if mean_drop > tolerance_rel:
        reasons.append(f"mean DSC drop {mean_drop:.2%} > tolerance {tolerance_rel:.2%}")
    if worst is not None and drops[worst] > per_class_worst_drop:
        reasons.append(
            f"class {worst} DSC drop {drops[worst]:.2%} > per-class limit "
            f"{per_class_worst_drop:.2%}"
        )
    if not consistent:
        detail = (
            f" ({batch.mismatch_fraction:.2e} of voxels differ across batch sizes "
            f"{batch.batch_sizes})"
            if isinstance(batch, BatchConsistency)
            else ""
        )
        reasons.append(f"predictions depend on the batch size{detail}")
    if np.isfinite(voxel_agreement) and voxel_agreement < min_agreement:
        reasons.append(f"voxel agreement with FP32 {voxel_agreement:.3%} < {min_agreement:.3%}")
    return GateDecision(
        accepted=not reasons,
        mean_dsc=mean_c,
        baseline_mean_dsc=mean_b,
        mean_rel_drop=mean_drop,
        worst_class=None if worst is None else int(worst),
        worst_class_rel_drop=float("nan") if worst is None else float(drops[worst]),
        batch_consistent=consistent,
        reasons=tuple(reasons),
        voxel_agreement=float(voxel_agreement),
    )
