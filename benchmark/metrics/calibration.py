"""Voxel-wise probability calibration: ECE, Brier score and reliability-diagram data.

Quantization perturbs logits before the softmax, so a model can keep its argmax (and its DSC)
while its probabilities become over- or under-confident; these metrics measure that.

Definitions (N voxels, K classes, M = 15 equal-width bins ``(m/M, (m+1)/M]``, the first bin also
holding exact zeros, as in Guo et al., "On calibration of modern neural networks", ICML 2017):

* **Top-label ECE**: bin voxels by their top probability :math:`\\hat p = \\max_k p_k`; with
  :math:`B_m` the voxels of bin m,
  :math:`\\mathrm{ECE} = \\sum_m \\frac{|B_m|}{N} |\\mathrm{acc}(B_m) - \\mathrm{conf}(B_m)|`,
  where acc is the fraction whose argmax equals the label and conf the mean top probability.
* **Class-wise (one-vs-rest) ECE** of class k (Kull et al., NeurIPS 2019): bin all voxels by
  :math:`p_k`; acc is then the fraction with label k. The macro average over classes is the
  "class-wise ECE" of the literature.
* **Brier score** (multi-class): :math:`\\frac1N \\sum_i \\sum_k (p_{ik} - y_{ik})^2` in
  [0, 2]; the one-vs-rest Brier of class k is :math:`\\frac1N \\sum_i (p_{ik} - y_{ik})^2`.

Everything is accumulated in one streaming pass over chunks of voxels: no one-hot copy of the
label map and no float64 copy of the probability volume are ever made, so a 14-class
512 x 512 x 120 case costs a few hundred MB at most. Voxels whose label is outside ``[0, K)``
(ignore markers such as 255 or -1) are skipped; ``region`` restricts the voxels further, e.g. to
a band around the foreground (:func:`foreground_band`), because the large confidently-correct
background otherwise drives ECE towards 0 for every model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from benchmark.metrics._checks import as_label_array, as_spacing

__all__ = [
    "CalibrationStats",
    "ReliabilityDiagram",
    "brier",
    "calibration_stats",
    "ece",
    "foreground_band",
]

_CHUNK_VOXELS = 1 << 18


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin data of a reliability diagram (all arrays ``[n_bins]``).

    Attributes:
        bin_lower: lower bin edges (exclusive except for the first bin).
        bin_upper: upper bin edges (inclusive).
        confidence: mean predicted probability in the bin (NaN for empty bins).
        accuracy: observed frequency of the event in the bin (NaN for empty bins).
        count: number of voxels in the bin.
    """

    bin_lower: np.ndarray
    bin_upper: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean of ``|accuracy - confidence|``."""
        total = self.count.sum()
        if total == 0:
            return math.nan
        used = self.count > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float((self.count[used] * gaps).sum() / total)


def _diagram(count: np.ndarray, conf_sum: np.ndarray, hit_sum: np.ndarray) -> ReliabilityDiagram:
    edges = np.linspace(0.0, 1.0, count.shape[-1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, hit_sum / count, np.nan)
    return ReliabilityDiagram(edges[:-1], edges[1:], confidence, accuracy, count.astype(np.int64))


@dataclass(frozen=True)
class CalibrationStats:
    """Sufficient statistics of one case for every calibration metric of this module.

    Attributes:
        n_voxels: voxels scored.
        top_count, top_conf, top_hits: ``[M]`` top-label bins: voxel count, sum of top
            probabilities, number of voxels whose argmax equals the label.
        class_count, class_conf, class_hits: ``[K, M]`` one-vs-rest bins per class.
        squared_error: ``[K]`` sum over voxels of ``(p_k - y_k)²``.
    """

    n_voxels: int
    top_count: np.ndarray
    top_conf: np.ndarray
    top_hits: np.ndarray
    class_count: np.ndarray
    class_conf: np.ndarray
    class_hits: np.ndarray
    squared_error: np.ndarray

    def reliability(self, class_index: int | None = None) -> ReliabilityDiagram:
        """Top-label diagram, or the one-vs-rest diagram of ``class_index``."""
        if class_index is None:
            return _diagram(self.top_count, self.top_conf, self.top_hits)
        k = int(class_index)
        return _diagram(self.class_count[k], self.class_conf[k], self.class_hits[k])

    def ece_top_label(self) -> float:
        """Top-label ECE."""
        return self.reliability().ece

    def ece_per_class(self) -> dict[int, float]:
        """One-vs-rest ECE of every class ``{k: ece}``."""
        return {k: self.reliability(k).ece for k in range(self.class_count.shape[0])}

    def brier_per_class(self) -> dict[int, float]:
        """One-vs-rest Brier score of every class ``{k: brier}`` (NaN when no voxel scored)."""
        if self.n_voxels == 0:
            return {k: math.nan for k in range(self.squared_error.shape[0])}
        return {k: float(v / self.n_voxels) for k, v in enumerate(self.squared_error)}

    def brier_multiclass(self) -> float:
        """Multi-class Brier score in [0, 2]."""
        return float(self.squared_error.sum() / self.n_voxels) if self.n_voxels else math.nan


def _flat(probs: object, labels: object, region: np.ndarray | None):
    """``[K, N]`` probability view, ``[N]`` labels and ``[N]`` region, with shape checks."""
    labels = as_label_array("labels", labels)
    shape = tuple(probs.shape)
    if len(shape) != labels.ndim + 1 or shape[1:] != labels.shape:
        raise ValueError(
            f"probs shape {shape} must be [K, *labels.shape] with labels shape {labels.shape}."
        )
    if shape[0] < 2:
        raise ValueError(f"probs needs K >= 2 class channels (softmax output), got {shape[0]}.")
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != labels.shape:
            raise ValueError(f"region shape {region.shape} != labels shape {labels.shape}.")
        region = region.reshape(-1)
    return probs.reshape(shape[0], -1), labels.reshape(-1), region


def _chunk(flat_probs: object, start: int, stop: int) -> np.ndarray:
    part = flat_probs[:, start:stop]
    if hasattr(part, "detach"):  # torch: convert only this chunk
        part = part.detach().cpu().numpy()
    return np.asarray(part, dtype=np.float64)


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins (m/M, (m+1)/M]; zeros join the first bin.
    return np.clip(np.ceil(p * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def calibration_stats(
    probs: object,
    labels: object,
    *,
    n_bins: int = 15,
    region: np.ndarray | None = None,
    chunk_voxels: int = _CHUNK_VOXELS,
) -> CalibrationStats:
    """Accumulate every calibration statistic of one case in one streaming pass.

    Args:
        probs: class probabilities ``[K, *S]`` (numpy array or torch tensor, any float dtype),
            e.g. the softmax output of ``predict_probabilities`` restored to the label grid.
        labels: reference integer labels ``[*S]``; voxels outside ``[0, K)`` are skipped.
        n_bins: number of equal-width confidence bins (15 as in Guo et al.).
        region: optional boolean mask ``[*S]`` of voxels to score (see :func:`foreground_band`).
        chunk_voxels: voxels per chunk; bounds the temporary memory to ~``40 K`` bytes each.

    Returns:
        :class:`CalibrationStats`, from which ECE, Brier and diagrams are read.

    Raises:
        ValueError: If shapes disagree, K < 2, or probabilities leave [0, 1] (e.g. logits).
        TypeError: If labels are not integers.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins} must be >= 1.")
    flat_probs, flat_labels, flat_region = _flat(probs, labels, region)
    k = flat_probs.shape[0]
    top = np.zeros((3, n_bins))
    per_class = np.zeros((3, k * n_bins))
    squared_error = np.zeros(k)
    n_voxels = 0
    offsets = (np.arange(k) * n_bins)[:, None]
    for start in range(0, flat_labels.shape[0], chunk_voxels):
        stop = start + chunk_voxels
        y = flat_labels[start:stop]
        keep = (y >= 0) & (y < k)
        if flat_region is not None:
            keep &= flat_region[start:stop]
        if not keep.any():
            continue
        p = _chunk(flat_probs, start, stop)
        if not keep.all():
            p, y = p[:, keep], y[keep]
        y = y.astype(np.int64)
        if p.min() < -1e-6 or p.max() > 1 + 1e-6 or not np.isfinite(p).all():
            raise ValueError(
                f"probs must be probabilities in [0, 1] (softmax output); voxels {start}-{stop} "
                f"hold values in [{p.min():.3g}, {p.max():.3g}]: logits passed by mistake?"
            )
        n = y.shape[0]
        n_voxels += n
        rows = np.arange(n)
        conf = p.max(axis=0)
        top_bin = _bins(conf, n_bins)
        top[0] += np.bincount(top_bin, minlength=n_bins)
        top[1] += np.bincount(top_bin, weights=conf, minlength=n_bins)
        top[2] += np.bincount(top_bin[p.argmax(axis=0) == y], minlength=n_bins)
        class_bin = _bins(p, n_bins) + offsets  # [K, n]: bin of p_k, offset per class
        per_class[0] += np.bincount(class_bin.ravel(), minlength=k * n_bins)
        per_class[1] += np.bincount(class_bin.ravel(), weights=p.ravel(), minlength=k * n_bins)
        # A one-vs-rest "hit" of class k is a voxel labelled k: only the true-class entries.
        per_class[2] += np.bincount(class_bin[y, rows], minlength=k * n_bins)
        # sum_i (p_ik - y_ik)^2 = sum_i p_ik^2 - 2 sum_{i: y_i = k} p_ik + n_k, without a one-hot.
        squared_error += np.einsum("kn,kn->k", p, p)
        squared_error -= 2 * np.bincount(y, weights=p[y, rows], minlength=k)
        squared_error += np.bincount(y, minlength=k)
    per_class = per_class.reshape(3, k, n_bins)
    return CalibrationStats(
        n_voxels=n_voxels,
        top_count=top[0],
        top_conf=top[1],
        top_hits=top[2],
        class_count=per_class[0],
        class_conf=per_class[1],
        class_hits=per_class[2],
        squared_error=squared_error,
    )


def ece(
    probs: object,
    labels: object,
    *,
    kind: str = "top_label",
    classes: Sequence[int] | None = None,
    n_bins: int = 15,
    region: np.ndarray | None = None,
) -> float:
    """Expected calibration error of one case (see the module docstring for definitions).

    Args:
        probs: class probabilities ``[K, *S]`` (numpy or torch).
        labels: reference integer labels ``[*S]``.
        kind: ``"top_label"`` or ``"classwise"`` (one-vs-rest ECE macro-averaged over
            ``classes``).
        classes: classes averaged by ``"classwise"``; default all K (background included).
        n_bins: equal-width bins.
        region: optional boolean mask of voxels to score.

    Returns:
        ECE in [0, 1] (NaN when no voxel is scored).
    """
    stats = calibration_stats(probs, labels, n_bins=n_bins, region=region)
    if kind == "top_label":
        return stats.ece_top_label()
    if kind == "classwise":
        per_class = stats.ece_per_class()
        chosen = per_class.keys() if classes is None else classes
        return float(np.mean([per_class[int(c)] for c in chosen]))
    raise ValueError(f"ece kind={kind!r} is not one of 'top_label', 'classwise'.")


def brier(probs: object, labels: object, *, region: np.ndarray | None = None) -> float:
    """Multi-class Brier score of one case, in [0, 2] (0 is perfect).

    Args:
        probs: class probabilities ``[K, *S]`` (numpy or torch).
        labels: reference integer labels ``[*S]``.
        region: optional boolean mask of voxels to score.
    """
    return calibration_stats(probs, labels, region=region).brier_multiclass()


def foreground_band(
    labels: object, spacing_mm: Sequence[float], band_mm: float, *, also: object = None
) -> np.ndarray:
    """Voxels within ``band_mm`` of the foreground (labels > 0), foreground included.

    Args:
        labels: integer label map ``[*S]`` (usually the reference).
        spacing_mm: voxel spacing in mm along the array axes.
        band_mm: band width in mm around the foreground.
        also: optional second label map (e.g. the prediction) whose foreground joins the first.

    Returns:
        Boolean mask ``[*S]``; all False when there is no foreground.
    """
    fg = as_label_array("labels", labels) > 0
    if also is not None:
        fg = fg | (as_label_array("also", also) > 0)
    spacing = as_spacing(spacing_mm, fg.ndim)
    out = np.zeros(fg.shape, bool)
    box = ndimage.find_objects(fg.view(np.uint8))
    if not box:
        return out
    # The distance transform only runs on the foreground box grown by the band.
    margin = [math.ceil(band_mm / s) for s in spacing]
    crop = tuple(
        slice(max(sl.start - m, 0), min(sl.stop + m, n))
        for sl, m, n in zip(box[0], margin, fg.shape, strict=True)
    )
    distance = ndimage.distance_transform_edt(~fg[crop], sampling=spacing)
    out[crop] = distance <= band_mm
    return out
