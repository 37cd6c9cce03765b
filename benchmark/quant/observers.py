"""Range observers: estimate ``(lo, hi)`` per scale group from calibration batches.

A scale group is one index of the granularity's ``scale_dims`` (a channel, a voxel, a token, or
the whole tensor); the range is taken over all other dimensions of the batch.

Per-batch estimators and how batches are combined:

- ``minmax``: ``lo = min x``, ``hi = max x``; running min/max over batches (torch.ao
  ``MinMaxObserver``).
- ``moving_average``: per-batch min/max, combined by an exponential moving average
  ``r <- r + c (r_batch - r)`` with ``c = averaging_constant``; the first batch initialises
  (torch.ao ``MovingAverageMinMaxObserver``).
- ``percentile``: nearest-rank percentiles ``hi = x_(ceil(p N / 100))``,
  ``lo = x_(N + 1 - ceil(p N / 100))`` of the ``N`` sorted values of a group (``p`` = 99.99 by
  default), averaged over batches. Nearest rank (``kthvalue``) instead of ``torch.quantile``
  because quantile refuses inputs above 2^24 elements, which 3D activations exceed.
- ``mse``: for ratios ``r`` in ``linspace(mse_min_ratio, 1, mse_grid)`` the range
  ``r * (min, max)`` is quantized with the layer's grid and the ratio with the least squared
  error ``sum (fq(x) - x)^2`` is kept per group; the chosen ranges are averaged over batches.

Averaging per-batch estimates (percentile, mse) keeps memory constant in the number of
calibration batches instead of storing every activation.
"""

from __future__ import annotations

import math

import torch

from benchmark.quant.granularity import Granularity
from benchmark.quant.primitives import choose_qparams, fake_quantize

__all__ = ["RangeObserver", "estimate_range", "resolve_mapping"]


def resolve_mapping(mapping: str, observed_min: float) -> str:
    """Turn ``auto`` into ``unsigned`` (min >= 0) or ``symmetric``; other mappings pass through."""
    if mapping != "auto":
        return mapping
    return "unsigned" if observed_min >= 0 else "symmetric"


def _grouped(x: torch.Tensor, scale_dims: tuple[int, ...]) -> torch.Tensor:
    """View ``x`` as ``[groups, elements]`` with the scale dims first."""
    reduce = [d for d in range(x.ndim) if d not in scale_dims]
    groups = math.prod(x.shape[d] for d in scale_dims)
    return x.permute(*scale_dims, *reduce).reshape(groups, -1)


def _scale_shape(x: torch.Tensor, scale_dims: tuple[int, ...]) -> list[int]:
    return [x.shape[d] if d in scale_dims else 1 for d in range(x.ndim)]


def _minmax(x: torch.Tensor, reduce: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    if not reduce:
        return x.clone(), x.clone()
    # separate amin/amax: torch.aminmax over a non-innermost dim (the channels of a per-voxel
    # range) is several times slower than the two reductions on CPU (torch 2.13)
    return torch.amin(x, dim=reduce, keepdim=True), torch.amax(x, dim=reduce, keepdim=True)


def estimate_range(
    x: torch.Tensor,
    scale_dims: tuple[int, ...],
    kind: str,
    *,
    bits: int = 8,
    mapping: str = "symmetric",
    percentile: float = 99.99,
    mse_grid: int = 20,
    mse_min_ratio: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's range per scale group.

    Args:
        x: float tensor, any shape.
        scale_dims: dimensions with their own range.
        kind: ``minmax``, ``moving_average`` (same per batch), ``percentile`` or ``mse``.
        bits: grid bits (``mse`` only).
        mapping: resolved grid mapping (``mse`` only).
        percentile: ``p`` of ``percentile``.
        mse_grid: number of candidate clipping ratios of ``mse``.
        mse_min_ratio: smallest candidate ratio of ``mse``.

    Returns:
        ``(lo, hi)``, each of shape ``x.shape`` with reduced dimensions set to 1.
    """
    x = x.detach().float()
    reduce = tuple(d for d in range(x.ndim) if d not in scale_dims)
    if kind in ("minmax", "moving_average"):
        return _minmax(x, reduce)
    shape = _scale_shape(x, scale_dims)
    if kind == "percentile":
        grouped = _grouped(x, scale_dims)
        n = grouped.shape[1]
        k = min(max(math.ceil(percentile / 100.0 * n), 1), n)
        hi = torch.kthvalue(grouped, k, dim=1).values
        lo = torch.kthvalue(grouped, n + 1 - k, dim=1).values
        return lo.reshape(shape), hi.reshape(shape)
    if kind == "mse":
        lo, hi = _minmax(x, reduce)
        best_err = best_lo = best_hi = None
        for ratio in torch.linspace(mse_min_ratio, 1.0, mse_grid).tolist():
            scale, zp, qmin, qmax = choose_qparams(lo * ratio, hi * ratio, bits, mapping)
            err = (fake_quantize(x, scale, zp, qmin, qmax) - x).square()
            err = err.sum(dim=reduce, keepdim=True) if reduce else err
            if best_err is None:
                best_err, best_lo, best_hi = err, lo * ratio, hi * ratio
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo * ratio, best_lo)
            best_hi = torch.where(better, hi * ratio, best_hi)
        return best_lo, best_hi
    raise ValueError(f"observer kind={kind!r}; allowed: minmax, moving_average, percentile, mse")


class RangeObserver:
    """Accumulates ranges over calibration batches for one quantized operand.

    Args:
        kind: observer name (see the module docstring).
        granularity: the operand's granularity; static ranges, so the batch dim is reduced.
        bits: grid bits (for ``mse``).
        mapping: ``auto``, ``symmetric``, ``unsigned`` or ``asymmetric``; ``auto`` is resolved per
            batch for the ``mse`` search and per operand (global min) at the end.
        percentile: see :func:`estimate_range`.
        averaging_constant: EMA constant of ``moving_average``.
        mse_grid: see :func:`estimate_range`.
        mse_min_ratio: see :func:`estimate_range`.
    """

    def __init__(
        self,
        kind: str,
        granularity: Granularity,
        *,
        bits: int,
        mapping: str,
        percentile: float = 99.99,
        averaging_constant: float = 0.1,
        mse_grid: int = 20,
        mse_min_ratio: float = 0.2,
    ) -> None:
        self.kind = kind
        self.granularity = granularity
        self.bits = bits
        self.mapping = mapping
        self.percentile = percentile
        self.averaging_constant = averaging_constant
        self.mse_grid = mse_grid
        self.mse_min_ratio = mse_min_ratio
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self.observed_min = math.inf
        self.num_batches = 0

    def update(self, x: torch.Tensor) -> None:
        """Fold one batch into the running range."""
        x = x.detach().float()
        batch_min = float(x.min())
        scale_dims = self.granularity.scale_dims(x.ndim, dynamic=False)
        lo, hi = estimate_range(
            x,
            scale_dims,
            self.kind,
            bits=self.bits,
            mapping=resolve_mapping(self.mapping, batch_min),
            percentile=self.percentile,
            mse_grid=self.mse_grid,
            mse_min_ratio=self.mse_min_ratio,
        )
        self.observed_min = min(self.observed_min, batch_min)
        self.num_batches += 1
        if self.lo is None:
            self.lo, self.hi = lo, hi
        elif lo.shape != self.lo.shape:
            raise ValueError(
                f"range shape {tuple(lo.shape)} differs from earlier batches {tuple(self.lo.shape)}; "
                "static per-position ranges need calibration batches of one ROI size"
            )
        elif self.kind == "minmax":
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
        elif self.kind == "moving_average":
            c = self.averaging_constant
            self.lo = self.lo + c * (lo - self.lo)
            self.hi = self.hi + c * (hi - self.hi)
        else:
            n = self.num_batches
            self.lo = self.lo + (lo - self.lo) / n
            self.hi = self.hi + (hi - self.hi) / n

    def result(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        """``(lo, hi, resolved_mapping)`` after at least one batch."""
        if self.lo is None or self.hi is None:
            raise RuntimeError("observer saw no batch")
        return self.lo, self.hi, resolve_mapping(self.mapping, self.observed_min)
