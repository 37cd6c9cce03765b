"""Streaming summaries against direct numpy/scipy computations on the whole array."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from benchmark.analysis.streaming import (
    RunningMoments,
    StreamingHistogram,
    kl_divergence,
    sqnr_db,
)


def _batches(values: np.ndarray, sizes: list[int]) -> list[torch.Tensor]:
    cuts = np.cumsum(sizes)[:-1]
    return [torch.from_numpy(part) for part in np.split(values, cuts)]


def test_running_moments_match_scipy_over_uneven_batches():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_t(4, 5000), 30 + rng.normal(0, 3, 700)])
    moments = RunningMoments()
    for batch in _batches(values, [1, 999, 2500, 2200, 1000]):
        moments.update(batch)
    assert moments.n == len(values)
    assert moments.mean == pytest.approx(values.mean(), rel=1e-12)
    assert moments.std == pytest.approx(values.std(), rel=1e-10)
    assert moments.excess_kurtosis == pytest.approx(stats.kurtosis(values), rel=1e-9)
    assert (moments.min, moments.max) == (values.min(), values.max())


def test_kurtosis_of_constant_stream_is_nan():
    moments = RunningMoments()
    moments.update(torch.full((10,), 3.0))
    assert math.isnan(moments.excess_kurtosis)


def test_histogram_growth_is_exact():
    """Growing the range while streaming gives the counts of one pass at the final range."""
    rng = np.random.default_rng(2)
    small, large = rng.uniform(-0.9, 0.9, 4000), rng.uniform(-7.5, 7.5, 4000)
    streamed = StreamingHistogram(64)
    streamed.update(torch.from_numpy(small))
    assert streamed.half_range == 1.0
    streamed.update(torch.from_numpy(large))
    assert streamed.half_range == 8.0
    direct = np.histogram(np.concatenate([small, large]), bins=64, range=(-8, 8))[0]
    np.testing.assert_array_equal(streamed.counts, direct)


@pytest.mark.parametrize("q", [0.1, 1.0, 50.0, 99.0, 99.9])
def test_histogram_percentile_within_one_bin(q):
    rng = np.random.default_rng(3)
    values = rng.lognormal(0, 1, 20_000) - 1
    hist = StreamingHistogram(2048)
    for batch in _batches(values, [5000] * 4):
        hist.update(batch)
    width = 2 * hist.half_range / hist.bins
    ordered = np.sort(values)
    # the true q-quantile lies between these order statistics; binning adds one bin width
    below = ordered[int(np.floor(q / 100 * (len(values) - 1)))]
    above = ordered[min(int(np.ceil(q / 100 * len(values))), len(values) - 1)]
    assert below - width <= hist.percentile(q) <= above + width
    assert abs(hist.percentile(q) - np.percentile(values, q)) <= max(width, above - below) + width


def test_fraction_outside_counts_tails():
    values = np.concatenate([np.zeros(990), np.full(10, 100.0)])
    hist = StreamingHistogram(256)
    hist.update(torch.from_numpy(values))
    assert hist.fraction_outside(-1.0, 1.0) == pytest.approx(0.01)


def test_align_puts_both_on_one_grid():
    a, b = StreamingHistogram(32), StreamingHistogram(32)
    a.update(torch.tensor([0.5, -0.25]))
    b.update(torch.tensor([3.0]))
    a.align(b)
    assert a.half_range == b.half_range == 4.0
    assert a.total == 2 and b.total == 1


def test_sqnr_known_value():
    signal = torch.ones(1000)
    noisy = signal + 0.1 * torch.tensor([1.0, -1.0]).repeat(500)  # noise power 0.01 per element
    power = float((signal**2).sum())
    noise = float(((signal - noisy) ** 2).sum())
    assert sqnr_db(power, noise) == pytest.approx(20.0, abs=1e-4)
    assert sqnr_db(1.0, 0.0) == math.inf
    assert math.isnan(sqnr_db(0.0, 0.0))


def test_kl_divergence_matches_scipy_entropy():
    p, q = np.array([10, 20, 70]), np.array([30, 30, 40])
    assert kl_divergence(p, q, eps=0) == pytest.approx(stats.entropy(p, q))
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(p, q) > 0
