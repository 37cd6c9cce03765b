"""``mse``: for ratios ``r`` in ``linspace(mse_min_ratio, 1, mse_grid)`` the range
``r * (min, max)`` is quantized with the operand's grid and the ratio with the least squared
error ``sum (fq(x) - x)^2`` is kept per group; the chosen ranges are averaged over batches."""

from __future__ import annotations

import torch

from benchmark.quant.observers.base import Observer, minmax, register_observer


@register_observer
class MSEObserver(Observer):
    """Grid search of the clipping ratio that minimises the quantization error."""

    name = "mse"
    options = ("mse_grid", "mse_min_ratio")
    uses_mapping = True

    @classmethod
    def estimate(
        cls,
        x,
        scale_dims,
        *,
        mapping="symmetric",
        fake_quant=None,
        mse_grid: int = 20,
        mse_min_ratio: float = 0.2,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        reduce = tuple(d for d in range(x.ndim) if d not in scale_dims)
        lo, hi = minmax(x, reduce)
        best_err = best_lo = best_hi = None
        for ratio in torch.linspace(mse_min_ratio, 1.0, mse_grid).tolist():
            err = (fake_quant(x, lo * ratio, hi * ratio, mapping) - x).square()
            err = err.sum(dim=reduce, keepdim=True) if reduce else err
            if best_err is None:
                best_err, best_lo, best_hi = err, lo * ratio, hi * ratio
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo * ratio, best_lo)
            best_hi = torch.where(better, hi * ratio, best_hi)
        return best_lo, best_hi
