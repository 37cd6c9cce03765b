"""Spec and inference findings: one spelling per precision, no silently ignored settings, and
NaN/Inf at inference named instead of quantized."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.quant import NonFiniteError, QuantSpec, QuantSpecError, calibrate, quantize


def test_leading_zeros_are_refused_not_hashed_as_a_second_point():
    with pytest.raises(QuantSpecError, match="leading zeros"):
        QuantSpec("w08a08")
    with pytest.raises(QuantSpecError, match="leading zeros"):
        QuantSpec("w4a4_g032")
    assert QuantSpec("W8A8").calibration_key() == QuantSpec("w8a8").calibration_key()


def test_misspelt_exclude_type_is_an_error_listing_the_valid_names():
    with pytest.raises(QuantSpecError, match="'Conv3D' is not a quantizable type") as info:
        QuantSpec("w8a8", exclude_types=["Conv3D"])
    message = str(info.value)
    assert "did you mean 'Conv3d'" in message
    assert all(name in message for name in ("Conv3d", "ConvTranspose3d", "Linear", "SABlock"))
    assert QuantSpec("w8a8", exclude_types=[nn.ConvTranspose3d]).exclude_types == (
        "ConvTranspose3d",
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"granularity": "adaptive"},
        {"granularity": "per_tensor"},
        {"observer": "mse"},
    ],
)
def test_float_precisions_refuse_quantization_settings(kwargs):
    with pytest.raises(QuantSpecError, match="fp32"):
        QuantSpec("fp32", **kwargs)


def test_float_precisions_default_to_none_and_integers_keep_their_defaults():
    spec = QuantSpec("bf16")
    assert (spec.granularity, spec.observer, spec.algorithm) == ("none", "none", "none")
    assert QuantSpec("fp16", "none", "none").is_float
    spec = QuantSpec("w4a8")
    assert (spec.granularity, spec.observer) == ("per_tensor", "minmax")
    assert QuantSpec("mxfp4").granularity == "per_block"
    with pytest.raises(QuantSpecError, match="granularity"):
        QuantSpec("w8a8", "none")


def _calibrated(model, spec=None):
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(1, 1, 8, 8, 8, generator=g) for _ in range(2)]
    return calibrate(quantize(model, spec or QuantSpec("w8a8", "per_channel_token")), batches)


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_inference_input_is_an_error(tiny_segnet, value):
    qmodel = _calibrated(tiny_segnet)
    x = torch.randn(1, 1, 8, 8, 8)
    x[0, 0, 3, 3, 3] = value
    with (
        torch.no_grad(),
        pytest.raises(NonFiniteError, match="input 0 of the quantized TinySegNet"),
    ):
        qmodel(x)
    with torch.no_grad():
        assert bool(torch.isfinite(qmodel(torch.nan_to_num(x, nan=0.0, posinf=1.0))).all())


class _Log(nn.Module):
    def forward(self, x):
        return torch.log(x)  # NaN wherever the previous conv output is negative


def test_nan_arising_inside_names_the_first_operand_that_reads_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), _Log(), nn.Conv3d(2, 1, 1)).eval()
    qmodel = _calibrated(nn.Sequential(model[0], nn.ReLU(), model[2]))  # clean calibration
    qmodel[1] = _Log()
    with torch.no_grad(), pytest.raises(NonFiniteError, match=r"inference input of 2\.input"):
        qmodel(torch.randn(1, 1, 8, 8, 8))
    assert not any(q.check_inputs for q in qmodel.modules() if hasattr(q, "check_inputs"))
