"""Backends other than ONNX Runtime FP32: OpenVINO (FP32, INT8 from the QDQ model), PyTorch x86
INT8, availability reasons, warmed profiles, and the config that lists them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import benchmark.deploy.openvino_backend as openvino_backend
from benchmark.deploy.backends import BACKENDS, load_predictor, unavailable_reason
from benchmark.deploy.ops import integer_kernel_summary
from benchmark.deploy.ort_quant import needs_reduce_range, quantize_static_onnx
from benchmark.deploy.profile import profile_op_times, profile_torch_op_times
from benchmark.deploy.settings import check_deploy
from benchmark.deploy.torch_int8 import TorchPredictor, op_counts, quantize_convs
from benchmark.schema.deploy import DeployConfig
from tests.runs import conf_settings

needs_openvino = pytest.mark.skipif(
    openvino_backend.unavailable_reason("int8") is not None, reason="no OpenVINO CPU INT8 here"
)


@pytest.fixture(scope="module")
def qdq_path(exported, calibration_batches, tmp_path_factory):
    out = tmp_path_factory.mktemp("backends") / "int8.onnx"
    return quantize_static_onnx(
        exported.path, out, calibration_batches, reduce_range=needs_reduce_range()
    )


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


@needs_openvino
def test_openvino_fp32_matches_onnx_runtime(exported, test_inputs):
    x = test_inputs.numpy()
    ov = load_predictor("openvino_fp32", exported.path, threads=1)
    ref = load_predictor("ort_fp32", exported.path, threads=1)(x)
    assert ov.provider == "openvino-CPU"
    np.testing.assert_allclose(ov(x), ref, atol=1e-3 * np.abs(ref).max())
    assert ov(x[:1]).shape == ref[:1].shape  # one compiled model per batch size


@needs_openvino
def test_openvino_runs_the_qdq_model_in_integer_convolutions(exported, qdq_path, test_inputs):
    ov = load_predictor("openvino_int8", qdq_path, threads=1)
    counts = openvino_backend.op_counts(ov)
    integer = counts[counts["kind"] == "integer"]
    assert integer["op_type"].str.startswith("Convolution:").any()
    assert integer_kernel_summary(counts)["integer_conv_fraction"] > 0.5
    x = test_inputs.numpy()
    fp32 = load_predictor("ort_fp32", exported.path, threads=1)(x)
    assert _agreement(ov(x), fp32) > 0.98
    names = [n.name for n in onnx.load(str(exported.path)).graph.node]
    precisions = openvino_backend.layer_precisions(ov, names)
    assert {"I8", "U8"} & set(precisions.values())
    times = openvino_backend.profile_op_times(qdq_path, (1, 16, 16, 16), threads=1, runs=2)
    assert times["share"].sum() == pytest.approx(1.0) and (times["time_ms"] >= 0).all()


def test_torch_x86_int8_quantizes_only_the_chosen_convolutions(
    tiny_unet, calibration_batches, test_inputs
):
    qmodel = quantize_convs(tiny_unet, calibration_batches, keep_float=["enc.0"])
    counts = op_counts(qmodel).set_index("op_type")["count"]
    # down and head convolutions in INT8; enc.0 kept float; the ConvTranspose3d stays float
    assert counts["Conv3d:int8"] == 2 and counts["Conv3d"] == 1 and counts["ConvTranspose3d"] == 1
    x = test_inputs.numpy()
    out = TorchPredictor(qmodel, threads=1)(x)
    ref = tiny_unet(test_inputs).detach().numpy()
    assert _agreement(out, ref) > 0.95
    assert tiny_unet.enc[0].__class__.__name__ == "Conv3d"  # the original is untouched
    times = profile_torch_op_times(TorchPredictor(qmodel, threads=1), (1, 16, 16, 16), runs=2)
    assert "quantized::conv3d" in set(times["op_type"])


def test_onnx_runtime_profile_counts_only_warmed_runs(qdq_path):
    times = profile_op_times(qdq_path, (1, 16, 16, 16), threads=1, runs=2, warmup=1)
    assert "QLinearConv" in set(times["op_type"]) and times["share"].sum() == pytest.approx(1)
    with pytest.raises(ValueError, match="warmup >= 1"):
        profile_op_times(qdq_path, (1, 16, 16, 16), warmup=0)


def test_backends_that_cannot_run_say_why():
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "CUDAExecutionProvider is not available" in unavailable_reason("ort_cuda_fp16")
    if not torch.cuda.is_available():
        assert "sees no CUDA device" in unavailable_reason("torch_cuda_bf16")
    assert unavailable_reason("ort_fp32") is None
    reason = openvino_backend.unavailable_reason("bf16")
    if reason is not None:
        assert "BF16" in reason
    with pytest.raises(KeyError, match="unknown deploy backend 'tvm'"):
        unavailable_reason("tvm")
    assert {b.name for b in BACKENDS.values() if b.device == "cuda"} == {
        "ort_cuda_fp16",
        "ort_cuda_int8",
        "ort_tensorrt_int8",
        "torch_cuda_fp16",
        "torch_cuda_bf16",
    }


def _deploy(**changes) -> DeployConfig:
    return check_deploy(conf_settings(DeployConfig, "deploy", **changes))


def test_config_requires_the_reference_and_known_policies():
    with pytest.raises(ValueError, match="must include ort_fp32"):
        _deploy(backends=["openvino_int8"])
    with pytest.raises(ValueError, match="must include ort_fp32"):
        _deploy(backends=["ort_fp32", "tensorflow"])
    with pytest.raises(ValueError, match="layer_policy"):
        _deploy(layer_policy="fastest")
    with pytest.raises(ValueError, match="reduce_range"):
        _deploy(reduce_range="maybe")
    with pytest.raises(ValueError, match="torch_qat_steps=0"):
        _deploy(torch_qat_steps=0)
    with pytest.raises(ValueError, match="torch_qat_lr=-0.1"):
        _deploy(torch_qat_lr=-0.1)
    assert _deploy(compare_policies=["all", "min_channels:8"]).layer_policy == "latency_aware"
