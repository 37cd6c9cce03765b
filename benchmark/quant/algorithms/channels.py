"""Exact per-channel rewrites of layer and normalisation parameters, shared by the algorithms.

Axis conventions: a layer's output channels are axis 0 of its weight (1 for transposed
convolutions) and its input channels axis 1 (0 for transposed); a normalisation's channels are
the entries of its ``weight``/``bias``. Channel-last modules (``Linear``, ``LayerNorm`` over one
dim) read and write the last axis of their tensors, channel-first ones (convolutions,
Instance/Batch/GroupNorm) axis 1. Every function edits in place without autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmark.quant.algorithms.base import float_reference
from benchmark.quant.algorithms.online import transforms_input

__all__ = [
    "AFFINE_NORMS",
    "is_layer",
    "channel_last",
    "pair_fits",
    "out_axis",
    "in_axis",
    "affine_norm",
    "scale_outputs",
    "scale_inputs",
    "absorb_input_offset",
    "ensure_bias",
    "zero_padding",
]

#: normalisations whose affine is one weight and bias per channel; scaling or shifting their
#: output channels is a rewrite of that affine (their statistics are taken before it)
AFFINE_NORMS = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.batchnorm._BatchNorm,
)


def is_layer(module: nn.Module) -> bool:
    """A linear layer or an ungrouped convolution (plain or transposed)."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1


def _transposed(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvTransposeNd)


def channel_last(module: nn.Module) -> bool:
    """Whether ``module``'s channels are the last axis of its input and output."""
    return isinstance(module, (nn.Linear, nn.LayerNorm))


def affine_norm(module: nn.Module) -> bool:
    """A per-channel affine normalisation (a LayerNorm over a single dim, or a norm on dim 1)."""
    if not isinstance(module, AFFINE_NORMS) or getattr(module, "weight", None) is None:
        return False
    return not isinstance(module, nn.LayerNorm) or len(module.normalized_shape) == 1


def pair_fits(producer: nn.Module, consumer: nn.Module, layout: bool) -> bool:
    """Whether ``producer``'s output channels are ``consumer``'s input channels, one to one
    (not when an online transform of ``consumer``, a rotation, stands between them)."""
    if transforms_input(consumer):
        return False
    if channel_last(producer) != channel_last(consumer) or (layout and not channel_last(consumer)):
        return False
    channels = _out_channels(producer)
    return channels is not None and channels == _in_channels(consumer)


def _out_channels(module: nn.Module) -> int | None:
    if is_layer(module):
        return module.weight.shape[out_axis(module)]
    return module.weight.numel() if affine_norm(module) else None


def _in_channels(module: nn.Module) -> int | None:
    return module.weight.shape[in_axis(module)] if is_layer(module) else None


def out_axis(layer: nn.Module) -> int:
    """Weight axis of the output channels."""
    return 1 if _transposed(layer) else 0


def in_axis(layer: nn.Module) -> int:
    """Weight axis of the input channels."""
    return 0 if _transposed(layer) else 1


def _along(factor: torch.Tensor, weight: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * weight.ndim
    shape[axis] = -1
    return factor.to(weight).reshape(shape)


@torch.no_grad()
def scale_outputs(module: nn.Module, factor: torch.Tensor) -> None:
    """Multiply output channel ``c`` of a layer or affine norm by ``factor[c]``."""
    weight = module.weight
    if is_layer(module):
        weight.mul_(_along(factor, weight, out_axis(module)))
    else:
        weight.mul_(factor.to(weight))
    if module.bias is not None:
        module.bias.mul_(factor.to(module.bias))


@torch.no_grad()
def scale_inputs(layer: nn.Module, factor: torch.Tensor) -> None:
    """Multiply the weights that read input channel ``c`` by ``factor[c]``."""
    layer.weight.mul_(_along(factor, layer.weight, in_axis(layer)))


def zero_padding(layer: nn.Module) -> bool:
    """Whether ``layer`` pads its input with zeros (then only zero-preserving input rewrites,
    scales and rotations, stay exact: a shifted input would be padded with zeros, not shifts)."""
    if isinstance(layer, nn.Linear):
        return False
    padding = layer.padding
    if isinstance(padding, str):
        return padding != "valid"
    return any(p != 0 for p in padding) or _transposed(layer)


@torch.no_grad()
def absorb_input_offset(layer: nn.Module, offset: torch.Tensor) -> None:
    """Rewrite the bias so that ``layer(x - offset) == old layer(x)`` (per input channel
    ``offset``); only for layers without zero padding, whose bias must exist."""
    weight = layer.weight.to(torch.float64)
    if not isinstance(layer, nn.Linear):
        weight = weight.sum(dim=tuple(range(2, weight.ndim)))
    layer.bias.add_((weight @ offset.to(weight)).to(layer.bias))


def ensure_bias(layer: nn.Module) -> None:
    """Give a bias-free layer a zero bias (a structural change: call it from ``prepare``)."""
    if layer.bias is None:
        channels = layer.weight.shape[out_axis(layer)]
        weight = layer.weight
        layer.bias = nn.Parameter(torch.zeros(channels, dtype=weight.dtype, device=weight.device))


def input_channel_minmax(
    qmodel: nn.Module, batches: Sequence[torch.Tensor], layers: Sequence[nn.Module]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-input-channel ``(min, max)`` of what each layer's input quantizer receives, float
    network, over ``batches``."""
    found: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(layers)

    def hook(index):
        def record(module, args):
            x = args[0].detach()
            axis = -1 if isinstance(layers[index], nn.Linear) else 1
            dims = [d for d in range(x.ndim) if d != axis % x.ndim]
            lo, hi = x.amin(dim=dims).double(), x.amax(dim=dims).double()
            if found[index] is not None:
                lo, hi = torch.minimum(lo, found[index][0]), torch.maximum(hi, found[index][1])
            found[index] = (lo, hi)

        return record

    handles = [
        getattr(layer, "input_quant", layer).register_forward_pre_hook(hook(i), prepend=True)
        for i, layer in enumerate(layers)
    ]
    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad(), float_reference(qmodel):
            for batch in batches:
                qmodel(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return found
