"""Number formats against independent references: torch's float8 dtypes for the FP8 element
casts, and the numpy definitions of ``format_reference`` for MX, NVFP4 and integer groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from benchmark.quant import QuantSpec, QuantSpecError, calibrate, quantization_table, quantize
from benchmark.quant.blocks import group_fake_quant, mx_fake_quant, nvfp4_fake_quant
from benchmark.quant.elements import E2M1, E2M3, E3M2, E4M3, E5M2, INT8, round_to_element
from benchmark.quant.format_quantizers import float_fake_quant, float_scale
from tests.quant import format_reference as ref

CONF = Path(__file__).resolve().parents[2] / "conf" / "precision"


def _samples(limit: float, seed: int = 0) -> torch.Tensor:
    """Log-uniform magnitudes from far below the subnormals to the top of the range, both signs,
    every grid value and every midpoint between neighbours (the ties)."""
    g = torch.Generator().manual_seed(seed)
    exponents = torch.empty(20000).uniform_(-30, float(np.log2(limit)), generator=g)
    signs = torch.randint(0, 2, (20000,), generator=g) * 2 - 1
    return (signs * torch.exp2(exponents)).clamp(-limit, limit)


@pytest.mark.parametrize(
    ("element", "dtype"), [(E4M3, torch.float8_e4m3fn), (E5M2, torch.float8_e5m2)], ids=str
)
def test_fp8_element_cast_equals_torch_float8(element, dtype):
    codes = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    finite = codes[torch.isfinite(codes)].unique()
    middles = (finite[1:] + finite[:-1]) / 2
    x = torch.cat([_samples(element.max_normal), finite, middles, -middles])
    expected = x.to(dtype).float()
    assert torch.equal(round_to_element(x, element), expected)
    # beyond the largest normal the engine saturates (float8_e4m3fn would give NaN, e5m2 inf)
    big = torch.tensor([element.max_normal * 1.5, -element.max_normal * 4, 1e30])
    assert torch.equal(round_to_element(big, element).abs(), torch.full((3,), element.max_normal))


@pytest.mark.parametrize("name", ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1"])
def test_minifloat_grids_equal_the_decoded_bit_patterns(name):
    element = {"e4m3": E4M3, "e5m2": E5M2, "e3m2": E3M2, "e2m3": E2M3, "e2m1": E2M1}[name]
    values = ref.grid(name)
    assert values.max() == element.max_normal
    middles = torch.from_numpy((values[1:] + values[:-1]) / 2).float()  # the ties
    x = torch.cat([_samples(element.max_normal * 2, 1), torch.from_numpy(values).float(), middles])
    expected = ref.round_to_grid(x.numpy(), values).astype(np.float32)
    np.testing.assert_array_equal(round_to_element(x, element).numpy(), expected)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2], ids=str)
@pytest.mark.parametrize("scale_dims", [(), (0,)], ids=["per_tensor", "per_channel"])
def test_scaled_fp8_equals_torch_float8_with_the_same_scales(dtype, scale_dims):
    element = E4M3 if dtype == torch.float8_e4m3fn else E5M2
    w = torch.randn(6, 5, 3, 3, 3) * torch.logspace(-3, 2, 6).view(6, 1, 1, 1, 1)
    reduce = tuple(d for d in range(w.ndim) if d not in scale_dims)
    amax = w.abs().amax(dim=reduce, keepdim=True)
    scale = float_scale(-amax, amax, element)
    expected = (w * torch.reciprocal(scale)).to(dtype).float() * scale
    assert torch.equal(float_fake_quant(w, scale, element), expected)


def _blocky(shape, seed=0) -> torch.Tensor:
    """Values spanning many binades per block, exact zeros, and an all-zero block."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * torch.exp2(torch.randint(-12, 12, shape, generator=g))
    x[..., 0, :] = 0
    return x


@pytest.mark.parametrize(
    ("element", "name"),
    [
        (E4M3, "e4m3"),
        (E5M2, "e5m2"),
        (E2M3, "e2m3"),
        (E3M2, "e3m2"),
        (E2M1, "e2m1"),
        (INT8, "int8"),
    ],
)
@pytest.mark.parametrize("axis", [1, -1])
def test_mx_equals_numpy_reference(element, name, axis):
    x = _blocky((3, 70, 5))  # 70 along axis 1: two full blocks of 32 and a short one
    ours = mx_fake_quant(x, axis, element, 32).numpy()
    np.testing.assert_array_equal(ours, ref.mx(x.numpy(), axis, name, 32))


@pytest.mark.parametrize("axis", [1, 0])
def test_nvfp4_equals_numpy_reference(axis):
    x = _blocky((40, 6, 3), seed=2)
    x[:, 5] = 0  # a zero row: blocks whose scales round to 0
    ours = nvfp4_fake_quant(x, axis, (0, 1, 2), 16).numpy()
    np.testing.assert_array_equal(ours, ref.nvfp4(x.numpy(), axis, (0, 1, 2), 16))
    per_sample = nvfp4_fake_quant(x, axis, (1, 2), 16).numpy()
    np.testing.assert_array_equal(per_sample, ref.nvfp4(x.numpy(), axis, (1, 2), 16))


@pytest.mark.parametrize(("bits", "size"), [(4, 32), (4, 128), (3, 7)])
def test_integer_groups_equal_numpy_reference(bits, size):
    x = _blocky((2, 300, 3), seed=3)
    ours = group_fake_quant(x, 1, size, bits, "symmetric").numpy()
    np.testing.assert_array_equal(ours, ref.int_groups(x.numpy(), 1, size, bits))


@pytest.mark.parametrize(
    ("precision", "check"),
    [
        ("mxfp4", lambda a, axis: ref.mx(a, axis, "e2m1")),
        ("mxfp8_e4m3", lambda a, axis: ref.mx(a, axis, "e4m3")),
        ("mxfp6_e3m2", lambda a, axis: ref.mx(a, axis, "e3m2")),
        ("mxint8", lambda a, axis: ref.mx(a, axis, "int8")),
        ("w4a4_g32", lambda a, axis: ref.int_groups(a, axis, 32, 4)),
    ],
)
def test_quantized_conv_uses_blocks_along_input_channels(precision, check):
    """Weights [O, I, k, k, k] and inputs [B, C, D, H, W] both blocked along the channels the
    convolution sums over, as the OCP reference library does for convolutions."""
    torch.manual_seed(0)
    conv = nn.Conv3d(40, 3, 3, padding=1).eval()
    x = torch.randn(2, 40, 4, 4, 4)
    spec = QuantSpec(precision, act_mapping="symmetric")
    qconv = calibrate(quantize(nn.Sequential(conv), spec), [x])
    weight = torch.from_numpy(check(conv.weight.detach().numpy(), 1))
    inputs = torch.from_numpy(check(x.numpy(), 1))
    with torch.no_grad():
        expected = F.conv3d(inputs, weight, conv.bias, padding=1)
        assert torch.equal(qconv(x), expected)
    table = quantization_table(qconv)
    assert table.loc[0, "execution"] == "block-scaled"


def test_nvfp4_linear_blocks_the_features_and_scales_per_sample():
    torch.manual_seed(0)
    linear = nn.Linear(48, 5).eval()
    x = torch.randn(3, 7, 48)
    qlinear = calibrate(quantize(nn.Sequential(linear), QuantSpec("nvfp4")), [x])
    weight = ref.nvfp4(linear.weight.detach().numpy(), 1, (0, 1))
    inputs = ref.nvfp4(x.numpy(), -1, (1, 2))
    with torch.no_grad():
        expected = F.linear(torch.from_numpy(inputs), torch.from_numpy(weight), linear.bias)
        assert torch.equal(qlinear(x), expected)


def test_fp8_spec_quantizes_with_the_granularity_policy(tiny_segnet):
    x = torch.randn(2, 1, 8, 8, 8)
    for granularity, weight_scheme in (
        ("per_tensor", "per_tensor/static/fp8_e4m3"),
        ("per_channel_token", "per_axis0/static/fp8_e4m3"),
    ):
        qmodel = calibrate(quantize(tiny_segnet, QuantSpec("fp8_e4m3", granularity)), [x])
        table = quantization_table(qmodel).set_index("module")
        assert table.loc["body.2", "weight_scheme"] == weight_scheme
        with torch.no_grad():
            w = tiny_segnet.head.weight
            dims = (1, 2, 3, 4) if granularity != "per_tensor" else (0, 1, 2, 3, 4)
            amax = w.abs().amax(dim=dims, keepdim=True)
            scale = amax / 448
            expected = (w * torch.reciprocal(scale)).to(torch.float8_e4m3fn).float() * scale
            assert torch.equal(qmodel.head.weight_quant(qmodel.head.weight), expected)
    assert table.loc["head", "execution"] == "simulation-only"
    assert "fp8-factorizable" in set(
        quantization_table(quantize(tiny_segnet, QuantSpec("fp8_e5m2"))).execution
    )


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_precision_file_builds_a_spec_that_runs(path, tiny_segnet):
    name = OmegaConf.load(path).name
    spec = QuantSpec(name)
    x = torch.randn(1, 1, 8, 8, 8)
    qmodel = calibrate(quantize(tiny_segnet, spec), [x])
    with torch.no_grad():
        out, float_out = qmodel(x), tiny_segnet(x)
    assert out.shape == float_out.shape and bool(torch.isfinite(out).all())
    assert float((out - float_out).norm() / float_out.norm()) < 0.5, name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "mxfp4", "granularity": "adaptive"}, "per_block"),
        ({"precision": "w8a8", "granularity": "per_block"}, "per_tensor"),
        ({"precision": "nvfp4", "observer": "mse"}, "minmax"),
        ({"precision": "fp8_e4m3", "act_mapping": "asymmetric"}, "signed"),
        ({"precision": "fp8_e5m2", "observer": "histogram"}, "uniform integer grids"),
        ({"precision": "w4a4_g1"}, "group size"),
        ({"precision": "mxfp5"}, "does not parse"),
    ],
)
def test_formats_reject_settings_that_do_not_apply(kwargs, message):
    with pytest.raises(QuantSpecError, match=message):
        QuantSpec(**kwargs)
