"""Selection by data flow: keep_first_last follows the traced forward, modules the forward never
runs stay float32, and selection and table order are deterministic."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR
from torch import nn

from benchmark.models.registry import build_model
from benchmark.quant import (
    QuantSpec,
    QuantSpecError,
    calibrate,
    quantization_table,
    quantize,
    quantized_layer_names,
)


class _Crossed(nn.Module):
    """Registration order is not data-flow order: ``skip`` is registered last and reads the raw
    input, ``head`` is registered before ``body`` yet produces the output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(1, 4, 3, padding=1)
        self.head = nn.Conv3d(4, 2, 1)
        self.body = nn.Conv3d(4, 4, 3, padding=1)
        self.skip = nn.Conv3d(1, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = nn.functional.pad(x, (0, 0, 0, 0, 0, 0))
        return self.head(torch.relu(self.body(self.stem(padded))) + self.skip(x))


def _example() -> torch.Tensor:
    return torch.zeros(1, 1, 8, 8, 8)


def test_keep_first_last_follows_the_data_flow():
    qmodel = quantize(_Crossed(), QuantSpec("w8a8", keep_first_last=True), example=_example())
    # first: stem (through a pad) and skip read the input; last: head
    assert quantized_layer_names(qmodel) == ["body"]
    rows = quantization_table(qmodel).set_index("module")["execution"]
    assert rows.to_dict() == {
        "stem": "float32 (keep_first_last)",
        "head": "float32 (keep_first_last)",
        "body": "integer-factorizable",
        "skip": "float32 (keep_first_last)",
    }


def test_keep_first_last_without_example_says_to_pass_one(tiny_segnet):
    with pytest.raises(QuantSpecError, match=r"example=torch.zeros\(1, C, \*roi\)"):
        quantize(tiny_segnet, QuantSpec("w8a8", keep_first_last=True))


def test_swinunetr_keeps_every_layer_reading_the_image():
    torch.manual_seed(0)
    model = SwinUNETR(1, 2, feature_size=12, window_size=4, norm_name="batch").eval()
    example = torch.zeros(1, 1, 32, 32, 32)
    qmodel = quantize(model, QuantSpec("w8a8", keep_first_last=True), example=example)
    kept = [name for name, _, _, why in qmodel.quant_skipped if why == "keep_first_last"]
    assert kept == [
        "swinViT.patch_embed.proj",
        "encoder1.layer.conv1.conv",
        "encoder1.layer.conv3.conv",
        "out.conv.conv",
    ]


@pytest.fixture(scope="module")
def nnunet():
    torch.manual_seed(0)
    return build_model("tiny_nnunet", 1, 3).eval()


def test_unused_heads_stay_float_only_with_an_example(nnunet):
    example = torch.zeros(1, 1, 32, 32, 32)
    spec = QuantSpec("w8a8", "per_channel_token")
    traced = quantize(nnunet, spec, example=example)
    plain = quantize(nnunet, spec)
    unused = [f"decoder.seg_layers.{i}" for i in range(3)]
    assert all(name in quantized_layer_names(plain) for name in unused)
    assert not any(name in quantized_layer_names(traced) for name in unused)
    table = quantization_table(traced).set_index("module")
    assert set(table.loc[unused, "execution"]) == {"float32 (unused in forward)"}
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(1, 1, 32, 32, 32, generator=g) for _ in range(2)]
    calibrate(traced, batches)
    calibrate(plain, batches)
    with torch.no_grad():
        assert torch.equal(traced(batches[0]), plain(batches[0]))


def test_selection_and_table_order_are_registration_order(nnunet):
    example = torch.zeros(1, 1, 32, 32, 32)
    spec = QuantSpec("w8a8", keep_first_last=True, exclude=("encoder.stages.1.*",))
    order = {name: i for i, (name, _) in enumerate(nnunet.named_modules())}
    runs = [quantize(nnunet, spec, example=example) for _ in range(2)]
    assert runs[0].quant_skipped == runs[1].quant_skipped
    skipped = [owner for owner, _, _, _ in runs[0].quant_skipped]
    assert skipped == sorted(skipped, key=order.__getitem__)
    modules = list(quantization_table(runs[0])["module"])
    assert modules == sorted(modules, key=order.__getitem__)
