"""Relative drop as the published tables print it, and the paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.metrics import format_with_drop, paired_bootstrap, relative_drop


def test_relative_drop_matches_published_cells():
    # MedQuanBench BTCV, nnU-Net: FP32 DSC 0.872, W4A4 per-channel 0.387 printed "(55.6%)".
    assert relative_drop(0.387, 0.872) == pytest.approx(55.619, abs=1e-3)
    assert format_with_drop(0.387, 0.872) == "0.387 (55.6%)"
    assert format_with_drop(0.872, 0.872) == "0.872 (0.0%)"
    assert format_with_drop(0.909, 0.9, pct_digits=0) == "0.909 (1%↑)"
    assert relative_drop(0.909, 0.9) < 0
    np.testing.assert_allclose(relative_drop(np.array([0.5, 1.0]), 1.0), [50.0, 0.0])
    assert math.isnan(relative_drop(0.5, 0.0))
    assert format_with_drop(0.5, 0.0) == "0.500"
    assert format_with_drop(math.nan, 0.8) == "nan"


def test_paired_bootstrap_is_seeded_and_centred_on_the_mean_difference():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.7, 0.9, 30)
    a = b + rng.normal(0.02, 0.01, 30)
    first = paired_bootstrap(a, b, seed=3)
    assert first == paired_bootstrap(a, b, seed=3)
    assert first != paired_bootstrap(a, b, seed=4)
    assert first.estimate == pytest.approx(np.mean(a - b))
    assert first.ci_low < first.estimate < first.ci_high
    assert first.p_value < 0.001 and first.n_cases == 30
    # The paired CI ignores case difficulty (b's spread), so it is far narrower than b's spread.
    assert first.ci_high - first.ci_low < 0.02


def test_paired_bootstrap_p_value_definition():
    # Differences (+1, -1): resampled means are +1, 0, -1 with probabilities 1/4, 1/2, 1/4, so
    # P(Δ* >= 0) = 3/4, P(Δ* < 0) = 1/4 and p = min(1, 2 * 1/4) = 0.5.
    result = paired_bootstrap([1.0, 0.0], [0.0, 1.0], n_resamples=40_000, seed=0)
    assert result.p_value == pytest.approx(0.5, abs=0.02)
    assert result.estimate == 0.0 and (result.ci_low, result.ci_high) == (-1.0, 1.0)
    constant = paired_bootstrap([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert constant.p_value == 0.0
    assert constant.ci_low == pytest.approx(0.1) and constant.ci_high == pytest.approx(0.1)


def test_paired_bootstrap_pairs_by_case_and_drops_nan():
    a = {"c1": 0.9, "c2": 0.8, "c3": math.nan}
    b = {"c3": 0.5, "c2": 0.7, "c1": 0.85}
    result = paired_bootstrap(a, b, n_resamples=100)
    assert result.n_cases == 2 and result.n_dropped == 1
    assert result.estimate == pytest.approx((0.05 + 0.1) / 2)
    with pytest.raises(ValueError, match="only in a: \\['c4'\\]"):
        paired_bootstrap({**a, "c4": 1.0}, b)
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap([1.0], [0.5])
    with pytest.raises(ValueError, match="paired by case"):
        paired_bootstrap([1.0, 2.0], [0.5])
