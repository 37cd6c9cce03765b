"""AdaRound: the learned rounding reconstructs a layer's output on held-out inputs better than
round to nearest; it stays on the layer's grid, is deterministic and is cached."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.quant import QuantSpec, calibrate, load_ranges, quantize, save_ranges
from benchmark.quant.algorithms.rounding import SoftRounding, weight_grid
from benchmark.quant.weight_quantizer import WeightQuantizer


def _smooth_volumes(n: int, seed: int, channels: int = 4, size: int = 10) -> list[torch.Tensor]:
    """Spatially correlated inputs (a random field blurred by average pooling), as feature
    maps are, so that neighbouring taps of a 3x3x3 kernel see related values."""
    g = torch.Generator().manual_seed(seed)
    noise = [torch.randn(2, channels, size + 2, size + 2, size + 2, generator=g) for _ in range(n)]
    return [nn.functional.avg_pool3d(x, 3, stride=1) for x in noise]


def _layer_error(layer_model, qmodel, volumes) -> float:
    with torch.no_grad():
        return sum(float((qmodel(x) - layer_model(x)).square().sum()) for x in volumes)


@pytest.mark.parametrize(
    ("precision", "weight_observer"), [("w4a16", "minmax"), ("w3a16", "minmax"), ("w3a16", "mse")]
)
def test_adaround_reconstructs_a_conv_layer_on_held_out_inputs_better_than_rounding(
    precision, weight_observer
):
    """On a min-max grid and on a searched one (frozen before the rounding is learned)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1)).eval()
    calib, held_out = _smooth_volumes(6, seed=1), _smooth_volumes(4, seed=2)
    errors = {}
    for algorithm in ("none", "adaround"):
        spec = QuantSpec(
            precision, "per_tensor", algorithm=algorithm, weight_observer=weight_observer
        )
        errors[algorithm] = _layer_error(model, calibrate(quantize(model, spec), calib), held_out)
    assert errors["adaround"] < 0.7 * errors["none"], errors


def test_adaround_on_a_linear_layer_and_its_codes_stay_on_the_layer_grid():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8)).eval()
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(16, 16, generator=g)
    calib = [torch.randn(32, 16, generator=g) @ mix for _ in range(6)]
    held_out = [torch.randn(32, 16, generator=g) @ mix for _ in range(4)]
    plain = calibrate(quantize(model, QuantSpec("w3a16")), calib)
    learned = calibrate(quantize(model, QuantSpec("w3a16", algorithm="adaround")), calib)
    rtn_codes, scale, _ = plain[0].weight_quant.codes(model[0].weight)
    codes, learned_scale, _ = learned[0].weight_quant.codes(learned[0].weight)
    assert torch.equal(learned_scale, scale)  # the grid is the layer's own
    assert 0 < int((codes != rtn_codes).sum()) and bool(((codes - rtn_codes).abs() <= 1).all())
    fresh = WeightQuantizer(3, learned[0].weight_quant.granularity, "symmetric", "minmax")
    assert torch.equal(fresh(learned[0].weight), learned[0].weight.detach())
    assert _layer_error(model, learned, held_out) < _layer_error(model, plain, held_out)


def test_soft_rounding_starts_at_the_float_weight_and_hard_rounding_is_on_the_grid():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 3, 3)).eval()
    qmodel = calibrate(quantize(model, QuantSpec("w4a16")), _smooth_volumes(1, 0, channels=2))
    layer = qmodel[0]
    grid = weight_grid(layer)
    rounding = SoftRounding(layer.weight, grid)
    with torch.no_grad():
        free = ~grid.pinned
        soft = rounding(layer.weight)
        torch.testing.assert_close(
            soft[free], layer.weight[free], atol=2e-4 * float(grid.scale.max()), rtol=0
        )
        rounding.hard = True
        hard_codes = rounding.codes(hard=True)
    assert torch.equal(hard_codes, hard_codes.round())
    assert int(grid.pinned.sum()) == 1  # per tensor: the weight of largest magnitude
    assert float(hard_codes[grid.pinned].abs()) == grid.qmax


def test_adaround_is_deterministic_and_its_state_is_cached(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1)).eval()
    calib = _smooth_volumes(3, seed=1)
    spec = QuantSpec("w4a8", algorithm="adaround", algorithm_options={"iters": 50})
    first, second = (calibrate(quantize(model, spec), calib) for _ in range(2))
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    loaded = load_ranges(quantize(model, spec), save_ranges(first, tmp_path / "r.pt"))
    x = _smooth_volumes(1, seed=7)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), first(x))
