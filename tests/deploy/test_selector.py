"""Run-time selection: each fallback path forced with real ONNX Runtime sessions."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch

from benchmark.deploy.ort_quant import needs_reduce_range, quantize_static_onnx
from benchmark.deploy.selector import FallbackSelector, disagreement
from benchmark.deploy.session import OrtPredictor


@pytest.fixture(scope="module")
def int8_path(exported, calibration_batches, tmp_path_factory):
    out = tmp_path_factory.mktemp("selector") / "int8.onnx"
    return quantize_static_onnx(
        exported.path, out, calibration_batches, reduce_range=needs_reduce_range()
    )


def _selector(int8, fp32, **kwargs) -> FallbackSelector:
    return FallbackSelector(
        lambda: OrtPredictor(int8, threads=1), lambda: OrtPredictor(fp32, threads=1), **kwargs
    )


def test_int8_serves_when_it_loads_runs_and_agrees(exported, int8_path, test_inputs):
    selector = _selector(int8_path, exported.path, validate=True, max_disagreement=0.05)
    x = test_inputs[:2].numpy()
    out = selector(x)
    assert selector.serving == "int8" and selector.events == [] and selector.int8_calls == 1
    np.testing.assert_array_equal(out, OrtPredictor(int8_path, threads=1)(x))
    assert 0.0 <= selector.last_disagreement <= 0.05


def test_a_corrupted_int8_file_falls_back_at_load(exported, int8_path, tmp_path, caplog):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(int8_path.read_bytes()[: len(int8_path.read_bytes()) // 3])
    with caplog.at_level(logging.WARNING, logger="benchmark.deploy.selector"):
        selector = _selector(broken, exported.path)
    assert selector.serving == "fp32"
    assert [e.reason for e in selector.events] == ["load"] and selector.events[0].call == -1
    assert "falling back to FP32 (load)" in caplog.text
    x = np.zeros((1, 1, 16, 16, 16), np.float32)
    np.testing.assert_array_equal(selector(x), OrtPredictor(exported.path, threads=1)(x))


def test_an_int8_call_that_raises_is_answered_by_fp32(
    exported, int8_path, test_inputs, tmp_path, caplog
):
    # the same INT8 model with its batch axis fixed to 1: a batch of 2 makes the session raise
    model = onnx.load(str(int8_path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed_batch.onnx"
    onnx.save(model, str(fixed))
    selector = _selector(fixed, exported.path)
    selector(test_inputs[:1].numpy())
    assert selector.serving == "int8" and selector.int8_calls == 1
    x = test_inputs[:2].numpy()
    with caplog.at_level(logging.WARNING, logger="benchmark.deploy.selector"):
        out = selector(x)
    np.testing.assert_array_equal(out, OrtPredictor(exported.path, threads=1)(x))
    (event,) = selector.events
    assert event.reason == "runtime_error" and event.call == 1
    assert "InvalidArgument" in event.detail or "dimension" in event.detail.lower()
    assert "runtime_error" in caplog.text and selector.serving == "fp32"


def test_validation_mode_falls_back_when_int8_disagrees(
    exported, calibration_batches, test_inputs, tmp_path
):
    # ranges calibrated on inputs 1000x too large: INT8 steps too coarse for the real inputs
    wrong = [b * 1000 for b in calibration_batches]
    bad = quantize_static_onnx(exported.path, tmp_path / "bad.onnx", wrong)
    x = test_inputs.numpy()
    fp32 = OrtPredictor(exported.path, threads=1)(x)
    measured = disagreement(OrtPredictor(bad, threads=1)(x), fp32)
    assert measured > 0.05
    selector = _selector(bad, exported.path, validate=True, max_disagreement=0.05)
    np.testing.assert_array_equal(selector(x), fp32)
    (event,) = selector.events
    assert event.reason == "disagreement" and f"{measured:.3%}" in event.detail
    assert selector.serving == "fp32" and selector.int8_calls == 0
    # without validation the same model keeps serving: nothing checks it
    unchecked = _selector(bad, exported.path, validate=False)
    unchecked(x)
    assert unchecked.serving == "int8" and unchecked.events == []


def test_fp32_must_load_and_thresholds_are_fractions(exported, tmp_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(Exception, match="missing.onnx"):
        _selector(exported.path, missing)
    with pytest.raises(ValueError, match="max_disagreement=1.5"):
        _selector(exported.path, exported.path, max_disagreement=1.5)
    a = torch.zeros(1, 3, 2, 2, 2).numpy()
    b = a.copy()
    b[0, 1, 0, 0, 0] = 1.0
    assert disagreement(a, b) == pytest.approx(1 / 8)
