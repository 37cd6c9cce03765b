"""Export: ONNX Runtime reproduces PyTorch, and the batch axis is dynamic."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from benchmark.deploy.export import INPUT_NAME, check_onnx, export_onnx
from benchmark.deploy.session import make_session, run_session

ROI = (16, 16, 16)  # the ROI of the conftest fixtures


def test_export_matches_pytorch_at_two_batch_sizes(exported):
    assert exported.batch_sizes == (1, 3)
    # float32 reassociation only: differences of 1e-5 would mean a wrong graph
    assert exported.max_abs_diff < 1e-4


def test_batch_axis_is_symbolic_and_one_session_serves_batch_1_and_3(exported, tiny_unet):
    graph = onnx.load(str(exported.path)).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    assert graph.input[0].name == INPUT_NAME
    session = make_session(exported.path)
    for batch in (1, 3):
        x = torch.randn(batch, 1, *ROI)
        got = run_session(session, x.numpy())
        assert got.shape == (batch, 3, *ROI)
        np.testing.assert_allclose(got, tiny_unet(x).detach().numpy(), atol=1e-4)


def test_check_detects_a_different_network(exported, tiny_unet):
    torch.manual_seed(123)  # the fixture's weights come from seed 0
    other = type(tiny_unet)().eval()
    assert check_onnx(other, exported.path, [torch.randn(1, 1, *ROI)]) > 1e-3


def test_torchscript_exporter_also_gives_dynamic_batch(tiny_unet, tmp_path):
    path = export_onnx(
        tiny_unet, tmp_path / "ts.onnx", torch.randn(1, 1, *ROI), exporter="torchscript"
    )
    diff = check_onnx(tiny_unet, path, [torch.randn(1, 1, *ROI), torch.randn(3, 1, *ROI)])
    assert diff < 1e-4


def test_export_rejects_unknown_exporter_and_wrong_rank(tiny_unet, tmp_path):
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(tiny_unet, tmp_path / "x.onnx", torch.randn(1, 1, *ROI), exporter="tf")
    with pytest.raises(ValueError, match=r"\[B, C, D, H, W\]"):
        export_onnx(tiny_unet, tmp_path / "x.onnx", torch.randn(1, *ROI))
