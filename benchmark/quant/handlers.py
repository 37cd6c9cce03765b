"""Which module types are quantized, and by which class (the handler of each type).

A handler is a subclass of a torch/MONAI module class with quantized operands
(:mod:`benchmark.quant.modules`, :mod:`benchmark.quant.attention`); ``quantize`` swaps the
class of every selected module of an exact registered type for its handler.
"""

from __future__ import annotations

from torch import nn

from benchmark.quant.attention import ATTENTION_CLASSES
from benchmark.quant.modules import LAYER_CLASSES

__all__ = ["handlers", "type_names"]


def handlers(quantize_attention: bool = True) -> dict[type[nn.Module], type[nn.Module]]:
    """``{module type: quantized class}``; attention blocks only if ``quantize_attention``."""
    table = dict(LAYER_CLASSES)
    if quantize_attention:
        table.update(ATTENTION_CLASSES)
    return table


def type_names() -> tuple[str, ...]:
    """Class names ``exclude_types`` may name (``Conv3d``, ``SABlock``, ...)."""
    return tuple(t.__name__ for t in handlers(True))
