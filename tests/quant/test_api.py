"""quantize / calibrate / ranges files / reports: behaviour and error messages."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from benchmark.quant import (
    CalibrationError,
    FloatCast,
    NonFiniteError,
    NoQuantizableLayerError,
    QuantSpec,
    QuantSpecError,
    RangesMismatchError,
    UncalibratedError,
    calibrate,
    load_ranges,
    quantization_table,
    quantize,
    quantized_layer_names,
    save_ranges,
)
from benchmark.quant.modules import QuantConv3d


def _batches(n=3, size=8):
    g = torch.Generator().manual_seed(3)
    return [torch.randn(1, 1, size, size, size, generator=g) for _ in range(n)]


def test_original_untouched_and_layers_swapped(tiny_segnet):
    before = {k: v.clone() for k, v in tiny_segnet.state_dict().items()}
    qmodel = quantize(tiny_segnet, QuantSpec("w4a4", "per_channel_token"))
    calibrate(qmodel, _batches())
    assert all(type(m) is not QuantConv3d for m in tiny_segnet.modules())
    assert all(torch.equal(before[k], v) for k, v in tiny_segnet.state_dict().items())
    assert quantized_layer_names(qmodel) == ["body.0", "body.2", "head"]
    assert set(tiny_segnet.state_dict()) <= set(qmodel.state_dict())
    x = _batches(1)[0]
    with torch.no_grad():
        assert not torch.equal(qmodel(x), tiny_segnet(x))


def test_fp32_is_identity_and_float_casts(tiny_segnet):
    x = _batches(1)[0]
    with torch.no_grad():
        ref = tiny_segnet(x)
        assert torch.equal(quantize(tiny_segnet, QuantSpec("fp32"))(x), ref)
        for precision, tol in (("fp16", 5e-3), ("bf16", 3e-2)):
            qmodel = calibrate(quantize(tiny_segnet, QuantSpec(precision)), _batches())
            out = qmodel(x)
            assert out.dtype == torch.float32
            assert 0 < float((out - ref).abs().max()) < tol * float(ref.abs().max())
    table = quantization_table(quantize(tiny_segnet, QuantSpec("bf16")))
    assert set(table["execution"]) == {"bf16 cast"}


def test_cpu_float16_emulation_tracks_the_real_float16_kernels(tiny_segnet):
    x = _batches(1)[0]
    emulated = quantize(tiny_segnet, QuantSpec("fp16"))
    real = FloatCast(copy.deepcopy(emulated.module), torch.float16, emulate_on_cpu=False)
    with torch.no_grad():
        ref, fast, slow = tiny_segnet(x), emulated(x), real(x)
        # every leaf output sits on the float16 grid, like the real kernels' outputs
        assert torch.equal(fast, fast.half().float()) and torch.equal(slow, slow.half().float())
        scale = float(ref.abs().max())
        assert float((fast - slow).abs().max()) <= 2e-3 * scale
        assert 0 < float((fast - ref).abs().max()) < 5e-3 * scale
        overflow = emulated(x * 1e5)  # beyond float16's 65504: inf, as on real kernels
    assert not torch.isfinite(overflow).all()
    assert "module" in dict(emulated.named_children()) and len(list(emulated.children())) == 1


def test_include_exclude_and_keep_first_last(tiny_segnet):
    table = quantization_table(quantize(tiny_segnet, QuantSpec("w8a8", exclude=("head",))))
    assert table.set_index("module").loc["head", "execution"] == "float32 (exclude pattern)"
    example = torch.zeros(1, 1, 8, 8, 8)
    qmodel = quantize(tiny_segnet, QuantSpec("w8a8", keep_first_last=True), example=example)
    assert quantized_layer_names(qmodel) == ["body.2"]
    with pytest.raises(QuantSpecError, match="pass quantize.*example="):
        quantize(tiny_segnet, QuantSpec("w8a8", keep_first_last=True))
    qmodel = quantize(tiny_segnet, QuantSpec("w8a8", include=("body.*",), exclude_types=()))
    assert quantized_layer_names(qmodel) == ["body.0", "body.2"]
    with pytest.raises(NoQuantizableLayerError, match="exclude_types"):
        quantize(tiny_segnet, QuantSpec("w8a8", exclude_types=(nn.Conv3d,)))
    with pytest.raises(NoQuantizableLayerError, match="candidates: none"):
        quantize(nn.Sequential(nn.ReLU()), QuantSpec("w8a8"))


def test_table_tags_schemes(tiny_segnet):
    spec = QuantSpec("w8a8", "adaptive", act_mapping="auto")
    qmodel = calibrate(quantize(tiny_segnet, spec), _batches())
    table = quantization_table(qmodel).set_index("module")
    assert table.loc["head", "activation_scheme"] == "per_voxel/dynamic/auto"
    assert table.loc["head", "execution"] == "integer-factorizable"
    assert table.loc["body.0", "execution"] == "simulation-only"
    # after ReLU the calibrated minimum is 0, so the auto policy picks the unsigned grid
    assert table.loc["body.2", "activation_scheme"] == "per_axis1/static/unsigned"
    assert table.loc["body.0", "activation_scheme"] == "per_axis1/static/symmetric"


def test_bad_inputs_raise_actionable_errors(tiny_segnet):
    qmodel = quantize(tiny_segnet, QuantSpec("w8a8"))
    with pytest.raises(UncalibratedError, match="calibrate"):
        qmodel(_batches(1)[0])
    with pytest.raises(CalibrationError, match="no batches"):
        calibrate(qmodel, [])
    with pytest.raises(CalibrationError, match="expected a tensor"):
        calibrate(qmodel, [{"image": torch.zeros(1, 1, 8, 8, 8)}])
    bad = _batches(1)[0]
    bad[0, 0, 1, 1, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="calibration batch 0"):
        calibrate(qmodel, [bad])
    broken = quantize(tiny_segnet, QuantSpec("fp32"))
    with torch.no_grad():
        broken.head.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="head.weight"):
        quantize(broken, QuantSpec("w8a8"))
    with pytest.raises(TypeError, match="QuantSpec"):
        quantize(tiny_segnet, "w8a8")


def test_static_ranges_batch_equals_one_by_one_and_deterministic(tiny_segnet):
    x = torch.cat(_batches(3))
    for granularity in ("per_tensor", "per_channel_token", "adaptive"):
        spec = QuantSpec("w4a4", granularity, position_scales="static")
        qmodel = calibrate(quantize(tiny_segnet, spec), _batches())
        with torch.no_grad():
            batched = qmodel(x)
            single = torch.cat([qmodel(x[i : i + 1]) for i in range(3)])
            again = calibrate(quantize(tiny_segnet, spec), _batches())(x)
        # float32 convolutions themselves differ by an ulp between batch sizes (oneDNN picks
        # other algorithms); quantization must add no batch dependence on top of that
        torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)
        assert torch.equal(batched, again), granularity
        quantizer = qmodel.body[2].input_quant
        h = torch.rand(3, 4, 8, 8, 8)
        items = torch.cat([quantizer(h[i : i + 1]) for i in range(3)])
        assert torch.equal(quantizer(h), items), granularity


def test_save_load_ranges_roundtrip(tiny_segnet, tmp_path):
    spec = QuantSpec("w4a4", "per_channel_token", "percentile")
    qmodel = calibrate(quantize(tiny_segnet, spec), _batches())
    path = save_ranges(qmodel, tmp_path / f"tiny_{spec.calibration_key()}_c0.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["calibration_key"] == spec.calibration_key()
    fresh = load_ranges(quantize(tiny_segnet, spec), path)
    x = _batches(1)[0]
    with torch.no_grad():
        assert torch.equal(fresh(x), qmodel(x))
    with pytest.raises(RangesMismatchError, match="calibration_key"):
        load_ranges(quantize(tiny_segnet, QuantSpec("w8a8", "per_channel_token")), path)


def test_weight_cache_invalidated_on_change(tiny_segnet):
    qmodel = calibrate(quantize(tiny_segnet, QuantSpec("w8a8")), _batches())
    x = _batches(1)[0]
    with torch.no_grad():
        first = qmodel(x)
        assert torch.equal(qmodel(x), first)
        qmodel.head.weight.mul_(2)
        assert not torch.equal(qmodel(x), first)


def test_works_under_sliding_window_inference(tiny_segnet):
    image = torch.randn(1, 1, 13, 11, 9)
    for granularity in ("per_tensor", "per_channel_token", "adaptive"):
        qmodel = calibrate(quantize(tiny_segnet, QuantSpec("w8a8", granularity)), _batches())
        with torch.no_grad():
            out = sliding_window_inference(image, (8, 8, 8), 2, qmodel, 0.5, mode="gaussian")
            ref = sliding_window_inference(image, (8, 8, 8), 2, tiny_segnet, 0.5, mode="gaussian")
        assert out.shape == (1, 3, 13, 11, 9)
        assert float((out - ref).norm() / ref.norm()) < 0.03, granularity
    static = QuantSpec("w8a8", "adaptive", position_scales="static")
    qmodel = calibrate(quantize(tiny_segnet, static), _batches(size=8))
    with pytest.raises(ValueError, match="calibration ROI size"):
        qmodel(torch.randn(1, 1, 6, 6, 6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu(tiny_segnet):
    spec = QuantSpec("w8a8", "adaptive")
    qmodel = calibrate(quantize(tiny_segnet, spec), _batches())
    x = _batches(1)[0]
    with torch.no_grad():
        cpu = qmodel(x)
        gpu = qmodel.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


class _MixedNet(nn.Module):
    """One of each operator kind: padded and unpadded 1x1x1 convs, a 3x3x3 conv, a transposed
    conv and a linear layer over the channels of every voxel."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv3d(1, 4, 3, padding=1)
        self.pointwise = nn.Conv3d(4, 4, 1)
        self.up = nn.ConvTranspose3d(4, 4, 2, stride=2)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x):
        x = self.up(torch.relu(self.pointwise(self.stem(x))))
        return self.head(self.mix(x.movedim(1, -1)).movedim(-1, 1))


def test_table_tags_integer_factorizable_and_simulation_only():
    model = _MixedNet().eval()
    expected = {
        "per_tensor": dict.fromkeys(
            ("stem", "pointwise", "up", "mix", "head"), "integer-factorizable"
        ),
        "per_channel_token": {
            "stem": "simulation-only",
            "pointwise": "simulation-only",
            "up": "simulation-only",
            "mix": "integer-factorizable",
        },
        "adaptive": {
            "stem": "simulation-only",
            "pointwise": "integer-factorizable",
            "up": "simulation-only",
            "mix": "integer-factorizable",
            "head": "integer-factorizable",
        },
    }
    for granularity, tags in expected.items():
        qmodel = calibrate(quantize(model, QuantSpec("w8a8", granularity)), _batches(2))
        table = quantization_table(qmodel).set_index("module")
        assert table.loc[list(tags), "execution"].to_dict() == tags, granularity
    spec = QuantSpec("w8a8", "adaptive", large_kernel_per_voxel=True, exclude=("head",))
    table = quantization_table(quantize(model, spec)).set_index("module")
    assert table.loc["stem", "execution"] == "integer-factorizable per kernel position"
    assert table.loc["stem", "activation_scheme"] == "per_voxel/dynamic/asymmetric"
    assert table.loc["mix", "activation_scheme"] == "per_token/dynamic/asymmetric"
    assert table.loc["head", "execution"] == "float32 (exclude pattern)"
    assert bool(table["calibrated"].iloc[:-1].all())


@pytest.mark.parametrize(
    ("where", "value"), [("batch", float("inf")), ("weight", float("nan"))], ids=str
)
def test_non_finite_values_are_named(tiny_segnet, where, value):
    if where == "batch":
        bad = _batches(2)
        bad[1][0, 0, 0, 0, 0] = value
        with pytest.raises(NonFiniteError, match="calibration batch 1"):
            calibrate(quantize(tiny_segnet, QuantSpec("w8a8")), bad)
    else:
        with torch.no_grad():
            tiny_segnet.body[2].weight[0, 0, 0, 0, 0] = value
        with pytest.raises(NonFiniteError, match=r"body\.2\.weight.*checkpoint"):
            quantize(tiny_segnet, QuantSpec("w4a4", "adaptive"))


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel_token", "adaptive"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_repeated_forwards_and_rebuilds_are_bitwise_equal(tiny_segnet, granularity, dynamic):
    spec = QuantSpec("w4a4", granularity, "percentile", dynamic=dynamic)
    x = torch.cat(_batches(2))
    with torch.no_grad():
        outputs = [calibrate(quantize(tiny_segnet, spec), _batches())(x) for _ in range(2)]
        qmodel = calibrate(quantize(tiny_segnet, spec), _batches())
        outputs += [qmodel(x), qmodel(x)]
    assert all(torch.equal(outputs[0], out) for out in outputs[1:])
    quantizer = qmodel.head.input_quant
    h = torch.randn(3, 4, 8, 8, 8)
    h[1].clamp_(min=0)  # one non-negative sample: a per-sample grid under dynamic ``auto``
    with torch.no_grad():  # layer inputs share a scratch buffer here: keep copies
        items = torch.cat([quantizer(h[i : i + 1]).clone() for i in range(3)])
        assert torch.equal(quantizer(h), items), granularity


def test_two_dimensional_operators():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(4, 4, 2, stride=2),
        nn.Conv2d(4, 2, 1),
    ).eval()
    batches = [torch.randn(2, 1, 12, 12) for _ in range(2)]
    x = batches[0][:1]  # inside the calibrated ranges: 16 bits must be lossless
    with torch.no_grad():
        ref = model(x)
        errors = {}
        for precision in ("w16a16", "w4a4"):
            qmodel = calibrate(quantize(model, QuantSpec(precision, "adaptive")), batches)
            errors[precision] = float((qmodel(x) - ref).norm() / ref.norm())
    table = quantization_table(qmodel).set_index("module")
    assert list(table["op_type"]) == ["Conv2d", "ConvTranspose2d", "Conv2d"]
    assert table.loc["3", "activation_scheme"] == "per_voxel/dynamic/asymmetric"
    assert errors["w16a16"] < 1e-3 < 0.05 < errors["w4a4"], errors
