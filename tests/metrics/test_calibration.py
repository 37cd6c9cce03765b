"""Calibration: hand-derived ECE/Brier, brute-force oracles, streaming and input handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.metrics import brier, calibration_stats, ece, foreground_band


def _random_case(k=4, shape=(10, 9, 7), seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(k, *shape)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    labels = rng.integers(0, k, shape)
    return probs, labels


def _brute_force_ece(conf, hit, n_bins=15):
    """Guo et al.'s loop over bins (lower, upper], zeros in the first bin."""
    total, n = 0.0, conf.size
    for m in range(n_bins):
        lower, upper = m / n_bins, (m + 1) / n_bins
        in_bin = (conf > lower) & (conf <= upper)
        if m == 0:
            in_bin |= conf == 0
        if in_bin.any():
            total += in_bin.sum() / n * abs(hit[in_bin].mean() - conf[in_bin].mean())
    return total


def test_one_hot_probabilities_are_perfectly_calibrated():
    labels = np.random.default_rng(1).integers(0, 3, (6, 5, 4))
    probs = np.eye(3)[labels].transpose(3, 0, 1, 2)
    assert ece(probs, labels) == 0.0
    assert ece(probs, labels, kind="classwise") == 0.0
    assert brier(probs, labels) == 0.0


def test_constant_probabilities_hand_derived():
    # p = (0.7, 0.3) everywhere, half the voxels are class 0: top-label confidence 0.7,
    # accuracy 0.5 -> ECE 0.2; Brier (0.3² + 0.3² + 0.7² + 0.7²) / 2 = 0.58.
    labels = np.array([0, 1] * 50).reshape(10, 10)
    probs = np.stack([np.full((10, 10), 0.7), np.full((10, 10), 0.3)])
    assert ece(probs, labels) == pytest.approx(0.2)
    assert brier(probs, labels) == pytest.approx(0.58)
    stats = calibration_stats(probs, labels)
    # One-vs-rest: class 0 predicted 0.7 but frequency 0.5; class 1 predicted 0.3, frequency 0.5.
    assert stats.ece_per_class() == pytest.approx({0: 0.2, 1: 0.2})
    assert stats.brier_per_class() == pytest.approx({0: 0.29, 1: 0.29})
    diagram = stats.reliability()
    assert diagram.count.sum() == 100 and diagram.count[10] == 100  # 0.7 is in (10/15, 11/15]
    assert diagram.confidence[10] == pytest.approx(0.7) and diagram.accuracy[10] == 0.5
    assert np.isnan(diagram.confidence[0])


def test_matches_brute_force_oracles():
    probs, labels = _random_case()
    conf, pred = probs.max(axis=0).ravel(), probs.argmax(axis=0).ravel()
    y = labels.ravel()
    assert ece(probs, labels) == pytest.approx(_brute_force_ece(conf, (pred == y).astype(float)))
    per_class = [_brute_force_ece(probs[k].ravel(), (y == k).astype(float)) for k in range(4)]
    assert ece(probs, labels, kind="classwise") == pytest.approx(np.mean(per_class))
    assert ece(probs, labels, kind="classwise", classes=[1, 3]) == pytest.approx(
        (per_class[1] + per_class[3]) / 2
    )
    onehot = np.eye(4)[labels].transpose(3, 0, 1, 2)
    assert brier(probs, labels) == pytest.approx(((probs - onehot) ** 2).sum(axis=0).mean())


def test_streaming_torch_and_chunking_do_not_change_results():
    probs, labels = _random_case(seed=3)
    whole = calibration_stats(probs, labels)
    tiny_chunks = calibration_stats(probs, labels, chunk_voxels=7)
    from_torch = calibration_stats(torch.from_numpy(probs).float(), torch.from_numpy(labels))
    for other in (tiny_chunks, from_torch):
        np.testing.assert_allclose(other.class_count, whole.class_count)
        assert other.ece_top_label() == pytest.approx(whole.ece_top_label(), abs=1e-6)
        assert other.brier_multiclass() == pytest.approx(whole.brier_multiclass(), abs=1e-6)


def test_region_and_ignored_labels_restrict_the_voxels():
    probs, labels = _random_case(seed=4)
    region = np.zeros(labels.shape, bool)
    region[:5] = True
    restricted = calibration_stats(probs, labels, region=region)
    sliced = calibration_stats(probs[:, :5], labels[:5])
    assert restricted.n_voxels == labels[:5].size
    assert restricted.ece_top_label() == sliced.ece_top_label()
    ignored = labels.copy()
    ignored[5:] = 255
    assert calibration_stats(probs, ignored).brier_multiclass() == sliced.brier_multiclass()


def test_foreground_band_is_measured_in_mm():
    labels = np.zeros((1, 1, 12), np.uint8)
    labels[0, 0, 5] = 2
    band = foreground_band(labels, (1.0, 1.0, 2.0), 4.0)
    assert band[0, 0].tolist() == [False] * 3 + [True] * 5 + [False] * 4  # ±2 voxels of 2 mm
    assert not foreground_band(np.zeros((3, 3, 3), int), (1, 1, 1), 5.0).any()
    pred = np.zeros_like(labels)
    pred[0, 0, 11] = 1
    assert foreground_band(labels, (1, 1, 2), 0.0, also=pred)[0, 0].sum() == 2


def test_bad_inputs_raise_clear_errors():
    probs, labels = _random_case()
    with pytest.raises(ValueError, match="logits"):
        ece(probs * 5 - 2, labels)
    with pytest.raises(ValueError, match=r"\[K, \*labels.shape\]"):
        ece(probs[:, :-1], labels)
    with pytest.raises(ValueError, match="kind"):
        ece(probs, labels, kind="adaptive")
    with pytest.raises(TypeError, match="integer"):
        brier(probs, labels.astype(float))
    assert math.isnan(ece(probs, labels, region=np.zeros(labels.shape, bool)))
