"""Real INT8 with ONNX Runtime: observer mapping, static QDQ and dynamic models, integer kernels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnxruntime.quantization import CalibrationMethod

from benchmark.deploy.ops import integer_kernel_summary, optimized_op_counts
from benchmark.deploy.ort_quant import (
    calibrate_method_for,
    convert_fp16_onnx,
    needs_reduce_range,
    quantize_dynamic_onnx,
    quantize_static_onnx,
)
from benchmark.deploy.session import gpu_provider, make_session, run_session

MAPPING_CASES = [
    ["minmax", CalibrationMethod.MinMax, {}],
    [
        "moving_average",
        CalibrationMethod.MinMax,
        {"CalibMovingAverage": True, "CalibMovingAverageConstant": 0.1},
    ],
    ["percentile", CalibrationMethod.Percentile, {"CalibPercentile": 99.9}],
    ["mse", CalibrationMethod.Entropy, {}],
]


@pytest.mark.parametrize(("observer", "method", "extra"), MAPPING_CASES)
def test_observer_maps_to_ort_calibration_method(observer, method, extra):
    assert calibrate_method_for(observer, percentile=99.9, averaging_constant=0.1) == (
        method,
        extra,
    )


def test_explicit_method_overrides_observer_and_unknown_names_fail():
    assert calibrate_method_for("minmax", "entropy")[0] == CalibrationMethod.Entropy
    with pytest.raises(ValueError, match="'histogram'"):
        calibrate_method_for("minmax", "histogram")
    with pytest.raises(ValueError, match="'kl'.*calibrate_method"):
        calibrate_method_for("kl")


@pytest.fixture(scope="module")
def static_model(exported, calibration_batches, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "static.onnx"
    # 7-bit weights where the CPU has no VNNI (8-bit products saturate there)
    return quantize_static_onnx(
        exported.path, out, calibration_batches, reduce_range=needs_reduce_range()
    )


@pytest.fixture(scope="module")
def dynamic_model(exported, tmp_path_factory):
    return quantize_dynamic_onnx(exported.path, tmp_path_factory.mktemp("int8") / "dynamic.onnx")


def test_static_model_has_per_channel_int8_weights(static_model):
    graph = onnx.load(str(static_model)).graph
    inits = {t.name: t for t in graph.initializer}
    conv_weight_scales = [
        onnx.numpy_helper.to_array(inits[n.input[1]])
        for n in graph.node
        if n.op_type == "DequantizeLinear"
        and inits.get(n.input[0]) is not None
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
        and len(inits[n.input[0]].dims) == 5
    ]
    # three Conv3d (6, 6, 3 output channels) + one ConvTranspose3d (6): one scale per channel
    assert sorted(s.size for s in conv_weight_scales) == [3, 6, 6, 6]
    assert all(s.ndim == 1 and np.all(s > 0) for s in conv_weight_scales)


def test_static_int8_runs_convolutions_in_integer_kernels(static_model):
    counts = optimized_op_counts(static_model, threads=1)
    kinds = dict(zip(counts["op_type"], counts["kind"], strict=True))
    assert kinds.get("QLinearConv") == "integer"
    summary = integer_kernel_summary(counts)
    # the three Conv3d fuse into QLinearConv; ConvTranspose3d has no CPU integer kernel
    assert counts.set_index("op_type")["count"].get("QLinearConv") == 3
    assert summary["integer_conv_fraction"] == pytest.approx(3 / 4)


def test_dynamic_int8_uses_conv_integer(dynamic_model):
    counts = optimized_op_counts(dynamic_model, threads=1).set_index("op_type")
    assert counts.loc["ConvInteger", "count"] == 3
    assert counts.loc["DynamicQuantizeLinear", "kind"] == "quantize"


def test_fp32_model_has_no_integer_kernels(exported):
    summary = integer_kernel_summary(optimized_op_counts(exported.path, threads=1))
    assert summary["integer_ops"] == 0 and summary["integer_conv_fraction"] == 0.0


def test_int8_models_stay_close_to_fp32(exported, static_model, dynamic_model, calibration_batches):
    x = torch.cat(calibration_batches[:2]).numpy()
    reference = run_session(make_session(exported.path), x)
    for path in (static_model, dynamic_model):
        logits = run_session(make_session(path), x)
        agreement = np.mean(logits.argmax(1) == reference.argmax(1))
        assert agreement > 0.97, (path.name, agreement)
        assert np.abs(logits - reference).max() < 0.25 * np.abs(reference).max()


def test_int8_model_is_smaller_on_disk(exported, static_model):
    # weights shrink 4x, but the tiny graph's structure dominates: only assert it is not larger
    assert static_model.stat().st_size <= exported.path.stat().st_size * 1.5


def test_fp16_conversion_only_where_a_gpu_provider_exists(exported, tmp_path):
    if gpu_provider(["CUDAExecutionProvider", "CPUExecutionProvider"]) is None:
        assert gpu_provider(["CPUExecutionProvider"]) is None
        pytest.skip("no GPU execution provider in this onnxruntime build")
    path = convert_fp16_onnx(exported.path, tmp_path / "fp16.onnx")
    session = make_session(path, providers=["CUDAExecutionProvider"])
    assert run_session(session, np.zeros((1, 1, 16, 16, 16), np.float32)).dtype == np.float32


def test_profile_attributes_time_to_the_executed_kernels(static_model):
    from benchmark.deploy.profile import profile_op_times

    times = profile_op_times(static_model, (1, 16, 16, 16), threads=1, runs=2)
    assert "QLinearConv" in set(times["op_type"]) and "Conv" not in set(times["op_type"])
    assert (times["time_ms"] > 0).all()
    assert times["share"].sum() == pytest.approx(1.0)
    assert times["time_ms"].is_monotonic_decreasing
