"""``histogram``: the KL-divergence (entropy) threshold of TensorRT's entropy calibrator.

Calibration merges every batch into one histogram of ``|x|`` per scale group (``histogram_bins``
bins over ``[0, R)``). ``R`` is a power of two above the largest ``|x|`` seen; when a batch
exceeds it, ``R`` doubles ``k`` times and each ``2^k`` neighbouring bins merge, which is exact,
so the merged histogram equals the histogram of all batches at once, in any order.

The threshold search is NVIDIA's (pytorch-quantization ``_compute_amax_entropy``, the TensorRT
entropy calibrator's algorithm): the zero bin is set to the count of bin 1 (so the zeros of a
ReLU do not dominate), and for every candidate ``i`` from ``max(128, L)`` to the number of bins
the reference ``P`` is the first ``i`` bins with all larger values added to bin ``i - 1``; ``Q``
spreads ``L = 2^(bits - 1 + unsigned)`` levels over those ``i`` bins (each level's count shared
evenly among its non-empty bins); the threshold is ``T = i R / bins`` for the last ``i`` of
least ``KL(P || Q)``. The range is the observed range clipped to ``[-T, T]``. When ``L`` is not
smaller than the number of bins (16-bit grids) nothing is clipped. Per input (dynamic ranges)
the observer is min-max: one voxel's or token's few values make no histogram.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from benchmark.quant.observers.base import Observer, grouped, register_observer, scale_shape

_MIN_LOG2 = -126  # range of an all-zero group: the smallest normal float32 power of two
_MAX_CELLS = 1 << 24  # groups x bins kept in memory (static per-voxel ranges would exceed it)
START_BIN = 128


@register_observer
class HistogramObserver(Observer):
    """Entropy-calibrated ranges from one merged histogram per scale group."""

    name = "histogram"
    options = ("histogram_bins",)
    lo_is_group_min = True

    @classmethod
    def estimate(cls, x, scale_dims, *, mapping="symmetric", fake_quant=None, **options):
        reduce = tuple(d for d in range(x.ndim) if d not in scale_dims)
        if not reduce:
            return x.clone(), x.clone()
        return torch.amin(x, dim=reduce, keepdim=True), torch.amax(x, dim=reduce, keepdim=True)

    def __init__(self, granularity, *, bits, mapping, fake_quant=None, **options) -> None:
        super().__init__(granularity, bits=bits, mapping=mapping, fake_quant=fake_quant, **options)
        self.bins = int(self.settings.get("histogram_bins", 2048))
        if self.bins < 2 or self.bins & (self.bins - 1):
            raise ValueError(f"histogram_bins={self.bins} must be a power of two >= 2")
        self._log2_bins = int(math.log2(self.bins))
        self.hist: torch.Tensor | None = None  # [groups, bins] float64 counts
        self.log2_range: torch.Tensor | None = None  # [groups] int64
        self.shape: list[int] | None = None

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        dims = self.granularity.scale_dims(x.ndim, dynamic=False)
        lo, hi = self.estimate(x, dims)
        values = grouped(x, dims).abs()
        if values.shape[0] * self.bins > _MAX_CELLS:
            raise ValueError(
                f"histogram observer: {values.shape[0]} scale groups x {self.bins} bins is too "
                "many histograms; use position_scales='dynamic' or another observer"
            )
        amax = values.amax(dim=1)
        needed = torch.where(
            amax > 0, torch.floor(torch.log2(amax)).long() + 1, torch.full_like(amax, _MIN_LOG2)
        ).long()
        if self.hist is None:
            self.shape = scale_shape(x, dims)
            self.hist = torch.zeros(values.shape[0], self.bins, dtype=torch.float64)
            self.log2_range = needed
            self.lo, self.hi = lo, hi
        else:
            if list(lo.shape) != self.shape:
                raise ValueError(
                    f"range shape {tuple(lo.shape)} differs from earlier batches {self.shape}; "
                    "static per-position ranges need calibration batches of one ROI size"
                )
            self._grow(torch.maximum(needed, self.log2_range))
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
        self.hist += self._histogram(values, self.log2_range)
        self.observed_min = min(self.observed_min, float(x.min()))
        self.num_batches += 1

    def _histogram(self, values: torch.Tensor, log2_range: torch.Tensor) -> torch.Tensor:
        """Counts of ``values`` [groups, n] in bins of width ``2^log2_range / bins``."""
        # |x| * bins / R is a multiplication by a power of two: exact, so bins are order-free
        # (in float64: an all-zero group's factor 2^137 overflows float32)
        factor = torch.ldexp(
            torch.ones_like(log2_range, dtype=torch.float64), self._log2_bins - log2_range
        )
        index = torch.clamp((values.double() * factor[:, None]).long(), max=self.bins - 1)
        offset = torch.arange(values.shape[0])[:, None] * self.bins
        counts = torch.bincount((index + offset).flatten(), minlength=values.shape[0] * self.bins)
        return counts.view(values.shape[0], self.bins).double()

    def _grow(self, log2_range: torch.Tensor) -> None:
        """Widen each group's range to ``2^log2_range`` by merging ``2^k`` bins into one."""
        for k in torch.unique(log2_range - self.log2_range).tolist():
            if k == 0:
                continue
            rows = (log2_range - self.log2_range) == k
            old = self.hist[rows]
            merge = 1 << min(k, self._log2_bins)
            merged = old.view(old.shape[0], self.bins // merge, merge).sum(dim=2)
            self.hist[rows] = torch.nn.functional.pad(merged, (0, self.bins - merged.shape[1]))
        self.log2_range = log2_range

    def result(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        lo, hi, mapping = super().result()
        levels = 1 << (self.bits - 1 + int(mapping == "unsigned"))
        ones = torch.ones_like(self.log2_range, dtype=torch.float64)
        edges = torch.ldexp(ones, self.log2_range) / self.bins
        index = torch.from_numpy(entropy_thresholds(self.hist.numpy(), levels))
        threshold = (index.double() * edges).float().reshape(self.shape)
        return torch.maximum(lo, -threshold), torch.minimum(hi, threshold), mapping


def entropy_thresholds(hist: np.ndarray, levels: int, start: int = START_BIN) -> np.ndarray:
    """Per row of ``hist`` [groups, bins], the bin edge index ``i`` of least ``KL(P || Q)``.

    Vectorised over groups; each candidate ``i`` is NVIDIA's loop body (see the module docstring).
    """
    groups, nbins = hist.shape
    if levels >= nbins:
        return np.full(groups, nbins)
    counts = hist.astype(np.float64).copy()
    counts[:, 0] = counts[:, 1]
    candidates = list(range(max(start, levels), nbins + 1))
    divergence = np.empty((groups, len(candidates)))
    tail = np.concatenate([np.cumsum(counts[:, ::-1], axis=1)[:, ::-1], np.zeros((groups, 1))], 1)
    for n, i in enumerate(candidates):
        divergence[:, n] = _divergence(counts[:, :i], tail[:, i], levels)
    last_min = len(candidates) - 1 - np.argmin(divergence[:, ::-1], axis=1)
    return np.asarray(candidates)[last_min]


def _divergence(p: np.ndarray, outliers: np.ndarray, levels: int) -> np.ndarray:
    """``KL(P || Q)`` per group for one candidate: ``p`` are the first ``i`` bins."""
    i = p.shape[1]
    space = np.linspace(0, i, num=levels + 1)
    level = np.digitize(np.arange(i), space) - 1
    starts = np.searchsorted(level, np.arange(levels))
    nonzero = p != 0
    total = np.add.reduceat(p, starts, axis=1)
    filled = np.add.reduceat(nonzero, starts, axis=1)
    share = np.divide(total, filled, out=np.zeros_like(total), where=filled > 0)
    q = share[:, level] * nonzero
    reference = p.copy()
    reference[:, -1] += outliers
    return _entropy(reference, q)


def _entropy(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``scipy.stats.entropy(p, q)`` per row: both normalised, ``inf`` where ``q = 0 < p``."""
    p = p / np.maximum(p.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    q = q / np.maximum(q.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return np.where(((p > 0) & (q == 0)).any(axis=1), np.inf, terms.sum(axis=1))
