"""Observers against torch.ao's observers, and hand-checked percentile / MSE behaviour."""

from __future__ import annotations

import torch
from torch.ao.quantization.observer import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
)

from benchmark.quant.granularity import PerAxis, PerTensor, PerVoxel
from benchmark.quant.observers import RangeObserver, estimate_range
from benchmark.quant.primitives import choose_qparams, fake_quantize


def _batches(n=4):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, 4, 4, 4, generator=g) * (i + 1) for i in range(n)]


def test_minmax_equals_torch_ao():
    ours_t = RangeObserver("minmax", PerTensor(), bits=8, mapping="symmetric")
    ours_c = RangeObserver("minmax", PerAxis(1), bits=8, mapping="symmetric")
    ref_t, ref_c = MinMaxObserver(), PerChannelMinMaxObserver(ch_axis=1)
    for x in _batches():
        ours_t.update(x)
        ours_c.update(x)
        ref_t(x)
        ref_c(x)
    assert torch.equal(ours_t.lo.flatten(), ref_t.min_val.flatten())
    assert torch.equal(ours_t.hi.flatten(), ref_t.max_val.flatten())
    assert torch.equal(ours_c.lo.flatten(), ref_c.min_val)
    assert torch.equal(ours_c.hi.flatten(), ref_c.max_val)


def test_moving_average_equals_torch_ao():
    ours = RangeObserver(
        "moving_average", PerTensor(), bits=8, mapping="symmetric", averaging_constant=0.3
    )
    ref = MovingAverageMinMaxObserver(averaging_constant=0.3)
    for x in _batches():
        ours.update(x)
        ref(x)
    torch.testing.assert_close(ours.lo.flatten(), ref.min_val.flatten())
    torch.testing.assert_close(ours.hi.flatten(), ref.max_val.flatten())


def test_percentile_nearest_rank_and_batch_mean():
    x = torch.arange(1, 10001, dtype=torch.float32).reshape(1, 1, 10000)
    lo, hi = estimate_range(x, (), "percentile", percentile=99.0)
    assert float(hi) == 9900.0 and float(lo) == 101.0
    obs = RangeObserver("percentile", PerTensor(), bits=8, mapping="symmetric", percentile=99.0)
    obs.update(x)
    obs.update(2 * x)
    assert float(obs.hi) == (9900.0 + 19800.0) / 2


def test_mse_clips_outliers_and_static_per_voxel_keeps_positions():
    x = torch.distributions.Laplace(0.0, 1.0).sample((1, 1, 20000))
    lo, hi = estimate_range(x, (), "mse", bits=4, mapping="symmetric")
    full = float(x.abs().max())
    assert float(hi) < 0.8 * full

    def error(clip):
        scale, zp, qmin, qmax = choose_qparams(
            torch.tensor(-clip), torch.tensor(clip), 4, "symmetric"
        )
        return float((fake_quantize(x, scale, zp, qmin, qmax) - x).square().sum())

    assert error(max(-float(lo), float(hi))) < error(full)
    obs = RangeObserver("minmax", PerVoxel(), bits=8, mapping="auto")
    obs.update(torch.rand(2, 3, 4, 5, 6))
    lo, hi, mapping = obs.result()
    assert hi.shape == (1, 1, 4, 5, 6) and mapping == "unsigned"
