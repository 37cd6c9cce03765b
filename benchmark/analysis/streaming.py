"""Streaming summaries of activation tensors: moments, an exactly mergeable histogram, SQNR, KL.

Activations of 3D networks are too large to keep (one 64^3 patch through a small U-Net is tens
of MB per layer), so every statistic here is updated batch by batch and holds O(bins + channels)
memory. Hand-written because torch's ``HistogramObserver`` re-bins approximately when its range
grows and keeps no moments; here the range doubles and pairs of bins merge, which is exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["RunningMoments", "StreamingHistogram", "kl_divergence", "sqnr_db"]


class RunningMoments:
    """Count, mean, central moment sums M2..M4, min and max of a stream of values (float64).

    Batches are merged with the pairwise formulas of Pébay (2008, "Formulas for robust,
    one-pass parallel computation of covariances and arbitrary-order statistical moments",
    Sandia SAND2008-6212), which avoid the cancellation of raw power sums.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = self.m3 = self.m4 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def update(self, x: torch.Tensor) -> None:
        """Add every element of ``x``."""
        values = x.detach().reshape(-1).double()
        nb = values.numel()
        if nb == 0:
            return
        mean_b = float(values.mean())
        d = values - mean_b
        d2 = d * d
        m2b, m3b, m4b = float(d2.sum()), float((d2 * d).sum()), float((d2 * d2).sum())
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        na, n = self.n, self.n + nb
        delta = mean_b - self.mean
        dn = delta / n
        m2a, m3a = self.m2, self.m3
        self.m4 += (
            m4b
            + delta * dn**3 * na * nb * (na * na - na * nb + nb * nb)
            + 6 * dn**2 * (na * na * m2b + nb * nb * m2a)
            + 4 * dn * (na * m3b - nb * m3a)
        )
        self.m3 += m3b + delta * dn**2 * na * nb * (na - nb) + 3 * dn * (na * m2b - nb * m2a)
        self.m2 += m2b + delta * dn * na * nb
        self.mean += nb * dn
        self.n = n

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return math.sqrt(self.m2 / self.n) if self.n else math.nan

    @property
    def excess_kurtosis(self) -> float:
        """``n * M4 / M2^2 - 3`` (0 for a normal distribution; scipy's ``kurtosis`` default)."""
        if self.n == 0 or self.m2 == 0:
            return math.nan
        return self.n * self.m4 / (self.m2 * self.m2) - 3.0


class StreamingHistogram:
    """``bins`` equal bins over ``[-R, R]``; ``R`` is a power of two that doubles when a value
    falls outside, merging pairs of bins (exact, as the old edges are a subset of the new).

    Two histograms fed different streams are compared after :meth:`align`, which grows the
    narrower one to the wider range.

    Args:
        bins: number of bins, a multiple of 4 (the doubled range keeps 0 on a bin edge).
    """

    def __init__(self, bins: int = 2048) -> None:
        if bins < 8 or bins % 4:
            raise ValueError(f"bins={bins} must be a multiple of 4 and >= 8")
        self.bins = bins
        self.half_range: float | None = None
        self.counts = np.zeros(bins, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def edges(self) -> np.ndarray:
        """Bin edges, ``bins + 1`` values from ``-R`` to ``R``."""
        half = self.half_range or 1.0
        return np.linspace(-half, half, self.bins + 1)

    def grow(self, half_range: float) -> None:
        """Double the range until it covers ``[-half_range, half_range]``."""
        if self.half_range is None:
            self.half_range = 2.0 ** math.ceil(math.log2(max(half_range, 2.0**-24)))
            return
        while self.half_range < half_range:
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            counts = np.zeros_like(self.counts)
            counts[self.bins // 4 : 3 * self.bins // 4] = merged
            self.counts = counts
            self.half_range *= 2.0

    def update(self, x: torch.Tensor) -> None:
        """Add every element of ``x``."""
        values = x.detach().reshape(-1).float()
        if values.numel() == 0:
            return
        self.grow(float(values.abs().max()))
        half = self.half_range
        counts = torch.histc(values, bins=self.bins, min=-half, max=half)
        self.counts += np.rint(counts.cpu().numpy()).astype(np.int64)

    def align(self, other: StreamingHistogram) -> None:
        """Grow both histograms to the wider of the two ranges."""
        if self.bins != other.bins:
            raise ValueError(f"cannot align histograms of {self.bins} and {other.bins} bins")
        half = max(self.half_range or 0.0, other.half_range or 0.0)
        for hist in (self, other):
            hist.grow(half)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100), linear within the bin (error < one bin width)."""
        total = self.total
        if total == 0:
            return math.nan
        cdf = np.cumsum(self.counts)
        target = q / 100.0 * total
        i = int(np.searchsorted(cdf, target, side="left"))
        i = min(i, self.bins - 1)
        before = cdf[i - 1] if i > 0 else 0
        inside = self.counts[i]
        frac = (target - before) / inside if inside else 0.0
        edges = self.edges
        return float(edges[i] + frac * (edges[i + 1] - edges[i]))

    def fraction_outside(self, lo: float, hi: float) -> float:
        """Share of values whose bin centre lies outside ``[lo, hi]``."""
        total = self.total
        if total == 0:
            return math.nan
        edges = self.edges
        centres = 0.5 * (edges[:-1] + edges[1:])
        return float(self.counts[(centres < lo) | (centres > hi)].sum() / total)

    def coarsened(self, bins: int) -> np.ndarray:
        """Counts merged into ``bins`` equal groups (``bins`` divides the bin count)."""
        return self.counts.reshape(bins, -1).sum(axis=1)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum x^2 / sum (x - q)^2)`` in dB.

    Sums (or means over the same elements) of the reference ``x`` and of the error ``x - q``;
    ``inf`` when there is no error, NaN when there is no signal either.
    """
    if noise_power == 0:
        return math.inf if signal_power > 0 else math.nan
    if signal_power == 0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, eps: float = 1e-10) -> float:
    """``KL(P || Q) = sum_i P_i ln(P_i / Q_i)`` in nats of two count vectors on the same bins.

    Both are normalised to probabilities; ``eps`` is added to every bin of both first so that a
    bin empty in ``Q`` gives a large finite value instead of ``inf``.
    """
    p = np.asarray(p_counts, dtype=np.float64) + eps
    q = np.asarray(q_counts, dtype=np.float64) + eps
    p /= p.sum()
    q /= q.sum()
    return float(np.sum(p * np.log(p / q)))
