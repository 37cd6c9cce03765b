"""DSC, presence status and the empty-structure conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.metrics import (
    NNUNET_CONVENTIONS,
    EmptyConventions,
    StructureStatus,
    dice,
    overlap_counts,
    structure_status,
)


def test_dice_hand_derived_multi_class():
    gt = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    pred = np.array([[0, 0, 1, 1], [2, 0, 0, 3]])
    # class 1: |P∩G| = 2, |P| = 2, |G| = 3 -> 0.8; class 2: 1, 1, 2 -> 2/3;
    # class 3 only predicted -> 0; class 4 in neither -> NaN.
    got = dice(pred, gt, [1, 2, 3, 4])
    assert got[1] == pytest.approx(0.8) and got[2] == pytest.approx(2 / 3)
    assert got[3] == 0.0 and math.isnan(got[4])
    assert overlap_counts(pred, gt, [1, 3]) == {1: (2, 2, 3), 3: (0, 1, 0)}
    assert structure_status(pred, gt, [1, 2, 3, 4]) == {
        1: StructureStatus.PRESENT,
        2: StructureStatus.PRESENT,
        3: StructureStatus.GT_EMPTY,
        4: StructureStatus.BOTH_EMPTY,
    }
    assert structure_status(gt, pred, [3])[3] is StructureStatus.PRED_EMPTY


def test_dice_ignores_negative_and_unscored_labels_and_accepts_torch():
    gt = np.array([-1, 1, 1, 7])
    pred = np.array([1, 1, -1, 7])
    assert dice(pred, gt, [1]) == {1: 0.5}
    assert dice(torch.tensor(pred), torch.tensor(gt), [1]) == {1: 0.5}
    # Boolean masks: pred all True (4), gt True where gt > 0 (3), overlap 3 -> 6 / 7.
    assert dice(pred.astype(bool), gt > 0, [1]) == {1: pytest.approx(6 / 7)}


def test_conventions_are_configurable_and_validated():
    gt = np.zeros(5, int)
    pred = np.array([0, 1, 0, 0, 0])
    lenient = EmptyConventions(both_empty=1.0, gt_empty=0.5)
    assert dice(pred, gt, [1, 2], conventions=lenient) == {1: 0.5, 2: 1.0}
    assert NNUNET_CONVENTIONS.distance(StructureStatus.PRED_EMPTY) == math.inf
    with pytest.raises(ValueError, match="both_empty=2"):
        EmptyConventions(both_empty=2.0)
    with pytest.raises(ValueError, match="hd_one_empty"):
        EmptyConventions(hd_one_empty=-1.0)
    with pytest.raises(ValueError, match="PRESENT"):
        NNUNET_CONVENTIONS.overlap(StructureStatus.PRESENT)
    assert str(StructureStatus.GT_EMPTY) == "gt_empty"


def test_dice_rejects_bad_inputs():
    with pytest.raises(TypeError, match="integer class labels"):
        dice(np.zeros(3), np.zeros(3, int), [1])
    with pytest.raises(ValueError, match="same voxel grid"):
        dice(np.zeros(3, int), np.zeros(4, int), [1])
    with pytest.raises(ValueError, match="labels is empty"):
        dice(np.zeros(3, int), np.zeros(3, int), [])
