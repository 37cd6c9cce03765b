"""Attention matmul quantization in MONAI SwinUNETR / UNETR blocks and nn.MultiheadAttention."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks.selfattention import SABlock
from monai.networks.nets import UNETR, SwinUNETR
from monai.networks.nets.swin_unetr import WindowAttention
from torch import nn

from benchmark.quant import QuantSpec, calibrate, quantization_table, quantize
from benchmark.quant.attention import QuantAttention


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _identity_operands(qmodel: nn.Module) -> None:
    """Turn the matmul operand quantizers off to compare the re-implemented forward."""
    for module in qmodel.modules():
        if isinstance(module, QuantAttention):
            for operand in ("q", "k", "attn", "v"):
                setattr(module, f"{operand}_quant", nn.Identity())


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    # batch norm in eval mode: instance norm cannot normalise the 1x1x1 bottleneck of a 32^3 input
    return SwinUNETR(1, 2, feature_size=12, window_size=4, norm_name="batch").eval()


@pytest.fixture(scope="module")
def unetr():
    torch.manual_seed(0)
    return UNETR(1, 2, img_size=32, feature_size=4, hidden_size=24, mlp_dim=48, num_heads=4).eval()


@pytest.mark.parametrize("which", ["swin", "unetr"])
def test_reimplemented_forward_matches_monai(which, request):
    model = request.getfixturevalue(which)
    kind = WindowAttention if which == "swin" else SABlock
    names = [n for n, m in model.named_modules() if type(m) is kind]
    assert names
    qmodel = quantize(model, QuantSpec("w8a8", include=tuple(names)))
    _identity_operands(qmodel)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(qmodel(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["swin", "unetr"])
def test_attention_operands_quantized_and_reported(which, request):
    model = request.getfixturevalue(which)
    x = torch.randn(1, 1, 32, 32, 32)
    spec = QuantSpec("w8a8", "per_channel_token", include=("*attn*",), quantize_attention=True)
    qmodel = calibrate(quantize(model, spec), [x])
    table = quantization_table(qmodel)
    matmuls = table[table["op_type"].str.contains("matmul", na=False)]
    assert len(matmuls) >= 2 and set(matmuls["module"].str.rsplit(".", n=1).str[-1]) == {
        "matmul_qk",
        "matmul_av",
    }
    av = matmuls[matmuls["op_type"].str.endswith("matmul_av")]
    assert set(av["execution"]) == {"simulation-only"}  # per-token v lies on the summed index
    assert "attn: per_token/dynamic/unsigned" not in set(av["activation_scheme"])
    with torch.no_grad():
        ref = model(x)
        w8 = _rel(qmodel(x), ref)
        spec4 = QuantSpec("w4a4", "per_channel_token", include=("*attn*",))
        w4 = _rel(calibrate(quantize(model, spec4), [x])(x), ref)
    assert 0 < w8 < 0.05 and w4 > 3 * w8


def test_swin_full_w16a16_is_lossless_and_static_calibrates(swin):
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        ref = swin(x)
        for granularity in ("per_tensor", "adaptive"):
            qmodel = calibrate(quantize(swin, QuantSpec("w16a16", granularity)), [x])
            assert _rel(qmodel(x), ref) < 1e-3, granularity


class _SelfAttention(nn.Module):
    """nn.MultiheadAttention as a one-input model, with the last two keys masked out."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(2, x.shape[1 if self.mha.batch_first else 0], dtype=torch.bool)
        mask[:, -2:] = True
        return self.mha(x, x, x, key_padding_mask=mask)[0]


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention(batch_first):
    torch.manual_seed(0)
    model = _SelfAttention(batch_first).eval()
    shape = (2, 10, 16) if batch_first else (10, 2, 16)
    calib, x = [torch.randn(shape) for _ in range(3)], torch.randn(shape)
    errors = {}
    with torch.no_grad():
        ref = model(x)
        for precision in ("w16a16", "w8a8", "w4a4"):
            for granularity in ("per_tensor", "per_channel_token"):
                qmodel = calibrate(quantize(model, QuantSpec(precision, granularity)), calib)
                errors[precision, granularity] = _rel(qmodel(x), ref)
        out, weights = qmodel.mha(x, x, x, need_weights=True, average_attn_weights=False)
    assert weights.shape == (2, 4, 10, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 10))
    assert all(errors["w16a16", g] < 1e-3 for g in ("per_tensor", "per_channel_token")), errors
    assert all(errors["w8a8", g] < 0.05 for g in ("per_tensor", "per_channel_token")), errors
    assert all(
        errors["w4a4", g] > 3 * errors["w8a8", g] for g in ("per_tensor", "per_channel_token")
    )
    table = quantization_table(qmodel)
    assert set(table["module"]) == {"mha.in_proj", "mha.out_proj", "mha.matmul_qk", "mha.matmul_av"}


@pytest.mark.parametrize("which", ["swin", "unetr"])
def test_matmul_operands_alone_change_the_output(which, request):
    """With every Linear kept in float32 only Q, K, A and V are quantized: the error must come
    from the two matmuls and shrink with more bits."""
    model = request.getfixturevalue(which)
    x = torch.randn(1, 1, 32, 32, 32)
    errors = {}
    with torch.no_grad():
        ref = model(x)
        for precision in ("w16a16", "w8a8", "w4a4"):
            spec = QuantSpec(precision, include=("*attn*",), exclude_types=("Linear",))
            qmodel = calibrate(quantize(model, spec), [x])
            assert set(quantization_table(qmodel)["op_type"].dropna()) >= {
                f"{type(m).__name__}.matmul_qk"
                for m in model.modules()
                if type(m) in (SABlock, WindowAttention)
            }
            errors[precision] = _rel(qmodel(x), ref)
    assert 10 * errors["w16a16"] < errors["w8a8"] and 3 * errors["w8a8"] < errors["w4a4"], errors
