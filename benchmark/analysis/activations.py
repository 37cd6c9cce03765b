"""Activation statistics of the quantized layers' inputs, collected by hooks in one pass.

For every batch the FP32 model runs first: a forward pre-hook on each analysed layer updates
that layer's FP32 summaries and keeps a reference to the input until the batch is done. Then
each quantized model runs on the same batch: a forward hook on the layer's ``input_quant``
sees the input the quantized network produced (``x~``) and what the quantizer made of it
(``Q(x~)``), and compares both with the FP32 input ``x`` of the same layer. Only one batch of
inputs is ever held; everything else is a streaming summary (:mod:`benchmark.analysis.streaming`).

Axes: convolution inputs ``[B, C, *spatial]`` have channels on axis 1 and one "voxel" per
(sample, spatial position); linear inputs ``[B, N, C]`` have channels last and one "token" per
(sample, position). Attention matmul operands are not covered (their quantizers are not layer
inputs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark.analysis.streaming import (
    RunningMoments,
    StreamingHistogram,
    kl_divergence,
    sqnr_db,
)

__all__ = [
    "DISTRIBUTION_METRICS",
    "PERCENTILES",
    "SHIFT_METRICS",
    "LayerStatistics",
    "ShiftStatistics",
    "collect_activation_statistics",
]

#: Percentiles reported for every layer input, as ``act_p<q>`` (``.`` written as ``_``).
PERCENTILES = (0.1, 1.0, 50.0, 99.0, 99.9)
#: Metric ids of the FP32 distribution of a layer input.
DISTRIBUTION_METRICS = (
    "act_min",
    "act_max",
    "act_range",
    *(f"act_p{q:g}".replace(".", "_") for q in PERCENTILES),
    "act_kurtosis",
    "act_channel_range_ratio",
    "act_voxel_range_ratio",
    "act_outlier_ratio",
)
#: Metric ids of the FP32-vs-quantized shift of a layer input.
SHIFT_METRICS = ("sqnr_db", "sqnr_local_db", "kl_div")


def _channel_axis(module: nn.Module) -> int:
    return -1 if isinstance(module, nn.Linear) else 1


class LayerStatistics:
    """Streaming FP32 summary of one layer input.

    Args:
        channel_axis: 1 for convolutions ``[B, C, ...]``, -1 for linear layers ``[B, N, C]``.
        bins: histogram bins.
    """

    def __init__(self, channel_axis: int, bins: int = 2048) -> None:
        self.channel_axis = channel_axis
        self.moments = RunningMoments()
        self.histogram = StreamingHistogram(bins)
        self.channel_lo: torch.Tensor | None = None
        self.channel_hi: torch.Tensor | None = None
        self.voxel_ranges = StreamingHistogram(bins)
        self.voxel_range_max = 0.0

    def update(self, x: torch.Tensor) -> None:
        """Add one batch of layer inputs."""
        x = x.detach()
        self.moments.update(x)
        self.histogram.update(x)
        channels_last = x.movedim(self.channel_axis, -1)
        flat = channels_last.reshape(-1, channels_last.shape[-1])
        lo, hi = flat.amin(dim=0), flat.amax(dim=0)
        if self.channel_lo is None:
            self.channel_lo, self.channel_hi = lo, hi
        else:
            self.channel_lo = torch.minimum(self.channel_lo, lo)
            self.channel_hi = torch.maximum(self.channel_hi, hi)
        voxel = flat.amax(dim=1) - flat.amin(dim=1)
        self.voxel_ranges.update(voxel)
        self.voxel_range_max = max(self.voxel_range_max, float(voxel.max()))

    def metrics(self, outlier_sigma: float = 6.0) -> dict[str, float]:
        """:data:`DISTRIBUTION_METRICS` of everything seen so far.

        ``act_channel_range_ratio`` and ``act_voxel_range_ratio`` are the largest per-channel
        (per-voxel) range divided by the median one: how much one shared scale wastes on the
        typical channel (voxel). ``act_outlier_ratio`` is the share of values farther than
        ``outlier_sigma`` standard deviations from the mean.
        """
        m = self.moments
        out = {"act_min": m.min, "act_max": m.max, "act_range": m.max - m.min}
        for q in PERCENTILES:
            out[f"act_p{q:g}".replace(".", "_")] = self.histogram.percentile(q)
        out["act_kurtosis"] = m.excess_kurtosis
        ranges = (self.channel_hi - self.channel_lo).double().cpu().numpy()
        out["act_channel_range_ratio"] = _max_over_median(ranges.max(), float(np.median(ranges)))
        out["act_voxel_range_ratio"] = _max_over_median(
            self.voxel_range_max, self.voxel_ranges.percentile(50.0)
        )
        band = outlier_sigma * m.std
        out["act_outlier_ratio"] = self.histogram.fraction_outside(m.mean - band, m.mean + band)
        return out


def _max_over_median(largest: float, median: float) -> float:
    """NaN when every range is 0 (e.g. per-voxel ranges of a one-channel input)."""
    return float(largest / median) if largest > 0 and median > 0 else math.nan


class ShiftStatistics:
    """Streaming comparison of a layer's FP32 input with the quantized network's.

    Args:
        bins: histogram bins (the same as the FP32 :class:`LayerStatistics`, for the KL).
    """

    def __init__(self, bins: int = 2048) -> None:
        self.signal = self.noise = 0.0
        self.local_signal = self.local_noise = 0.0
        self.histogram = StreamingHistogram(bins)

    def update(self, reference: torch.Tensor, observed: torch.Tensor, quantized: torch.Tensor):
        """Add one batch: FP32 input ``x``, the quantized network's input ``x~`` and ``Q(x~)``."""
        reference, observed, quantized = (
            t.detach().double() for t in (reference, observed, quantized)
        )
        self.signal += float((reference * reference).sum())
        self.noise += float(((reference - quantized) ** 2).sum())
        self.local_signal += float((observed * observed).sum())
        self.local_noise += float(((observed - quantized) ** 2).sum())
        self.histogram.update(quantized)

    def metrics(self, reference: StreamingHistogram, kl_bins: int = 128) -> dict[str, float]:
        """:data:`SHIFT_METRICS`.

        ``sqnr_db``: FP32 input vs the quantized network's quantized input (rounding plus all
        error accumulated upstream). ``sqnr_local_db``: the quantized network's input before vs
        after its own quantizer (this layer's rounding alone). ``kl_div``: KL(quantized || FP32)
        in nats on the two histograms merged down to ``kl_bins`` bins: how unlikely the
        quantized network's inputs are under the FP32 distribution (clipping piles and shifted
        mass raise it). The reverse direction is dominated by the empty bins between grid
        levels at low bit widths and says little about the shift.
        """
        self.histogram.align(reference)
        return {
            "sqnr_db": sqnr_db(self.signal, self.noise),
            "sqnr_local_db": sqnr_db(self.local_signal, self.local_noise),
            "kl_div": kl_divergence(
                reference.coarsened(kl_bins), self.histogram.coarsened(kl_bins)
            ),
        }


def collect_activation_statistics(
    model: nn.Module,
    qmodels: Mapping[str, nn.Module],
    batches: Iterable[torch.Tensor],
    layers: Sequence[str],
    bins: int = 2048,
    kl_bins: int = 128,
    outlier_sigma: float = 6.0,
) -> pd.DataFrame:
    """Stream ``batches`` through the FP32 model and every quantized model once.

    Args:
        model: the FP32 network.
        qmodels: label (e.g. the granularity) -> quantized copy of ``model`` from
            :func:`benchmark.quant.quantize`, calibrated; its layer ``name`` must have an
            ``input_quant`` for every name in ``layers``.
        batches: input tensors ``[B, C, *roi]``.
        layers: dotted names of the layers to observe, in network order.
        bins, kl_bins, outlier_sigma: see :class:`benchmark.schema.sensitivity.SensitivityConfig`.

    Returns:
        Rows ``layer``, ``layer_index`` (position in ``layers``), ``op_type``, ``spec`` (None
        for the FP32 distribution, else the ``qmodels`` label), ``metric``, ``value``.
    """
    fp32 = {
        name: LayerStatistics(_channel_axis(model.get_submodule(name)), bins) for name in layers
    }
    shifts = {(label, name): ShiftStatistics(bins) for label in qmodels for name in layers}
    current: dict[str, torch.Tensor] = {}
    active: list[str] = []
    seen: set[str] = set()

    def fp32_hook(name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            current[name] = inputs[0].detach()
            fp32[name].update(inputs[0])
            seen.add(name)

        return hook

    def quant_hook(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if name in current:
                shifts[(active[0], name)].update(current[name], inputs[0], output)

        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(fp32_hook(n)) for n in layers]
    for qmodel in qmodels.values():
        handles += [
            qmodel.get_submodule(n).input_quant.register_forward_hook(quant_hook(n)) for n in layers
        ]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            for batch in batches:
                batch = batch.as_subclass(torch.Tensor).to(device)
                current.clear()
                model(batch)
                for label, qmodel in qmodels.items():
                    active[:] = [label]
                    qmodel(batch)
                current.clear()
    finally:
        for handle in handles:
            handle.remove()
    rows: list[dict[str, Any]] = []
    for index, name in enumerate(layers):
        if name not in seen:
            continue
        common = {
            "layer": name,
            "layer_index": index,
            "op_type": type(model.get_submodule(name)).__name__,
        }
        for metric, value in fp32[name].metrics(outlier_sigma).items():
            rows.append({**common, "spec": None, "metric": metric, "value": value})
        for label in qmodels:
            shift = shifts[(label, name)].metrics(fp32[name].histogram, kl_bins)
            for metric, value in shift.items():
                rows.append({**common, "spec": label, "metric": metric, "value": value})
    return pd.DataFrame(
        rows, columns=["layer", "layer_index", "op_type", "spec", "metric", "value"]
    )
