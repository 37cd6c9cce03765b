"""quantize / calibrate / ranges files / reports: behaviour and error messages."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from benchmark.quant import (
    CalibrationError,
    NonFiniteError,
    NoQuantizableLayerError,
    QuantSpec,
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


def test_include_exclude_and_keep_first_last(tiny_segnet):
    table = quantization_table(quantize(tiny_segnet, QuantSpec("w8a8", exclude=("head",))))
    assert table.set_index("module").loc["head", "execution"] == "float32 (exclude pattern)"
    qmodel = quantize(tiny_segnet, QuantSpec("w8a8", keep_first_last=True))
    assert quantized_layer_names(qmodel) == ["body.2"]
    qmodel = quantize(tiny_segnet, QuantSpec("w8a8", include=("body.*",), exclude_types=()))
    assert quantized_layer_names(qmodel) == ["body.0", "body.2"]
    with pytest.raises(NoQuantizableLayerError, match="exclude_types"):
        quantize(tiny_segnet, QuantSpec("w8a8", exclude_types=(nn.Conv3d,)))
    with pytest.raises(NoQuantizableLayerError, match="candidates: none"):
        quantize(nn.Sequential(nn.ReLU()), QuantSpec("w8a8"))


def test_table_tags_schemes(tiny_segnet):
    qmodel = calibrate(quantize(tiny_segnet, QuantSpec("w8a8", "adaptive")), _batches())
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
        calibrate(qmodel, [(torch.zeros(1, 1, 8, 8, 8), None)])
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
