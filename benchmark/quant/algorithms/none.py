"""``none``: round to nearest with the calibrated ranges (every hook a no-op)."""

from __future__ import annotations

from benchmark.quant.algorithms.base import Algorithm, register_algorithm


@register_algorithm
class RoundToNearest(Algorithm):
    """What the quantizers do by themselves: nothing is transformed, adjusted or optimised."""

    name = "none"
