"""The surfel model equals surface-distance's lookup tables and neighbourhood encoding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from benchmark.metrics._surfels import corner_codes, surfel_area_table


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5), (3.1, 0.7, 1.3)])
def test_area_table_equals_reference(spacing, surface_distance):
    reference = surface_distance.lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(surfel_area_table(spacing), reference, rtol=1e-14, atol=0)
    assert surfel_area_table(spacing)[0] == surfel_area_table(spacing)[255] == 0.0


def test_corner_codes_equal_reference_encoding(surface_distance):
    mask = np.random.default_rng(0).random((7, 8, 9)) > 0.5
    kernel = surface_distance.lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL
    # The reference pads one voxel at the high end and correlates with constant zero borders.
    padded = np.pad(mask, ((0, 1),) * 3).astype(np.uint8)
    reference = ndimage.correlate(padded, kernel, mode="constant", cval=0)
    np.testing.assert_array_equal(corner_codes(mask), reference)


def test_unit_cube_surface_area():
    # A single 1 x 2 x 3 mm voxel: marching cubes cuts its 8 corners, area < the box's 22 mm².
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    codes = corner_codes(mask)
    area = surfel_area_table((1.0, 2.0, 3.0))[codes].sum()
    assert np.count_nonzero(codes) == 8 and 0 < area < 22
