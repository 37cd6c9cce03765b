"""The quantization table lists every compute op, quantized or left in float, and functional
attention (einsum, matmul, scaled_dot_product_attention inside any module) is quantized."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import benchmark.quant as quant
from benchmark.models.registry import build_model
from benchmark.quant import (
    QuantError,
    QuantSpec,
    calibrate,
    float_reference,
    quant_table_hash,
    quantization_table,
    quantize,
    quantized_layer_names,
)
from benchmark.quant.table import TABLE_COLUMNS


class _Mixer(nn.Module):
    """Attention written inline: a conv child, an einsum and a matmul of activations."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(width, 2 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, v = self.proj(x).flatten(2).chunk(2, dim=1)  # [B, C, N]
        q = q.transpose(1, 2)
        attn = torch.einsum("bnc,bmc->bnm", q, q).softmax(-1)
        return (v @ attn.transpose(1, 2)).view_as(x)


class _Functional(nn.Module):
    """A convolution called functionally on its own parameter (no quantized counterpart)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width, width, 1, 1, 1) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.weight)


class _Net(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv3d(1, width, 3, padding=1)
        self.mixer = _Mixer(width)
        self.side = _Functional(width)
        self.head = nn.Conv3d(width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.side(self.mixer(self.stem(x))))


class _Sdpa(nn.Module):
    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)


def _example() -> torch.Tensor:
    return torch.zeros(1, 1, 4, 4, 4)


def _batches(n: int = 2, shape=(1, 1, 4, 4, 4)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def test_table_with_example_lists_float_ops_and_why():
    model = _Net().eval()
    qmodel = calibrate(quantize(model, QuantSpec("w8a8", "per_tensor")), _batches())
    plain = quantization_table(qmodel)
    assert list(plain["module"]) == ["stem", "mixer.proj", "head"]
    table = quantization_table(qmodel, _example()).set_index("module")
    assert list(table.index) == [
        "stem",
        "mixer.einsum_0",
        "mixer.matmul_1",
        "mixer.proj",
        "side.conv3d_0",
        "head",
    ]
    reason = "float32 (functional attention: pass quantize(..., example=) to quantize it)"
    assert table.loc["mixer.einsum_0", "execution"] == reason
    assert table.loc["mixer.matmul_1", "op_type"] == "_Mixer.matmul"
    assert (
        table.loc["side.conv3d_0", "execution"]
        == "float32 (no quantized counterpart of _Functional)"
    )
    assert list(table.columns) == TABLE_COLUMNS[1:]


def test_functional_attention_is_quantized_with_an_example():
    model = _Net().eval()
    spec = QuantSpec("w8a8", "per_channel_token")
    qmodel = calibrate(quantize(model, spec, example=_example()), _batches())
    assert quantized_layer_names(qmodel) == ["stem", "mixer", "mixer.proj", "head"]
    table = quantization_table(qmodel, _example()).set_index("module")
    assert table.loc["mixer.einsum_0", "execution"] == "integer-factorizable"
    # per-token operands of v @ attn^T: the scales of attn^T lie on the summed axis
    assert table.loc["mixer.matmul_1", "execution"] == "simulation-only"
    assert table.loc["mixer.einsum_0", "activation_scheme"].startswith("a: per_token/")
    float_rows = table[table["execution"].str.startswith("float32")]
    assert list(float_rows.index) == ["side.conv3d_0"]
    x = _batches(1)[0]
    with torch.no_grad():
        unquantized_attention = quantize(model, spec)
        calibrate(unquantized_attention, _batches())
        assert not torch.equal(qmodel(x), unquantized_attention(x))
        with float_reference(qmodel):
            torch.testing.assert_close(qmodel(x), model(x), rtol=1e-5, atol=1e-6)


def test_quantize_attention_false_leaves_functional_attention_listed_in_float():
    spec = QuantSpec("w8a8", "per_channel_token", quantize_attention=False)
    qmodel = quantize(_Net().eval(), spec, example=_example())
    assert "mixer" not in quantized_layer_names(qmodel)
    table = quantization_table(qmodel, _example()).set_index("module")
    assert table.loc["mixer.einsum_0", "execution"] == "float32 (quantize_attention=False)"
    assert table.loc["mixer.matmul_1", "execution"] == "float32 (quantize_attention=False)"


def test_scaled_dot_product_attention_operands_are_quantized():
    model = nn.Sequential(_Sdpa()).eval()
    example = torch.zeros(2, 6, 8)
    batches = [torch.randn(2, 6, 8) for _ in range(2)]
    qmodel = calibrate(quantize(model, QuantSpec("w4a4", "per_tensor"), example=example), batches)
    table = quantization_table(qmodel, example).set_index("module")
    qk, av = (
        "0.scaled_dot_product_attention_0.matmul_qk",
        "0.scaled_dot_product_attention_0.matmul_av",
    )
    assert table.loc[qk, "activation_scheme"].startswith("q: per_tensor/static")
    assert table.loc[av, "activation_scheme"].startswith("attn: per_tensor/static")
    assert bool(table.loc[[qk, av], "calibrated"].all())
    assert not table["execution"].str.startswith("float32").any()
    x = batches[0]
    with torch.no_grad():
        with float_reference(qmodel):
            torch.testing.assert_close(qmodel(x), model(x), rtol=1e-5, atol=1e-6)
        assert float((qmodel(x) - model(x)).abs().max()) > 1e-3


class _Varying(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(2)
        for _ in range(int(x.shape[-1]) // 4):
            y = torch.softmax(y @ y.transpose(1, 2), -1) @ y
        return y.view_as(x)


def test_a_forward_unlike_the_example_is_an_error():
    model = nn.Sequential(nn.Conv3d(1, 2, 1), _Varying()).eval()
    qmodel = quantize(model, QuantSpec("w8a8", dynamic=True), example=torch.zeros(1, 1, 4, 4, 4))
    with torch.no_grad(), pytest.raises(QuantError, match="the example forward made no further"):
        qmodel(torch.randn(1, 1, 8, 8, 8))


def test_table_hash_is_stable_and_tells_tables_apart(tiny_segnet):
    example = torch.zeros(1, 1, 8, 8, 8)
    tables = [
        quantization_table(quantize(tiny_segnet, QuantSpec("w8a8")), example) for _ in range(2)
    ]
    assert quant_table_hash(tables[0]) == quant_table_hash(tables[1])
    assert len(quant_table_hash(tables[0])) == 12
    other = quantization_table(quantize(tiny_segnet, QuantSpec("w8a8", exclude=("head",))))
    assert quant_table_hash(other) != quant_table_hash(tables[0])
    assert "quant_table_hash" in quant.__all__


@pytest.fixture(scope="module")
def medformer():
    torch.manual_seed(0)
    return build_model("tiny_medformer", 1, 3).eval()


@pytest.mark.parametrize("attention", [True, False])
def test_medformer_attention_follows_quantize_attention(medformer, attention):
    example = torch.zeros(1, 1, 32, 32, 32)
    spec = QuantSpec("w8a8", "per_channel_token", quantize_attention=attention)
    qmodel = quantize(medformer, spec, example=example)
    table = quantization_table(qmodel, example)
    matmuls = table[table["op_type"].str.contains("einsum|scaled_dot_product_attention")]
    in_float = matmuls["execution"].str.startswith("float32")
    # 5 bidirectional blocks x 3 einsums, 3 semantic maps, and the fusion transformer's attention
    if attention:
        assert len(matmuls) == 5 * 3 + 3 + 2 and not in_float.any()
    else:
        assert len(matmuls) == 5 * 3 + 3 + 1 and in_float.all()
        assert set(matmuls["execution"]) == {"float32 (quantize_attention=False)"}
    assert not table["execution"].str.startswith("float32").any() or not attention
