"""Agreement rows: hand-derived DSC of shifted cubes; ONNX and PyTorch predict the same labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from benchmark.deploy.agreement import agreement_rows, predict_case_labels, voxel_agreement
from benchmark.deploy.session import OrtSegmenter, make_session


def _cube(shift=0):
    labels = np.zeros((10, 10, 10), np.int16)
    labels[3 + shift : 7 + shift, 3:7, 3:7] = 1
    labels[0:2, 0:2, 0:2] = 2
    return labels


def _by(rows, backend, metric, cls):
    (value,) = [
        r["value"]
        for r in rows
        if r["backend"] == backend and r["metric"] == metric and r["class"] == cls
    ]
    return value


def test_each_backend_is_scored_against_truth_fp32_and_fakequant():
    gt = _cube()
    predictions = {
        "torch_fp32": gt.copy(),
        "torch_fakequant": _cube(shift=1),
        "ort_int8_static": _cube(shift=1),
    }
    rows = agreement_rows("case0", predictions, gt, (1.0, 1.0, 1.0), [1, 2], tolerance_mm=0.5)
    # 4x4x4 cube shifted by one voxel: overlap 3*4*4 = 48, DSC = 2*48 / (64 + 64) = 0.75
    assert _by(rows, "ort_int8_static", "dsc", 1) == pytest.approx(0.75)
    assert _by(rows, "ort_int8_static", "dsc_vs_fp32", 1) == pytest.approx(0.75)
    assert _by(rows, "ort_int8_static", "dsc_vs_fakequant", 1) == 1.0
    assert _by(rows, "ort_int8_static", "nsd_vs_fakequant", 1) == 1.0
    assert _by(rows, "ort_int8_static", "voxel_agreement_vs_fakequant", None) == 1.0
    assert _by(rows, "torch_fp32", "dsc", 2) == 1.0
    # a backend is never compared with itself
    metrics = {r["metric"] for r in rows if r["backend"] == "torch_fp32"}
    assert metrics == {
        "dsc",
        "nsd",
        "dsc_vs_fakequant",
        "nsd_vs_fakequant",
        "voxel_agreement_vs_fakequant",
    }
    assert all(np.isnan(r["tolerance_mm"]) for r in rows if r["metric"].startswith("dsc"))
    assert all(r["tolerance_mm"] == 0.5 for r in rows if r["metric"].startswith("nsd"))


def test_nsd_uses_the_tolerance_in_mm():
    gt, shifted = _cube(), _cube(shift=1)
    tight = agreement_rows("c", {"x": shifted}, gt, (1.0, 1.0, 1.0), [1], tolerance_mm=0.5)
    loose = agreement_rows("c", {"x": shifted}, gt, (1.0, 1.0, 1.0), [1], tolerance_mm=1.5)
    assert _by(tight, "x", "nsd", 1) < 1.0 and _by(loose, "x", "nsd", 1) == 1.0


def test_voxel_agreement_shape_check():
    assert voxel_agreement(_cube(), _cube()) == 1.0
    with pytest.raises(ValueError, match="shape"):
        voxel_agreement(_cube(), np.zeros((2, 2, 2)))


@dataclass
class _Case:
    """The parts of a PreparedCase that prediction uses (identity restore)."""

    image: torch.Tensor

    def restore(self, probs):
        return probs


def test_onnx_predictor_labels_match_pytorch(exported, tiny_unet):
    case = _Case(torch.randn(1, 20, 24, 18))
    torch_labels = predict_case_labels(tiny_unet, case, (16, 16, 16), overlap=0.25)
    ort_labels = predict_case_labels(
        OrtSegmenter(make_session(exported.path)), case, (16, 16, 16), overlap=0.25
    )
    assert torch_labels.shape == (20, 24, 18) and torch_labels.dtype == np.int16
    assert voxel_agreement(ort_labels, torch_labels) > 0.999
