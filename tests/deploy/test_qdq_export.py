"""QDQ export with the harness's own scales: the file holds them, and the runtimes agree with it.

Fast tests use the tiny encoder-decoder of ``conftest``; the slow ones the shipped
``tiny_nnunet`` on phantom patches (ONNX Runtime and OpenVINO on the same file).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from benchmark.deploy.openvino_backend import OpenVinoPredictor, op_counts, unavailable_reason
from benchmark.deploy.ops import optimized_op_counts
from benchmark.deploy.qdq_export import QDQExportError, export_qdq, read_qdq_params
from benchmark.deploy.session import make_session, run_session
from benchmark.quant import QuantSpec, calibrate, quantize
from benchmark.quant.granularity import PerOutputChannel, PerTensor, PerVoxel
from benchmark.quant.policies import CONV_1X1, OP_KINDS, POLICIES, GranularityPolicy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policies():
    """Two schemes the sweep's named policies lack: per-channel weights with per-tensor
    activations (what INT8 runtimes execute), and a mix with a per-voxel (dynamic) head."""
    table = dict.fromkeys(OP_KINDS, (PerOutputChannel(), PerTensor()))
    mixed = {**table, CONV_1X1: (PerOutputChannel(), PerVoxel())}
    made = {
        "test_per_channel_weights": GranularityPolicy(
            "test_per_channel_weights", "per-channel weights", "scaled", table
        ),
        "test_dynamic_head": GranularityPolicy("test_dynamic_head", "mixed", "scaled", mixed),
    }
    for name, policy in made.items():
        POLICIES.register(name, policy)
    yield made
    for name in made:
        POLICIES.unregister(name)


def _calibrated(model, spec, batches):
    qmodel = quantize(model, spec)
    calibrate(qmodel, batches)
    return qmodel


def _fake_quant(qmodel, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return qmodel(x).numpy()


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def _conv_nodes(path) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in onnx.load(str(path)).graph.node if n.op_type.startswith("Conv")}


def _assert_file_holds_harness_params(report, qmodel) -> None:
    params = read_qdq_params(report.path)
    assert len(params) == len(report.exported) > 0
    for row in report.layers:
        if row.status != "qdq":
            continue
        layer = qmodel.get_submodule(row.module)
        (node,) = row.onnx_nodes
        got = params[node]
        act = layer.input_quant
        np.testing.assert_array_equal(got["input_scale"], act.scale.reshape(-1).numpy()[0])
        np.testing.assert_array_equal(got["input_zero_point"], act.zero_point.reshape(-1)[0])
        codes, scale, zero_point = layer.weight_quant.codes(layer.weight)
        shift = (
            128 if row.weight_dtype == "uint8" and layer.weight_quant.mapping == "symmetric" else 0
        )
        np.testing.assert_array_equal(got["weight_scale"].reshape(-1), scale.reshape(-1).numpy())
        np.testing.assert_array_equal(
            got["weight_zero_point"].reshape(-1).astype(np.int64),
            zero_point.reshape(-1).numpy() + shift,
        )
        np.testing.assert_array_equal(
            got["weight_codes"].astype(np.int64), codes.to(torch.int64).numpy() + shift
        )


@pytest.mark.slow
def test_per_tensor_file_holds_the_quantizers_scales(tiny_unet, calibration_batches, tmp_path):
    qmodel = _calibrated(tiny_unet, QuantSpec("w8a8", "per_tensor"), calibration_batches)
    report = export_qdq(qmodel, calibration_batches[0], tmp_path / "q.onnx")
    assert report.exported == ["enc.0", "down.0", "up", "head"] and report.opset == 18
    _assert_file_holds_harness_params(report, qmodel)
    # the skip connection reads the float tensor, as in the fake-quant model: only the two
    # convolutions that consume it see a dequantized input
    model = onnx.load(str(report.path))
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert "DequantizeLinear" not in {producers.get(i) for i in concat.input}


def test_per_channel_weights_and_uint8_container(
    tiny_unet, calibration_batches, test_inputs, tmp_path, policies
):
    spec = QuantSpec("w8a8", "test_per_channel_weights", act_mapping="asymmetric")
    qmodel = _calibrated(tiny_unet, spec, calibration_batches)
    report = export_qdq(qmodel, calibration_batches[0], tmp_path / "q.onnx", weight_dtype="uint8")
    assert {row.weight_axis for row in report.layers} == {0, 1}  # Conv axis 0, ConvTranspose 1
    _assert_file_holds_harness_params(report, qmodel)
    out = run_session(make_session(report.path, threads=1), test_inputs.numpy())
    fake = _fake_quant(qmodel, test_inputs)
    # the same arithmetic (float biases, the same codes); the summation order differs, which
    # can flip an activation code that lies on a rounding boundary of the next layer, and
    # nothing else: measured 0.006 % of logits off, by up to 0.3 % of the range (median 1e-8)
    diff, scale = np.abs(out - fake), float(np.abs(fake).max())
    assert np.mean(diff > 1e-5 * scale) < 0.001 and diff.max() < 1e-2 * scale


def test_simulation_only_schemes_are_refused_not_exported(tiny_unet, calibration_batches):
    per_channel = _calibrated(
        tiny_unet, QuantSpec("w8a8", "per_channel_token"), calibration_batches[:2]
    )
    with pytest.raises(QDQExportError, match="simulation-only: execution simulation-only"):
        export_qdq(per_channel, calibration_batches[0], "unused.onnx")
    dynamic = quantize(tiny_unet, QuantSpec("w8a8", "per_tensor", dynamic=True))
    with pytest.raises(QDQExportError, match="dynamic per_tensor activation scales"):
        export_qdq(dynamic, calibration_batches[0], "unused.onnx")
    blocks = quantize(tiny_unet, QuantSpec("mxint8"))
    with pytest.raises(QDQExportError, match="block-scaled"):
        export_qdq(blocks, calibration_batches[0], "unused.onnx")


@pytest.mark.slow
def test_a_simulation_only_layer_is_kept_float_and_named(
    tiny_unet, calibration_batches, tmp_path, policies
):
    qmodel = _calibrated(tiny_unet, QuantSpec("w8a8", "test_dynamic_head"), calibration_batches[:2])
    with pytest.raises(QDQExportError, match=r"head: simulation-only: dynamic per_voxel"):
        export_qdq(qmodel, calibration_batches[0], tmp_path / "strict.onnx", strict=True)
    report = export_qdq(qmodel, calibration_batches[0], tmp_path / "q.onnx")
    assert report.simulation_only == ["head"] and report.kept_float == ["head"]
    assert "head" not in report.exported and len(report.exported) == 3
    params = read_qdq_params(report.path)
    head_nodes = [n for n in _conv_nodes(report.path) if n not in params]
    assert len(head_nodes) == 1  # the head's Conv reads float operands


@pytest.mark.slow
def test_four_bit_weights_are_onnx_int4(tiny_unet, calibration_batches, test_inputs, tmp_path):
    qmodel = _calibrated(tiny_unet, QuantSpec("w4a8", "per_tensor"), calibration_batches)
    report = export_qdq(qmodel, calibration_batches[0], tmp_path / "q.onnx")
    assert report.opset == 21 and {r.weight_dtype for r in report.layers} == {"int4"}
    _assert_file_holds_harness_params(report, qmodel)
    out = run_session(make_session(report.path, threads=1), test_inputs.numpy())
    assert _agreement(out, _fake_quant(qmodel, test_inputs)) > 0.995
    with pytest.raises(QDQExportError, match="opset >= 21"):
        export_qdq(qmodel, calibration_batches[0], tmp_path / "old.onnx", opset=18)


# ----------------------------------------------------------------- shipped tiny_nnunet, phantom


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Calibration and held-out 64^3 patches of an 8-case phantom (the shipped weights' data)."""
    from benchmark.data import calibration_patches, open_dataset

    cfg = yaml.safe_load((ROOT / "conf/data/phantom.yaml").read_text())
    cfg.update(n_cases=8, cache_dir=str(tmp_path_factory.mktemp("phantom")))
    dataset = open_dataset(cfg)
    calib = list(calibration_patches(dataset, n=4, roi_size=(64, 64, 64)))
    held_out = calibration_patches(dataset, split="val", n=2, roi_size=(64, 64, 64), seed=3)
    return calib, torch.cat(list(held_out))


@pytest.fixture(scope="module")
def nnunet():
    from benchmark.deploy.export import load_registry_model

    return load_registry_model("tiny_nnunet", 1, 9)


def _openvino(path, x: np.ndarray) -> tuple[np.ndarray, object]:
    predictor = OpenVinoPredictor(path, threads=1)
    return predictor(x), predictor


@pytest.mark.slow
@pytest.mark.parametrize("granularity", ["per_tensor", "test_per_channel_weights"])
def test_tiny_nnunet_w8a8_runs_as_measured_in_both_runtimes(
    nnunet, phantom, tmp_path, policies, granularity
):
    """Unsigned activation grids: on CPUs without VNNI OpenVINO's u8 x s8 kernels saturate
    with signed 8-bit activations and full-range weights (measured 89.1 % agreement, see
    :mod:`benchmark.deploy.qdq_export`), so the cross-runtime check uses ``asymmetric``."""
    calib, x = phantom
    spec = QuantSpec("w8a8", granularity, act_mapping="asymmetric")
    qmodel = _calibrated(nnunet, spec, calib)
    report = export_qdq(qmodel, calib[0], tmp_path / "q.onnx")
    assert len(report.exported) == 23  # the 3 unused deep-supervision heads are not in the graph
    _assert_file_holds_harness_params(report, qmodel)
    fake = _fake_quant(qmodel, x)
    ort_out = run_session(make_session(report.path, threads=1), x.numpy())
    assert _agreement(ort_out, fake) >= 0.995  # measured 0.99979 per tensor, 0.99975 per channel
    if unavailable_reason("int8") is not None:
        pytest.skip(unavailable_reason("int8"))
    ov_out, predictor = _openvino(report.path, x.numpy())
    assert _agreement(ov_out, fake) >= 0.995  # measured 0.99969 per tensor, 0.99971 per channel
    counts = op_counts(predictor).set_index("op_type")["count"]
    assert counts.get("Convolution:U8", 0) == 19  # every Conv in integer arithmetic


@pytest.mark.slow
def test_tiny_nnunet_signed_grid_in_onnx_runtime_and_its_integer_path(nnunet, phantom, tmp_path):
    """``auto``: the signed grid after LeakyReLU, which ONNX Runtime runs without saturation."""
    calib, x = phantom
    qmodel = _calibrated(nnunet, QuantSpec("w8a8", "per_tensor", act_mapping="auto"), calib)
    fake = _fake_quant(qmodel, x)
    report = export_qdq(qmodel, calib[0], tmp_path / "q.onnx")
    out = run_session(make_session(report.path, threads=1), x.numpy())
    assert _agreement(out, fake) >= 0.995  # measured 0.99953
    # QLinearConv needs quantized outputs; uint8 weights avoid u8 x s8 saturation without VNNI
    integer = export_qdq(
        copy.deepcopy(qmodel),
        calib[0],
        tmp_path / "integer.onnx",
        weight_dtype="uint8",
        output_batches=calib,
    )
    assert integer.output_requantized
    counts = optimized_op_counts(integer.path).set_index("op_type")["count"]
    assert counts.get("QLinearConv", 0) == 19
    out = run_session(make_session(integer.path, threads=1), x.numpy())
    assert _agreement(out, fake) >= 0.995  # measured 0.99852


@pytest.mark.slow
def test_four_bit_weights_run_as_float_convolutions_in_both_runtimes(nnunet, phantom, tmp_path):
    """INT4 in the runtimes at hand: ONNX ``int4`` weights (opset 21) are stored packed, but
    neither runtime has a 4-bit convolution kernel: ONNX Runtime dequantizes them into its
    float ``Conv`` (``QLinearConv`` takes 8-bit operands only) and OpenVINO decompresses them
    into ``Convolution:F32`` (its 4-bit weight compression serves MatMul layers). So a W4A8
    model deploys with W4 storage and float arithmetic, and must still compute the fake-quant
    model's function."""
    calib, x = phantom
    qmodel = _calibrated(
        nnunet, QuantSpec("w4a8", "per_channel_weights", act_mapping="asymmetric"), calib
    )
    fake = _fake_quant(qmodel, x)
    report = export_qdq(qmodel, calib[0], tmp_path / "w4.onnx")
    assert report.opset == 21 and {r.weight_dtype for r in report.layers if r.status == "qdq"} == {
        "int4"
    }
    counts = optimized_op_counts(report.path).set_index("op_type")["count"]
    assert counts.get("QLinearConv", 0) == 0 and counts["Conv"] == 19
    out = run_session(make_session(report.path, threads=1), x.numpy())
    assert _agreement(out, fake) >= 0.995  # measured 0.99967
    if unavailable_reason("int8") is not None:
        pytest.skip(unavailable_reason("int8"))
    ov_out, predictor = _openvino(report.path, x.numpy())
    ov_counts = op_counts(predictor).set_index("op_type")["count"]
    assert ov_counts.get("Convolution:F32", 0) == 19 and ov_counts.get("Convolution:U8", 0) == 0
    assert _agreement(ov_out, fake) >= 0.995  # measured 0.99961
