"""Fixtures for metric tests: the reference package, patched for NumPy 2 in tests only."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def surface_distance(monkeypatch):
    """DeepMind's surface-distance, the reference definition of NSD and HD95.

    Version 0.1 uses ``np.Inf``/``np.NaN``, removed in NumPy 2; the aliases are restored for the
    duration of one test only, so nothing outside the tests depends on the old package.
    """
    module = pytest.importorskip("surface_distance")
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    monkeypatch.setattr(np, "NaN", np.nan, raising=False)
    return module
