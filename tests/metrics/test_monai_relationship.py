"""How our NSD (surface-distance surfels) relates to MONAI's ``compute_surface_dice``.

The relationship documented in ``benchmark/metrics/surface.py``: MONAI with
``use_subvoxels=True`` is the same definition (equal to 1e-6, MONAI computes in float32); MONAI's
default counts edge voxels with unit weight, which on anisotropic grids over-weights the faces
perpendicular to the thick axis, so the two differ by more than 0.2 on a box shifted by one
thick slice, in a direction set by which faces fail; both agree on the extremes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from benchmark.metrics import nsd
from tests.metrics.synthetic import blobs

monai_metrics = pytest.importorskip("monai.metrics")

SPACING = (0.8, 0.8, 2.5)


def _monai(pred, gt, spacing, tolerance, subvoxels=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about empty masks
        value = monai_metrics.compute_surface_dice(
            torch.from_numpy(pred)[None, None],
            torch.from_numpy(gt)[None, None],
            [tolerance],
            include_background=True,
            spacing=list(spacing),
            use_subvoxels=subvoxels,
        )
    return float(value[0, 0])


def _box():
    gt = np.zeros((40, 40, 16), bool)
    gt[8:32, 8:32, 4:12] = True  # 19.2 x 19.2 x 20 mm
    return gt


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("tolerance", [0.5, 2.5])
def test_subvoxel_monai_is_the_same_definition(seed, tolerance):
    gt = blobs((28, 24, 12), 1, seed=seed) > 0
    pred = blobs((28, 24, 12), 1, seed=seed, noise=0.5) > 0
    ours = nsd(pred.astype(np.uint8), gt.astype(np.uint8), SPACING, tolerance, [1])[1]
    assert abs(ours - _monai(pred, gt, SPACING, tolerance, subvoxels=True)) < 1e-6


def test_default_monai_overweights_in_plane_faces_on_anisotropic_grids():
    gt = _box()
    # Shift by one 2.5 mm slice, tolerance 2 mm: the two in-plane faces fail, the side faces pass.
    # By area the in-plane faces are 2 x 19.2² = 737 mm² of 2273 mm² (32%); by edge-voxel count
    # they are 1152 of 1704 voxels (68%), so MONAI's default scores far lower.
    pred = np.roll(gt, 1, axis=2)
    ours = nsd(pred.astype(np.uint8), gt.astype(np.uint8), SPACING, 2.0, [1])[1]
    default = _monai(pred, gt, SPACING, 2.0)
    assert ours - default > 0.2
    assert abs(ours - _monai(pred, gt, SPACING, 2.0, subvoxels=True)) < 1e-6
    # Shift in-plane by 2 x 0.8 mm, tolerance 1 mm: now the side faces fail and MONAI, which
    # under-weights them (one count for 2 mm² of surface), scores higher.
    pred = np.roll(gt, 2, axis=0)
    ours = nsd(pred.astype(np.uint8), gt.astype(np.uint8), SPACING, 1.0, [1])[1]
    assert _monai(pred, gt, SPACING, 1.0) - ours > 0.1


def test_definitions_agree_on_the_extremes():
    gt = _box()
    assert nsd(gt.astype(np.uint8), gt.astype(np.uint8), SPACING, 0.0, [1])[1] == 1.0
    assert _monai(gt, gt, SPACING, 0.0) == 1.0
    far = np.zeros_like(gt)
    far[34:38, 34:38, 13:15] = True
    assert nsd(far.astype(np.uint8), gt.astype(np.uint8), SPACING, 1.0, [1])[1] == 0.0
    assert _monai(far, gt, SPACING, 1.0) == 0.0
