"""``smoothquant``: migrate activation outliers into the weights (Xiao et al. 2023,
"SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models",
ICML).

A few input channels of a linear layer carry much larger activations than the rest, and a
per-tensor or per-token activation grid is sized by them. For ``y = x W^T`` and any ``s > 0``,
``y = (x / s)(W diag(s))^T``: dividing input channel ``j`` by ``s_j`` and multiplying weight
column ``j`` by ``s_j`` is exact. SmoothQuant picks
``s_j = max|X_j|^alpha / max|W[:, j]|^(1 - alpha)`` (``max|X_j|`` over the calibration batches),
which moves a share ``alpha`` of the outlier range into the weights, whose grids are per output
channel (or which are simply easier to quantize).

Where the activation goes: when the module that produces the layer's input is an affine norm
(LayerNorm before a linear layer, Instance/Batch/GroupNorm before a 1x1x1 conv) or a linear/conv
layer whose output only this layer reads (found by a forward trace,
:mod:`~benchmark.quant.algorithms.graph`; a ReLU/LeakyReLU, layout operations and zero padding
in between are fine: the rewrite is a positive per-channel scale), the division is folded into its weight and bias: no
run-time cost. Otherwise (the input is shared, for example one LayerNorm feeding separate q/k/v
projections, or computed by a function: GELU, attention, a residual add) the layer divides its
input online by a per-channel buffer (:class:`~benchmark.quant.algorithms.online.ChannelScale`,
inserted by ``prepare`` as the identity), before its input quantizer: one multiply per input.

Applies to: quantized ``Linear`` layers and ungrouped 1x1x1 convolutions (where a per-input-
channel factor commutes with the GEMM; larger kernels are handled by ``equalization``'s norm
pairs). Layers called more than once per forward are skipped. Cost: one trace, one float pass of
the calibration batches (per-channel maxima of each layer's input), one weight rewrite per layer.
Options: ``alpha`` (default 0.5, the migration strength; 0 leaves activations as they are).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmark.quant.algorithms.base import Algorithm, register_algorithm
from benchmark.quant.algorithms.channels import (
    affine_norm,
    in_axis,
    is_layer,
    pair_fits,
    scale_inputs,
    scale_outputs,
)
from benchmark.quant.algorithms.equalization import input_channel_ranges
from benchmark.quant.algorithms.graph import Graph, trace
from benchmark.quant.algorithms.online import ChannelScale, attach
from benchmark.quant.modules import QuantLayer

__all__ = ["SmoothQuant", "smoothable", "smoothing_factors"]

DEFAULTS = {"alpha": 0.5}
ONLINE = "input_smoothing"


def smoothable(module: nn.Module) -> bool:
    """A quantized linear layer or ungrouped (not transposed) 1x1x1 convolution."""
    if not isinstance(module, QuantLayer) or not is_layer(module):
        return False
    if isinstance(module, nn.Linear):
        return True
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    pointwise = all(k == 1 for k in module.kernel_size)
    return pointwise and not transposed


def smoothing_factors(x_range: torch.Tensor, w_range: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)``, 1 where either range is zero."""
    valid = (x_range > 0) & (w_range > 0)
    factor = x_range.clamp_min(1e-30) ** alpha / w_range.clamp_min(1e-30) ** (1 - alpha)
    return torch.where(valid, factor, 1.0)


def _fold_target(graph: Graph, layer: nn.Module) -> nn.Module | None:
    """The module whose output channels can absorb ``1 / s``, if any."""
    node = graph.once(layer)
    feed = graph.feeder(node) if node is not None else None
    if feed is None:
        return None
    producer = feed.producer.module
    if (affine_norm(producer) or is_layer(producer)) and pair_fits(producer, layer, feed.layout):
        return producer
    return None


@register_algorithm
class SmoothQuant(Algorithm):
    """Per-input-channel smoothing of linear and 1x1x1 conv layers, folded where exact."""

    name = "smoothquant"
    needs_data = True

    def prepare(self, qmodel: nn.Module) -> None:
        for module in list(qmodel.modules()):
            if smoothable(module):
                axis = -1 if isinstance(module, nn.Linear) else 1
                channels = module.weight.shape[in_axis(module)]
                attach(module, ONLINE, ChannelScale(channels, axis).to(module.weight.device))

    def transform_weights(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        alpha = float({**DEFAULTS, **self.options}["alpha"])
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"smoothquant alpha={alpha} must lie in [0, 1]; the paper uses 0.5")
        graph = trace(qmodel, batches[0][:1])
        layers = [
            n.module for n in graph.nodes if smoothable(n.module) and graph.once(n.module) is n
        ]
        ranges = input_channel_ranges(qmodel, batches, layers)
        for layer, x_range in zip(layers, ranges, strict=True):
            w_range = layer.weight.detach().abs().to(torch.float64)
            w_range = w_range.amax(dim=[d for d in range(w_range.ndim) if d != in_axis(layer)])
            factor = smoothing_factors(x_range, w_range, alpha)
            target = _fold_target(graph, layer)
            if target is not None:
                scale_outputs(target, 1.0 / factor)
            else:
                getattr(layer, ONLINE).set_factor(1.0 / factor)
            scale_inputs(layer, factor)
