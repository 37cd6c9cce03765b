"""Seeded synthetic label maps for metric tests (tiny, fast, reproducible)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["ball", "blobs"]


def blobs(shape, n_labels, seed, smooth=2.0, noise=0.0):
    """Integer label map of smooth random blobs: labels 1..n_labels by noise quantiles."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), smooth)
    if noise:
        field = field + noise * ndimage.gaussian_filter(rng.normal(size=shape), smooth / 2)
    edges = np.quantile(field, np.linspace(0.35, 0.95, n_labels + 1))
    return ((np.digitize(field, edges[1:-1]) + 1) * (field > edges[0])).astype(np.int16)


def ball(shape, centre, radius_vox):
    """Boolean ball (radius in voxels per axis) on a grid."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius_vox, strict=True))
    return r2 <= 1.0
