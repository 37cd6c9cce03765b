"""``reparam``: scale re-parameterisation of post-normalisation activations (RepQ-ViT: Li et al.
2023, "RepQ-ViT: Scale Reparameterization for Post-Training Quantization of Vision
Transformers", ICCV).

The output of a LayerNorm (and of an Instance/Batch/GroupNorm) varies strongly between
channels: each channel ``c`` has its own range ``[lo_c, hi_c]``, set by the norm's ``gamma_c``
and ``beta_c``. A per-channel activation grid fits them but a per-tensor one is what kernels
run. RepQ-ViT quantizes per channel in effect and deploys per tensor: with the per-channel
centre ``m_c = (lo_c + hi_c) / 2`` and half-width ``h_c = (hi_c - lo_c) / 2`` (over the
calibration batches) and ``r_c = h_c / mean(h)``, the activation is re-parameterised as
``x~_c = (x_c - m_c) / r_c``: the norm's affine becomes ``gamma / r`` and ``(beta - m) / r``, the
next layer's weight columns are multiplied by ``r`` and its bias gains ``W m``. Every channel of
``x~`` then spans the same ``[-mean(h), mean(h)]``, so one per-tensor scale quantizes each
channel as its own scale would, up to the common step ``mean(h)`` instead of ``h_c``.
(RepQ-ViT targets the mean scale and mean zero point of an asymmetric grid; centring on zero
instead lets symmetric and asymmetric grids alike use the common range.)

Exact where: the centring ``m`` is a shift, and a shift does not survive a nonlinearity or zero
padding (padded zeros would stand for ``-m / r``). It is applied only when the norm feeds the
layer directly, with no zero padding on the way or in the layer (linear layers and unpadded
convolutions, e.g. UNETR's ``norm1 -> qkv``); then the layer needs a bias, which ``prepare`` adds
(zeros) to quantized linear layers without one. Elsewhere only the scale part is applied
(``m = 0``, ``h_c = max|x_c|``), which passes through positively homogeneous activations and zero
padding exactly: Swin's ``norm1 -> pad -> qkv``, nnU-Net's ``InstanceNorm -> LeakyReLU -> conv``.
The scale moves range differences into the next layer's weight columns, which per-output-channel
weight grids do not absorb (the same trade as ``smoothquant`` at ``alpha = 1``).

Applies to: quantized Conv/ConvTranspose/Linear layers fed alone by an affine norm (through at
most one homogeneous activation), each called once. Cost: one trace, one float pass for the
per-channel ranges, one weight rewrite per pair; no run-time cost. No options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmark.quant.algorithms.base import Algorithm, register_algorithm
from benchmark.quant.algorithms.channels import (
    absorb_input_offset,
    affine_norm,
    ensure_bias,
    input_channel_minmax,
    is_layer,
    pair_fits,
    scale_inputs,
    scale_outputs,
    zero_padding,
)
from benchmark.quant.algorithms.graph import Graph, trace
from benchmark.quant.modules import QuantLayer

__all__ = ["Reparameterization", "reparam_pairs"]


def reparam_pairs(graph: Graph) -> list[tuple[nn.Module, nn.Module, bool]]:
    """``(norm, layer, shift allowed)`` for quantized layers an affine norm feeds alone."""
    pairs = []
    for node in graph.nodes:
        layer = node.module
        if not (isinstance(layer, QuantLayer) and is_layer(layer)):
            continue
        feed = graph.feeder(node)
        if feed is None or not affine_norm(feed.producer.module):
            continue
        norm = feed.producer.module
        if not pair_fits(norm, layer, feed.layout):
            continue
        direct = feed.act is None or isinstance(feed.act.module, (nn.Identity, nn.Dropout))
        shift = (
            direct
            and not feed.padded
            and not zero_padding(layer)
            and norm.bias is not None
            and layer.bias is not None
        )
        pairs.append((norm, layer, shift))
    return pairs


def channel_factors(
    lo: torch.Tensor, hi: torch.Tensor, shift: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, r)``: centres (zero without ``shift``) and range ratios to the mean range."""
    if shift:
        centre, half = (lo + hi) / 2, (hi - lo) / 2
    else:
        centre, half = torch.zeros_like(lo), torch.maximum(lo.abs(), hi.abs())
    valid = half > 0
    mean = half[valid].mean() if bool(valid.any()) else torch.ones((), dtype=half.dtype)
    return centre, torch.where(valid, half / mean, 1.0)


@register_algorithm
class Reparameterization(Algorithm):
    """Per-channel post-norm ranges folded into the norm affine and the next layer."""

    name = "reparam"
    needs_data = True

    def prepare(self, qmodel: nn.Module) -> None:
        for module in qmodel.modules():
            if isinstance(module, QuantLayer) and isinstance(module, nn.Linear):
                ensure_bias(module)

    def transform_weights(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        pairs = reparam_pairs(trace(qmodel, batches[0][:1]))
        ranges = input_channel_minmax(qmodel, batches, [layer for _, layer, _ in pairs])
        for (norm, layer, shift), (lo, hi) in zip(pairs, ranges, strict=True):
            centre, ratio = channel_factors(lo, hi, shift)
            if shift:
                with torch.no_grad():
                    norm.bias.sub_(centre.to(norm.bias))
                absorb_input_offset(layer, centre)
            scale_outputs(norm, 1.0 / ratio)
            scale_inputs(layer, ratio)
