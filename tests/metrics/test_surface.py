"""NSD and HD95: hand-derived geometry and conformance with DeepMind surface-distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.metrics import (
    PERFECT_IF_BOTH_EMPTY,
    StructureStatus,
    dice,
    hd95,
    nsd,
    surface_distances,
)
from tests.metrics.synthetic import ball, blobs


def _cube(shape=(20, 20, 20), lo=5, hi=13):
    volume = np.zeros(shape, np.uint8)
    volume[lo:hi, lo:hi, lo:hi] = 1
    return volume


# ---------------------------------------------------------------- hand-derived geometry


def test_identical_masks_score_perfectly():
    gt = _cube()
    assert nsd(gt, gt, (1.0, 1.0, 3.0), 0.0, [1]) == {1: 1.0}
    assert hd95(gt, gt, (1.0, 1.0, 3.0), [1]) == {1: 0.0}


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("shift", [1, 2])
def test_shifted_cube_nsd_is_one_iff_tolerance_covers_the_shift(axis, shift):
    # Every surface point p of gt has p + shift on the prediction's surface, so all distances
    # are <= |shift| mm; faces perpendicular to the shift are exactly |shift| mm away.
    spacing = (0.7, 1.1, 2.5)
    gt = _cube()
    pred = np.roll(gt, shift, axis=axis)
    shift_mm = shift * spacing[axis]
    assert nsd(pred, gt, spacing, shift_mm, [1])[1] == 1.0  # a distance equal to τ counts
    assert nsd(pred, gt, spacing, shift_mm * 0.999, [1])[1] < 1.0
    # Faces perpendicular to the shift hold more than 5% of the area: HD95 is the shift.
    assert hd95(pred, gt, spacing, [1])[1] == pytest.approx(shift_mm, abs=1e-12)
    # Dice of a cube shifted by s along one axis of length 8: (8 - s) / 8.
    assert dice(pred, gt, [1])[1] == pytest.approx((8 - shift) / 8)


def test_nsd_grows_with_tolerance():
    spacing = (0.8, 0.8, 2.5)
    gt = blobs((24, 24, 12), 3, seed=1)
    pred = blobs((24, 24, 12), 3, seed=1, noise=0.3)
    values = [nsd(pred, gt, spacing, tol, [1, 2, 3]) for tol in (0.0, 0.5, 1.0, 2.0, 5.0)]
    for label in (1, 2, 3):
        series = [v[label] for v in values]
        assert series == sorted(series) and series[-1] <= 1.0


def test_spacing_matters_anisotropic():
    gt = _cube()
    pred = np.roll(gt, 1, axis=2)
    # One voxel along axis 2 is 1 mm in the first call and 3 mm in the second.
    assert nsd(pred, gt, (1.0, 1.0, 1.0), 1.0, [1])[1] == 1.0
    assert nsd(pred, gt, (1.0, 1.0, 3.0), 1.0, [1])[1] < 1.0


# ---------------------------------------------------------------- conformance


def _cases():
    rng = np.random.default_rng(7)
    shape = (22, 18, 14)
    blob_gt = blobs(shape, 4, seed=3)
    blob_pred = blobs(shape, 4, seed=3, noise=0.4)
    tiny_gt = np.zeros(shape, np.int16)
    tiny_gt[5, 6, 7] = 1
    tiny_pred = np.zeros(shape, np.int16)
    tiny_pred[6, 6, 9] = 1
    large_gt = np.ones(shape, np.int16)
    large_gt[:2] = 0
    large_pred = np.ones(shape, np.int16)
    large_pred[:, :1] = 0
    border_gt = np.zeros(shape, np.int16)
    border_gt[0:6, :, 0:4] = 1
    border_gt[-5:, -4:, -3:] = 2
    border_pred = np.roll(border_gt, 1, axis=1)
    border_pred[-1, :, :] = 2
    hole_gt = ball(shape, (11, 9, 7), (8, 7, 5)).astype(np.int16)
    hole_gt[ball(shape, (11, 9, 7), (4, 3, 2))] = 0
    hole_pred = ball(shape, (11, 9, 6), (8, 6, 5)).astype(np.int16)
    hole_pred[ball(shape, (12, 9, 7), (4, 4, 3))] = 0
    noisy_pred = np.where(rng.random(shape) < 0.03, rng.integers(0, 5, shape), blob_gt)
    return {
        "blobs": (blob_pred, blob_gt, (0.7, 1.3, 3.0)),
        "tiny": (tiny_pred, tiny_gt, (0.8, 0.8, 2.5)),
        "large": (large_pred, large_gt, (1.5, 0.6, 1.0)),
        "border": (border_pred, border_gt, (1.0, 2.0, 0.5)),
        "holes": (hole_pred, hole_gt, (0.9, 0.9, 2.0)),
        "speckle": (noisy_pred.astype(np.int16), blob_gt, (1.0, 1.0, 1.0)),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_surface_distance(name, surface_distance):
    pred, gt, spacing = CASES[name]
    labels = [int(v) for v in np.union1d(np.unique(pred), np.unique(gt)) if v > 0]
    ours = surface_distances(pred, gt, spacing, labels)
    dsc = dice(pred, gt, labels)
    tolerances = (0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 30.0)
    # nsd() resolves distances only up to the tolerance (offset probing, or a bounded k-d tree
    # for 30 mm): it must agree with the exact distances and with the reference.
    bounded = {tol: nsd(pred, gt, spacing, tol, labels) for tol in tolerances}
    for label in labels:
        ref = surface_distance.compute_surface_distances(gt == label, pred == label, spacing)
        mine = ours[label]
        # Same surfels, same areas, same distance distribution in each direction.
        order = np.lexsort((mine.areas_gt, mine.distances_gt_to_pred))
        np.testing.assert_allclose(mine.distances_gt_to_pred[order], ref["distances_gt_to_pred"])
        np.testing.assert_allclose(mine.areas_gt[order], ref["surfel_areas_gt"], rtol=1e-12)
        order = np.lexsort((mine.areas_pred, mine.distances_pred_to_gt))
        np.testing.assert_allclose(mine.distances_pred_to_gt[order], ref["distances_pred_to_gt"])
        for tol in tolerances:
            expected = surface_distance.compute_surface_dice_at_tolerance(ref, tol)
            assert abs(mine.surface_dice(tol) - expected) < 1e-6, (label, tol)
            assert abs(bounded[tol][label] - expected) < 1e-6, (label, tol)
        for pct in (50, 95, 100):
            expected = surface_distance.compute_robust_hausdorff(ref, pct)
            assert mine.robust_hausdorff(pct) == pytest.approx(expected, rel=1e-12), (label, pct)
        expected_dsc = surface_distance.compute_dice_coefficient(gt == label, pred == label)
        assert dsc[label] == expected_dsc
    # Threaded or not, the public functions agree with the shared computation.
    for workers in (1, 2):
        got = nsd(pred, gt, spacing, 2.0, labels, max_workers=workers)
        assert got == {k: ours[k].surface_dice(2.0) for k in labels}
    assert hd95(pred, gt, spacing, labels) == {k: ours[k].robust_hausdorff(95) for k in labels}


@pytest.mark.parametrize("bound", [0.0, 1.0, 2.5, 4.0, 30.0])
def test_bounded_distances_equal_exact_ones_within_the_bound(bound):
    pred, gt, spacing = CASES["blobs"]
    exact = surface_distances(pred, gt, spacing, [1, 2, 3, 4])
    limited = surface_distances(pred, gt, spacing, [1, 2, 3, 4], max_distance_mm=bound)
    for label, full in exact.items():
        for whole, part in (
            (full.distances_gt_to_pred, limited[label].distances_gt_to_pred),
            (full.distances_pred_to_gt, limited[label].distances_pred_to_gt),
        ):
            np.testing.assert_array_equal(part, np.where(whole <= bound, whole, np.inf))


def test_one_sided_empty_matches_reference_and_conventions(surface_distance):
    spacing = (1.0, 1.0, 2.0)
    gt = _cube()
    empty = np.zeros_like(gt)
    ref = surface_distance.compute_surface_distances(gt == 1, empty == 1, spacing)
    assert (
        nsd(empty, gt, spacing, 1.0, [1])[1]
        == surface_distance.compute_surface_dice_at_tolerance(ref, 1.0)
        == 0.0
    )
    assert (
        hd95(empty, gt, spacing, [1])[1]
        == surface_distance.compute_robust_hausdorff(ref, 95)
        == math.inf
    )
    assert nsd(gt, empty, spacing, 1.0, [1])[1] == 0.0
    assert surface_distances(gt, empty, spacing, [1, 2])[1].status is StructureStatus.GT_EMPTY
    assert surface_distances(empty, gt, spacing, [1])[1].status is StructureStatus.PRED_EMPTY


def test_both_empty_is_nan_by_default_and_configurable():
    gt = _cube()
    assert math.isnan(nsd(gt, gt, (1, 1, 1), 1.0, [2])[2])
    assert math.isnan(hd95(gt, gt, (1, 1, 1), [2])[2])
    assert math.isnan(dice(gt, gt, [2])[2])
    assert nsd(gt, gt, (1, 1, 1), 1.0, [2], conventions=PERFECT_IF_BOTH_EMPTY) == {2: 1.0}
    assert hd95(gt, gt, (1, 1, 1), [2], conventions=PERFECT_IF_BOTH_EMPTY) == {2: 0.0}
    assert dice(gt, gt, [2], conventions=PERFECT_IF_BOTH_EMPTY) == {2: 1.0}


def test_per_class_tolerances_and_background_label():
    spacing = (1.0, 1.0, 1.0)
    gt = np.zeros((20, 20, 12), np.uint8)
    gt[3:9, 3:9, 3:9] = 1
    gt[11:16, 4:15, 2:10] = 2
    pred = np.roll(gt, 2, axis=0)  # nothing touches the wrapped border
    got = nsd(pred, gt, spacing, {0: 0.0, 1: 2.0, 2: 1.0}, [0, 1, 2])
    assert got[1] == 1.0  # a 2-voxel shift is within 2 mm
    assert got[2] < 1.0 and got[0] < 1.0
    with pytest.raises(KeyError, match="no entry for label 2"):
        nsd(pred, gt, spacing, {1: 2.0}, [1, 2])


def test_bounded_distances_refuse_what_they_cannot_answer():
    gt = _cube()
    pred = np.roll(gt, 3, axis=0)
    bounded = surface_distances(pred, gt, (1, 1, 1), [1], max_distance_mm=1.0)[1]
    exact = surface_distances(pred, gt, (1, 1, 1), [1])[1]
    assert bounded.surface_dice(1.0) == exact.surface_dice(1.0)
    with pytest.raises(ValueError, match="exceeds max_distance_mm"):
        bounded.surface_dice(2.0)
    with pytest.raises(ValueError, match="exact distances"):
        bounded.robust_hausdorff(95)


def test_accepts_torch_and_rejects_bad_inputs():
    gt = _cube()
    assert nsd(torch.from_numpy(gt), torch.from_numpy(gt), (1, 1, 1), 1.0, [1]) == {1: 1.0}
    with pytest.raises(TypeError, match="integer class labels"):
        nsd(gt.astype(np.float32), gt, (1, 1, 1), 1.0, [1])
    with pytest.raises(ValueError, match="same voxel grid"):
        nsd(gt[:-1], gt, (1, 1, 1), 1.0, [1])
    with pytest.raises(ValueError, match="spacing_mm"):
        nsd(gt, gt, (1, 1), 1.0, [1])
    with pytest.raises(ValueError, match="spacing_mm"):
        nsd(gt, gt, (1, 0, 1), 1.0, [1])
    with pytest.raises(ValueError, match="tolerance_mm"):
        nsd(gt, gt, (1, 1, 1), -1.0, [1])
    with pytest.raises(ValueError, match="3D"):
        nsd(gt[0], gt[0], (1, 1), 1.0, [1])
    with pytest.raises(ValueError, match="distinct non-negative"):
        nsd(gt, gt, (1, 1, 1), 1.0, [1, 1])
