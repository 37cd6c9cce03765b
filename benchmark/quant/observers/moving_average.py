"""``moving_average``: per-batch min/max combined by an exponential moving average
``r <- r + c (r_batch - r)`` with ``c = averaging_constant``; the first batch initialises
(torch.ao's ``MovingAverageMinMaxObserver``). Per input (dynamic ranges) it is min-max."""

from __future__ import annotations

import torch

from benchmark.quant.observers.base import Observer, minmax, register_observer


@register_observer
class MovingAverageObserver(Observer):
    """EMA of per-batch ranges: later batches weigh ``averaging_constant`` each."""

    name = "moving_average"
    options = ("averaging_constant",)
    lo_is_group_min = True

    @classmethod
    def estimate(cls, x, scale_dims, *, mapping="symmetric", fake_quant=None, **options):
        reduce = tuple(d for d in range(x.ndim) if d not in scale_dims)
        return minmax(x, reduce)

    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        c = self.settings.get("averaging_constant", 0.1)
        self.lo = self.lo + c * (lo - self.lo)
        self.hi = self.hi + c * (hi - self.hi)
