"""Which module types are quantized, and by which class (the handler of each type).

A handler is a subclass of a torch/MONAI module class with quantized operands
(:mod:`benchmark.quant.modules`, :mod:`benchmark.quant.attention`); ``quantize`` swaps the
class of every selected module of an exact registered type for its handler. Modules of any
other type whose forward multiplies activations inline get a subclass made for their class
(:mod:`benchmark.quant.functional_attention`), found by tracing an example forward.
"""

from __future__ import annotations

from torch import nn

from benchmark.quant.attention import ATTENTION_CLASSES, QuantAttention
from benchmark.quant.functional_attention import QuantFunctionalAttention
from benchmark.quant.modules import LAYER_CLASSES, QuantLayer

__all__ = ["handlers", "type_names", "QUANTIZED"]

#: the mixins every quantized module has (``isinstance`` with this tuple finds them)
QUANTIZED = (QuantLayer, QuantAttention, QuantFunctionalAttention)


def handlers(quantize_attention: bool = True) -> dict[type[nn.Module], type[nn.Module]]:
    """``{module type: quantized class}``; attention blocks only if ``quantize_attention``."""
    table = dict(LAYER_CLASSES)
    if quantize_attention:
        table.update(ATTENTION_CLASSES)
    return table


def type_names() -> tuple[str, ...]:
    """Class names ``exclude_types`` may name (``Conv3d``, ``SABlock``, ...)."""
    return tuple(t.__name__ for t in handlers(True))
