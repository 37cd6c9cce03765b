"""Quantize/dequantize against an independent numpy integer reference and torch's fake-quant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.quant import primitives
from benchmark.quant.granularity import PerAxis, PerTensor, PerToken, PerVoxel
from benchmark.quant.observers import estimate_range
from benchmark.quant.primitives import (
    choose_qparams,
    dequantize_codes,
    fake_quantize,
    quant_range,
    quantize_codes,
)
from benchmark.quant.quantizer import ActivationQuantizer

EPS = np.float32(np.finfo(np.float32).eps)


def numpy_fake_quant(x: np.ndarray, scale_dims: tuple[int, ...], bits: int, mapping: str):
    """Reference written from the definitions with numpy integer arithmetic for the codes."""
    reduce = tuple(d for d in range(x.ndim) if d not in scale_dims)
    lo = np.minimum(x.min(axis=reduce, keepdims=True), np.float32(0))
    hi = np.maximum(x.max(axis=reduce, keepdims=True), np.float32(0))
    if mapping == "symmetric":
        qmin, qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        scale = np.maximum(-lo, hi) / np.float32(qmax)
    else:
        qmin, qmax = 0, 2**bits - 1
        scale = (hi / np.float32(qmax)) if mapping == "unsigned" else (hi - lo) / np.float32(qmax)
    scale = np.maximum(scale.astype(np.float32), EPS)
    zp = np.zeros(scale.shape, dtype=np.int64)
    if mapping == "asymmetric":
        zp = np.clip(-np.rint(lo / scale), qmin, qmax).astype(np.int64)
    inv = (np.float32(1) / scale).astype(np.float32)
    codes = np.rint((x * inv).astype(np.float32)).astype(np.int64) + zp
    codes = np.clip(codes, qmin, qmax)
    return ((codes - zp).astype(np.float32) * scale).astype(np.float32), codes


def special_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 6, generator=g) * torch.linspace(0.01, 10, 6)
    zero_channel = x.clone()
    zero_channel[:, 1] = 0
    return {
        "random": x,
        "zero_channel": zero_channel,
        "constant": torch.full((2, 3, 4, 5, 6), 0.37),
        "negative_only": -x.abs() - 0.1,
        "all_zero": torch.zeros(2, 3, 4, 5, 6),
        "relu": x.clamp(min=0),
    }


GRANULARITIES = [PerTensor(), PerAxis(1), PerToken(), PerVoxel()]


@pytest.mark.parametrize("mapping", ["symmetric", "unsigned", "asymmetric"])
@pytest.mark.parametrize("granularity", GRANULARITIES, ids=lambda g: g.name)
@pytest.mark.parametrize("dynamic", [False, True])
def test_fake_quantize_equals_numpy_integer_reference(granularity, mapping, dynamic):
    for case, x in special_tensors().items():
        if mapping == "unsigned" and case == "negative_only":
            continue
        dims = granularity.scale_dims(x.ndim, dynamic)
        for bits in range(2, 17):
            lo, hi = estimate_range(x, dims, "minmax")
            scale, zp, qmin, qmax = choose_qparams(lo, hi, bits, mapping)
            ours = fake_quantize(x.contiguous(), scale, zp, qmin, qmax).numpy()
            ref, ref_codes = numpy_fake_quant(x.numpy(), dims, bits, mapping)
            np.testing.assert_array_equal(ours, ref, err_msg=f"{case} bits={bits}")
            codes = quantize_codes(x, scale, zp, qmin, qmax).numpy().astype(np.int64)
            np.testing.assert_array_equal(codes, ref_codes, err_msg=f"{case} bits={bits}")
            np.testing.assert_array_equal(
                dequantize_codes(torch.from_numpy(codes).float(), scale, zp), ref
            )


def test_special_values_are_exact():
    tensors = special_tensors()
    for mapping in ("symmetric", "asymmetric"):
        for name in ("all_zero", "zero_channel"):
            x = tensors[name]
            lo, hi = estimate_range(x, (1,), "minmax")
            out = fake_quantize(x, *choose_qparams(lo, hi, 4, mapping))
            assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1])), (name, mapping)
        x = tensors["constant"]
        lo, hi = estimate_range(x, (), "minmax")
        out = fake_quantize(x, *choose_qparams(lo, hi, 2, mapping))
        torch.testing.assert_close(out, x, rtol=1e-6, atol=0)


@pytest.mark.parametrize("bits", range(2, 17))
@pytest.mark.parametrize("mapping", ["symmetric", "unsigned", "asymmetric"])
def test_equals_torch_fake_quantize_per_tensor_and_per_channel(bits, mapping):
    x = torch.randn(3, 5, 7) * 4 + 0.5
    lo, hi = estimate_range(x, (), "minmax")
    scale, zp, qmin, qmax = choose_qparams(lo, hi, bits, mapping)
    expected = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), qmin, qmax)
    ours = quantize_codes(x, scale, zp, qmin, qmax)
    assert torch.equal(dequantize_codes(ours, scale, zp), expected)
    lo, hi = estimate_range(x, (1,), "minmax")
    scale, zp, qmin, qmax = choose_qparams(lo, hi, bits, mapping)
    expected = torch.fake_quantize_per_channel_affine(
        x, scale.flatten(), zp.flatten(), 1, qmin, qmax
    )
    generic = dequantize_codes(quantize_codes(x, scale, zp, qmin, qmax), scale, zp)
    assert torch.equal(generic, expected)
    assert torch.equal(fake_quantize(x, scale, zp, qmin, qmax), expected)


def test_quant_range_and_worked_examples():
    assert quant_range(8, "symmetric") == (-127, 127)
    assert quant_range(2, "symmetric") == (-1, 1)
    assert quant_range(8, "asymmetric") == (0, 255)
    scale, zp, _, _ = choose_qparams(torch.tensor(-3.5), torch.tensor(10.2), 8, "asymmetric")
    assert int(zp) == 65
    torch.testing.assert_close(scale, torch.tensor(13.7 / 255))
    scale, zp, _, _ = choose_qparams(torch.tensor(-3.5), torch.tensor(10.2), 8, "symmetric")
    torch.testing.assert_close(scale, torch.tensor(10.2 / 127))
    with pytest.raises(ValueError, match="outside 2..16"):
        quant_range(17, "symmetric")


def test_granularity_dims_table():
    assert PerTensor().scale_dims(5) == ()
    assert PerTensor().scale_dims(5, dynamic=True) == (0,)
    assert PerAxis(1).scale_dims(5) == (1,)
    assert PerAxis(0).reduce_dims(5) == (1, 2, 3, 4)
    assert PerToken().scale_dims(3) == (1,)
    assert PerToken().scale_dims(4) == (1, 2)
    assert PerToken().scale_dims(3, dynamic=True) == (0, 1)
    assert PerVoxel().scale_dims(5) == (2, 3, 4)
    assert PerVoxel().scale_dims(5, dynamic=True) == (0, 2, 3, 4)
    assert PerAxis(1) == PerAxis(1) and hash(PerVoxel()) == hash(PerVoxel())
    with pytest.raises(ValueError, match="PerAxis"):
        PerAxis(5).scale_dims(3)


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("granularity", [PerTensor(), PerVoxel()], ids=lambda g: g.name)
def test_dynamic_auto_quantizer_picks_a_grid_per_sample(bits, granularity):
    """``auto``: a non-negative sample gets the unsigned grid, a signed one the symmetric grid."""
    x = special_tensors()["random"]
    mixed = torch.stack([x[0].clamp(min=0), x[1]])
    quantizer = ActivationQuantizer(bits, granularity, "auto", dynamic=True, observer="minmax")
    for batch, mappings in ((mixed, ("unsigned", "symmetric")), (mixed[:1], ("unsigned",))):
        out = quantizer(batch).numpy()
        for i, mapping in enumerate(mappings):
            sample = batch[i : i + 1].numpy()
            ref, _ = numpy_fake_quant(sample, granularity.scale_dims(5, True), bits, mapping)
            np.testing.assert_array_equal(out[i : i + 1], ref, err_msg=f"{mapping} bits={bits}")


@pytest.mark.parametrize("mapping", ["symmetric", "unsigned", "asymmetric"])
@pytest.mark.parametrize("granularity", [PerTensor(), PerAxis(1)], ids=lambda g: g.name)
def test_static_quantizer_fast_path_equals_numpy_reference(mapping, granularity):
    """The calibrated forward (scalar scales, scalar clamp bounds) keeps the exact definition."""
    x = special_tensors()["random"]
    quantizer = ActivationQuantizer(8, granularity, mapping, dynamic=False, observer="minmax")
    for bits in (2, 4, 8, 16):
        quantizer.bits = bits
        lo, hi = estimate_range(x, granularity.scale_dims(5), "minmax")
        quantizer.set_range(lo, hi, mapping)
        ref, _ = numpy_fake_quant(x.numpy(), granularity.scale_dims(5), bits, mapping)
        np.testing.assert_array_equal(quantizer(x).numpy(), ref, err_msg=f"bits={bits}")


@pytest.mark.parametrize("granularity", GRANULARITIES, ids=lambda g: g.name)
@pytest.mark.parametrize("mapping", ["symmetric", "asymmetric"])
def test_cache_blocked_path_equals_numpy_reference(granularity, mapping, monkeypatch):
    """Blocks of 7 elements cut through every dimension of a contiguous and a strided input."""
    monkeypatch.setattr(primitives, "CPU_BLOCK_ELEMENTS", 7)
    x = special_tensors()["random"]
    for name, tensor in (("contiguous", x), ("strided", x.transpose(2, 4))):
        dims = granularity.scale_dims(tensor.ndim, dynamic=True)
        lo, hi = estimate_range(tensor, dims, "minmax")
        scale, zp, qmin, qmax = choose_qparams(lo, hi, 3, mapping)
        ref, _ = numpy_fake_quant(tensor.numpy(), dims, 3, mapping)
        np.testing.assert_array_equal(
            fake_quantize(tensor, scale, zp, qmin, qmax).numpy(), ref, err_msg=name
        )
