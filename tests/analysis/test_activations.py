"""Hook-collected activation statistics against direct computation on the same tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import benchmark.quant as quant
from benchmark.analysis.activations import (
    DISTRIBUTION_METRICS,
    SHIFT_METRICS,
    LayerStatistics,
    collect_activation_statistics,
)


def test_layer_statistics_match_numpy_on_a_small_conv_input():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 6, generator=gen)
    x[0, 2] *= 10  # one loud channel
    x[1, :, 0, 0, 0] = torch.tensor([50.0, -50.0, 0.0])  # one voxel with a wide range
    layer = LayerStatistics(channel_axis=1, bins=4096)
    layer.update(x[:1])
    layer.update(x[1:])
    metrics = layer.metrics(outlier_sigma=3.0)
    a = x.numpy()
    assert metrics["act_min"] == pytest.approx(a.min())
    assert metrics["act_max"] == pytest.approx(a.max())
    assert metrics["act_kurtosis"] == pytest.approx(stats.kurtosis(a.ravel()), rel=1e-6)
    channel = a.max(axis=(0, 2, 3, 4)) - a.min(axis=(0, 2, 3, 4))
    assert metrics["act_channel_range_ratio"] == pytest.approx(channel.max() / np.median(channel))
    voxel = (a.max(axis=1) - a.min(axis=1)).ravel()
    width = 2 * layer.voxel_ranges.half_range / layer.voxel_ranges.bins
    median = np.median(voxel)
    assert abs(voxel.max() / metrics["act_voxel_range_ratio"] - median) <= width
    outliers = np.mean(np.abs(a - a.mean()) > 3 * a.std())
    assert metrics["act_outlier_ratio"] == pytest.approx(outliers, abs=2 / a.size)
    assert abs(metrics["act_p50"] - np.percentile(a, 50)) <= 2 * 50 / 4096 * 2


def test_linear_inputs_use_the_last_axis_as_channels():
    x = torch.zeros(1, 4, 3)
    x[..., 0] = 1.0
    x[..., 1] = torch.arange(4.0)
    layer = LayerStatistics(channel_axis=-1)
    layer.update(x)
    ranges = np.array([0.0, 3.0, 0.0])
    assert layer.metrics()["act_channel_range_ratio"] == pytest.approx(
        ranges.max() / np.median(ranges) if np.median(ranges) > 0 else math.nan, nan_ok=True
    )


def _calibrated(model, precision, granularity, batches):
    qmodel = quant.quantize(model, quant.QuantSpec(precision, granularity))
    quant.calibrate(qmodel, batches)
    return qmodel


def test_collect_statistics_rows_and_first_layer_sqnr(tiny_segnet):
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(1, 1, 8, 8, 8, generator=gen) for _ in range(3)]
    w8 = _calibrated(tiny_segnet, "w8a8", "per_tensor", batches)
    w4 = _calibrated(tiny_segnet, "w4a4", "per_tensor", batches)
    layers = quant.quantized_layer_names(w8)
    rows = collect_activation_statistics(tiny_segnet, {"w8a8": w8, "w4a4": w4}, batches, layers)
    assert len(rows) == len(layers) * (len(DISTRIBUTION_METRICS) + 2 * len(SHIFT_METRICS))
    assert rows["layer"].drop_duplicates().tolist() == layers
    sqnr = rows[rows["metric"] == "sqnr_db"].set_index(["spec", "layer"])["value"]
    # fewer bits, more noise: at every layer the W4A4 input is further from FP32
    assert all(sqnr["w4a4", n] < sqnr["w8a8", n] for n in layers)
    # the first layer sees the FP32 input itself: both SQNRs equal Q(x) vs x, computed directly
    first = layers[0]
    quantizer = w8.get_submodule(first).input_quant
    signal = sum(float((b.double() ** 2).sum()) for b in batches)
    noise = sum(float(((b - quantizer(b)).double() ** 2).sum()) for b in batches)
    direct = 10 * math.log10(signal / noise)
    local = rows[(rows["metric"] == "sqnr_local_db") & (rows["spec"] == "w8a8")]
    assert sqnr["w8a8", first] == pytest.approx(direct, rel=1e-9)
    assert local.set_index("layer")["value"][first] == pytest.approx(direct, rel=1e-9)
    assert (rows[rows["metric"] == "kl_div"]["value"] >= 0).all()


def test_hooks_are_removed_after_collection(tiny_segnet):
    batches = [torch.randn(1, 1, 8, 8, 8)]
    qmodel = _calibrated(tiny_segnet, "w8a8", "per_tensor", batches)
    layers = quant.quantized_layer_names(qmodel)
    collect_activation_statistics(tiny_segnet, {"q": qmodel}, batches, layers)
    for name in layers:
        assert not tiny_segnet.get_submodule(name)._forward_pre_hooks
        assert not qmodel.get_submodule(name).input_quant._forward_hooks
