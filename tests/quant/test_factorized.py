"""A quantized convolution equals integer accumulation of integer codes times the scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.quant import QuantSpec, calibrate, quantize
from benchmark.quant.factorized import conv_per_kernel_position


def int_conv3d(x_codes: np.ndarray, w_codes: np.ndarray, padding: int) -> np.ndarray:
    """int64 convolution kept per input channel: ``acc[b, o, c, *v]`` (stride 1)."""
    x = np.pad(x_codes, [(0, 0), (0, 0)] + [(padding, padding)] * 3)
    b, c = x.shape[:2]
    o, _, kd, kh, kw = w_codes.shape
    out = [x.shape[2 + i] - k + 1 for i, k in enumerate((kd, kh, kw))]
    acc = np.zeros((b, o, c, *out), dtype=np.int64)
    for i in range(kd):
        for j in range(kh):
            for k in range(kw):
                patch = x[:, :, i : i + out[0], j : j + out[1], k : k + out[2]]
                acc += np.einsum("oc,bcdhw->bocdhw", w_codes[:, :, i, j, k], patch)
    return acc


def _codes(qconv, x):
    codes, act_scale, act_zp = qconv.input_quant.codes(x)
    w_codes, w_scale, _ = qconv.weight_quant.codes(qconv.weight)
    as_int = lambda t: t.numpy().astype(np.int64)  # noqa: E731
    return as_int(codes), act_scale, as_int(act_zp), as_int(w_codes), w_scale


@pytest.mark.parametrize(
    ("granularity", "kernel", "position_scales"),
    [
        ("per_tensor", 3, "static"),
        ("per_channel_token", 3, "static"),
        ("adaptive", 1, "static"),
        ("adaptive", 1, "dynamic"),
    ],
)
@pytest.mark.parametrize("act_mapping", ["symmetric", "asymmetric"])
def test_quant_conv3d_equals_integer_accumulation(
    granularity, kernel, position_scales, act_mapping
):
    conv = nn.Conv3d(5, 4, kernel, padding=kernel // 2)
    model = nn.Sequential(conv).eval()
    x = torch.randn(2, 5, 6, 6, 6) * torch.rand(1, 1, 6, 6, 6) * 3
    spec = QuantSpec("w8a8", granularity, act_mapping=act_mapping, position_scales=position_scales)
    qmodel = calibrate(quantize(model, spec), [x])
    with torch.no_grad():
        y = qmodel(x)
    qconv = qmodel[0]
    codes, act_scale, act_zp, w_codes, w_scale = _codes(qconv, x)
    s_w = w_scale.reshape(1, -1, 1, 1, 1, 1).numpy().astype(np.float64)
    bias = conv.bias.detach().numpy().reshape(1, -1, 1, 1, 1).astype(np.float64)
    if granularity == "adaptive":
        # static: one scale map for every sample; dynamic: one per sample
        assert act_scale.shape == ((1 if position_scales == "static" else 2), 1, 6, 6, 6)
        acc = int_conv3d(codes - act_zp, w_codes, 0).sum(axis=2)
        ref = acc * s_w[:, :, 0] * act_scale.numpy().astype(np.float64) + bias
    else:
        acc = int_conv3d(codes - act_zp, w_codes, kernel // 2)
        s_x = act_scale.reshape(1, 1, -1, 1, 1, 1).numpy().astype(np.float64)
        ref = (acc * s_x * s_w).sum(axis=2) + bias
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_per_kernel_position_factorization_equals_fake_quant(stride):
    conv = nn.Conv3d(3, 4, 3, stride=stride, padding=1)
    x = torch.randn(2, 3, 7, 7, 7) * torch.rand(1, 1, 7, 7, 7) * 4
    spec = QuantSpec("w8a8", "adaptive", large_kernel_per_voxel=True)
    qmodel = quantize(nn.Sequential(conv).eval(), spec)
    qconv = qmodel[0]
    assert qconv.execution == "integer-factorizable per kernel position"
    with torch.no_grad():
        y = qmodel(x)
        codes, act_scale, act_zp = qconv.input_quant.codes(x)
        w_codes, w_scale, _ = qconv.weight_quant.codes(qconv.weight)
        ref = conv_per_kernel_position(
            codes - act_zp,
            act_scale,
            w_codes,
            w_scale,
            conv.bias,
            conv.stride,
            conv.padding,
            conv.dilation,
        )
    assert act_scale.shape == (2, 1, 7, 7, 7)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel_token", "adaptive"])
def test_integer_kernel_path_equals_plain_path(granularity, tiny_segnet):
    model = nn.Sequential(tiny_segnet, nn.Flatten(2), nn.Linear(512, 6)).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    plain = quantize(model, QuantSpec("w8a8", granularity))
    fast = quantize(model, QuantSpec("w8a8", granularity, integer_kernels=True))
    calibrate(plain, [x])
    calibrate(fast, [x])
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
