"""``equalization``: cross-layer range equalisation (Nagel et al. 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction", ICCV, section 4.1).

For ``y = W2 f(W1 x + b1)`` with ``f`` positively homogeneous (ReLU, LeakyReLU, identity:
``f(s z) = s f(z)`` for ``s > 0``), dividing output channel ``c`` of the first layer by ``s_c``
and multiplying input channel ``c`` of the second by ``s_c`` leaves the function unchanged
(zero padding of the second layer included, since zeros stay zeros). DFQ picks
``s_c = sqrt(r1_c / r2_c)`` from the weight ranges ``r1_c = max|W1[c]|`` and
``r2_c = max|W2[:, c]|``, after which both equal ``sqrt(r1_c r2_c)``: per-tensor weight grids
stop wasting their range on the few channels with large weights. Pairs are found by a forward
trace (:mod:`~benchmark.quant.algorithms.graph`): the second layer must be the only reader of
the activation, the activation the only reader of the first layer's output, and each module
called once; a residual add, concatenation (U-Net skips) or any other reader rules a pair out.

**Through a normalisation** (nnU-Net's ``conv1 -> InstanceNorm -> LeakyReLU -> conv2``):
scaling conv1's output channels is *not* exact. InstanceNorm maps ``s y`` to
``(y - mu) / sqrt(var + eps / s^2)``, which equals its output for ``y`` only when ``eps = 0``,
and it cancels the scale otherwise, so conv1's ranges cannot be traded against conv2's. What
is exact is the part after the statistics: the norm's affine ``gamma_c * n + beta_c``. Dividing
``gamma_c`` and ``beta_c`` by ``s_c`` divides the activation channel by ``s_c`` (through the
homogeneous LeakyReLU), and multiplying conv2's input channel ``c`` by ``s_c`` undoes it. The
first side of such a pair is then not a quantized weight but conv2's quantized input, so the
pair balances conv2's input-channel activation range ``r1_c = max|a_c|`` (measured on the
calibration batches) against its weight range, with the same ``s_c = sqrt(r1_c / r2_c)``.
The same holds for any per-channel affine norm (BatchNorm, GroupNorm, a LayerNorm feeding a
linear layer). Only these two kinds of pair are rewritten; everything else is left alone.

Applies to: ungrouped Conv/ConvTranspose/Linear second layers that are quantized, with an
ungrouped conv/linear or an affine norm before them. Cost: one trace, one float pass over the
calibration batches for the activation ranges (only when a norm pair exists), and one weight
rewrite per pair; no run-time cost. Options: ``through_norms`` (default ``True``): also
rewrite norm -> activation -> layer pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmark.quant.algorithms.base import Algorithm, register_algorithm
from benchmark.quant.algorithms.channels import (
    affine_norm,
    in_axis,
    input_channel_minmax,
    is_layer,
    out_axis,
    pair_fits,
    scale_inputs,
    scale_outputs,
)
from benchmark.quant.algorithms.graph import Graph, trace
from benchmark.quant.modules import QuantLayer

__all__ = ["Equalization", "equalization_pairs", "input_channel_ranges"]

DEFAULTS = {"through_norms": True}


def equalization_pairs(graph: Graph) -> list[tuple[nn.Module, nn.Module]]:
    """``(first, second)`` pairs whose channel rescaling is exact, in execution order."""
    pairs = []
    for node in graph.nodes:
        second = node.module
        if not (isinstance(second, QuantLayer) and is_layer(second)):
            continue
        feed = graph.feeder(node)
        if feed is None:
            continue
        first = feed.producer.module
        if (is_layer(first) or affine_norm(first)) and pair_fits(first, second, feed.layout):
            pairs.append((first, second))
    return pairs


def _amax(weight: torch.Tensor, axis: int) -> torch.Tensor:
    dims = [d for d in range(weight.ndim) if d != axis]
    return weight.detach().abs().amax(dim=dims).to(torch.float64)


def input_channel_ranges(
    qmodel: nn.Module, batches: Sequence[torch.Tensor], layers: Sequence[nn.Module]
) -> list[torch.Tensor]:
    """``max |x_c|`` per input channel of what each layer's input quantizer receives (after any
    online transform, so in the space of the weight columns), float network, over ``batches``."""
    return [torch.maximum(-lo, hi) for lo, hi in input_channel_minmax(qmodel, batches, layers)]


def balance(first_range: torch.Tensor, second_range: torch.Tensor) -> torch.Tensor:
    """``s = sqrt(r1 / r2)`` per channel, 1 where either range is zero."""
    valid = (first_range > 0) & (second_range > 0)
    ratio = torch.where(valid, first_range / second_range.clamp_min(1e-30), 1.0)
    return ratio.sqrt()


@register_algorithm
class Equalization(Algorithm):
    """Cross-layer range equalisation of conv/linear pairs and of norm-affine -> layer pairs."""

    name = "equalization"
    needs_data = True

    def transform_weights(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        options = {**DEFAULTS, **self.options}
        pairs = equalization_pairs(trace(qmodel, batches[0][:1]))
        norm_pairs = [(a, b) for a, b in pairs if not is_layer(a)]
        if not options["through_norms"]:
            norm_pairs = []
        activation = input_channel_ranges(qmodel, batches, [b for _, b in norm_pairs])
        ranges = {id(b): r for (_, b), r in zip(norm_pairs, activation, strict=True)}
        for first, second in pairs:
            if is_layer(first):
                first_range = _amax(first.weight, out_axis(first))
            elif id(second) in ranges:
                first_range = ranges[id(second)]
            else:
                continue
            scale = balance(first_range, _amax(second.weight, in_axis(second)))
            scale_outputs(first, 1.0 / scale)
            scale_inputs(second, scale)
