"""Learnable scales and offsets, so quantization-aware training runs through the same modules.

:func:`make_learnable` turns the scale and zero point of every calibrated static activation
quantizer and of every integer weight quantizer into ``nn.Parameter`` objects; forwards then
use straight-through rounding (:func:`benchmark.quant.primitives.fake_quantize_ste`), so the
loss reaches the inputs, the weights and the quantization parameters (LSQ-style). Dynamic
quantizers keep computing their ranges from each input.
"""

from __future__ import annotations

from torch import nn

from benchmark.quant.quantizer import ActivationQuantizer, WeightQuantizer

__all__ = ["make_learnable"]


def make_learnable(qmodel: nn.Module) -> list[nn.Parameter]:
    """Make the calibrated quantization parameters of ``qmodel`` trainable; returns them.

    Raises:
        QuantError: a quantizer has nothing to learn (uncalibrated, or a non-integer format).
    """
    params: list[nn.Parameter] = []
    for module in list(qmodel.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ActivationQuantizer) and not child.dynamic:
                params += child.make_learnable()
            elif isinstance(child, WeightQuantizer) and name.endswith("weight_quant"):
                params += child.make_learnable(_weight_of(module, name))
    return params


def _weight_of(module: nn.Module, quantizer_name: str):
    """The parameter a weight quantizer quantizes (``weight_quant`` -> ``weight``)."""
    part = quantizer_name[: -len("weight_quant")].rstrip("_")
    if not part:
        return module.weight
    if part == "out_proj":
        return module.out_proj.weight
    return getattr(module, f"{part}_weight")
