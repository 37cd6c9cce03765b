"""``minmax``: ``lo = min x``, ``hi = max x``; running min/max over batches (torch.ao's
``MinMaxObserver``)."""

from __future__ import annotations

import torch

from benchmark.quant.observers.base import Observer, minmax, register_observer


@register_observer
class MinMaxObserver(Observer):
    """The full observed range: nothing is clipped."""

    name = "minmax"
    lo_is_group_min = True

    @classmethod
    def estimate(cls, x, scale_dims, *, mapping="symmetric", fake_quant=None, **options):
        reduce = tuple(d for d in range(x.ndim) if d not in scale_dims)
        return minmax(x, reduce)

    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
