"""score_case: the rows the runner stores, consistent with the single-metric functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.metrics import CASE_CLASS, METRICS, dice, hd95, nsd, score_case
from tests.metrics.synthetic import blobs

SPACING = (0.8, 0.9, 2.0)


def _case():
    gt = blobs((16, 14, 10), 3, seed=2)
    pred = blobs((16, 14, 10), 3, seed=2, noise=0.4)
    pred[pred == 3] = 0  # class 3 missed entirely
    return pred, gt


def test_rows_match_metric_functions_and_carry_status():
    pred, gt = _case()
    labels = [1, 2, 3, 4]  # 4 is in neither map
    rows = score_case(pred, gt, SPACING, labels, 1.5)
    assert len(rows) == 3 * len(labels)
    assert all(set(r) == {"class", "metric", "value", "tolerance_mm", "status"} for r in rows)
    by_key = {(r["class"], r["metric"]): r for r in rows}
    expected = {
        "dsc": dice(pred, gt, labels),
        "nsd": nsd(pred, gt, SPACING, 1.5, labels),
        "hd95": hd95(pred, gt, SPACING, labels),
    }
    for metric, values in expected.items():
        for label, value in values.items():
            got = by_key[(label, metric)]["value"]
            assert (math.isnan(got) and math.isnan(value)) or got == value
    assert by_key[(1, "nsd")]["tolerance_mm"] == 1.5
    assert math.isnan(by_key[(1, "dsc")]["tolerance_mm"])
    assert by_key[(1, "dsc")]["status"] == "present"
    assert (
        by_key[(3, "hd95")]["status"] == "pred_empty" and by_key[(3, "hd95")]["value"] == math.inf
    )
    assert by_key[(4, "nsd")]["status"] == "both_empty" and math.isnan(by_key[(4, "nsd")]["value"])
    assert {r["metric"] for r in rows} <= set(METRICS)


def test_probabilities_add_calibration_rows():
    pred, gt = _case()
    onehot = np.eye(4)[gt].transpose(3, 0, 1, 2).astype(np.float32)
    probs = torch.from_numpy(0.9 * onehot + 0.025)  # softmax-like, over-smoothed by 0.1
    rows = score_case(pred, gt, SPACING, [1, 2], 1.0, probs, calibration_band_mm=2.0)
    calib = [r for r in rows if r["metric"] in ("ece", "brier", "ece_top", "brier_mc")]
    assert len(calib) == 2 * 2 + 2
    top = next(r for r in calib if r["metric"] == "ece_top")
    # Every voxel has top probability 0.925 and is right: ECE = 1 - 0.925.
    assert top["class"] == CASE_CLASS and top["value"] == pytest.approx(0.075, abs=1e-6)
    assert all(r["value"] >= 0 for r in calib)
    with pytest.raises(ValueError, match="class channels"):
        score_case(pred, gt, SPACING, [1, 5], 1.0, probs)
