"""``percentile``: nearest-rank percentiles ``hi = x_(ceil(p N / 100))``,
``lo = x_(N + 1 - ceil(p N / 100))`` of the ``N`` sorted values of a group, averaged over
batches. Nearest rank (``kthvalue``) instead of ``torch.quantile`` because quantile refuses
inputs above 2^24 elements, which 3D activations exceed."""

from __future__ import annotations

import math

import torch

from benchmark.quant.observers.base import Observer, grouped, register_observer, scale_shape


@register_observer
class PercentileObserver(Observer):
    """Clips the ``100 - p`` percent most extreme values of each side."""

    name = "percentile"
    options = ("percentile",)

    @classmethod
    def estimate(
        cls, x, scale_dims, *, mapping="symmetric", fake_quant=None, percentile: float = 99.99
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = scale_shape(x, scale_dims)
        values = grouped(x, scale_dims)
        n = values.shape[1]
        k = min(max(math.ceil(percentile / 100.0 * n), 1), n)
        hi = torch.kthvalue(values, k, dim=1).values
        lo = torch.kthvalue(values, n + 1 - k, dim=1).values
        return lo.reshape(shape), hi.reshape(shape)
