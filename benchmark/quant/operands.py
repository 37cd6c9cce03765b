"""Quantizers of one operator's operands, built from a ``QuantSpec`` and an operator kind.

The one place where a spec's precision (number format), granularity policy and observer meet:
the policy gives the operator kind's (weight, activation) granularity,
:func:`~benchmark.quant.granularity.bind` fixes its axes from the operand's layout, and the
precision's format picks the quantizer class. Positional granularities (per voxel, per token)
are dynamic unless ``position_scales="static"``; block formats are always dynamic.
"""

from __future__ import annotations

from benchmark.quant.format_quantizers import (
    BlockActivationQuantizer,
    BlockWeightQuantizer,
    FloatActivationQuantizer,
    FloatWeightQuantizer,
)
from benchmark.quant.granularity import Granularity, Layout, bind
from benchmark.quant.observers import OBSERVERS
from benchmark.quant.policies import POLICIES
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = ["granularities", "activation_quantizer", "weight_quantizer", "observer_options_of"]

BLOCK_KINDS = ("mx", "nvfp4", "int_group")


def observer_options_of(spec) -> dict:
    """The spec fields the spec's observer reads (its ``options``)."""
    return {name: getattr(spec, name) for name in OBSERVERS.get(spec.observer).options}


def granularities(spec, kind: str) -> tuple[Granularity | None, Granularity]:
    """Unbound ``(weight, activation)`` granularity of an operator kind under ``spec``."""
    return POLICIES.get(spec.granularity).lookup(kind, spec.large_kernel_per_voxel)


def _dynamic(spec, granularity: Granularity) -> bool:
    positional = granularity.positional and spec.position_scales == "dynamic"
    return bool(spec.dynamic or granularity.runtime_only or positional)


def activation_quantizer(spec, kind: str, layout: Layout, label: str) -> ActivationQuantizer:
    """The quantizer of one activation operand of an operator of ``kind``."""
    fmt = spec.format.activation
    granularity = bind(granularities(spec, kind)[1], layout, fmt.block)
    if fmt.kind in BLOCK_KINDS:
        return BlockActivationQuantizer(fmt, granularity, spec.act_mapping, label=label)
    options = observer_options_of(spec)
    dynamic = _dynamic(spec, granularity)
    if fmt.kind == "float":
        return FloatActivationQuantizer(fmt, granularity, dynamic, spec.observer, options, label)
    return ActivationQuantizer(
        fmt.bits, granularity, spec.act_mapping, dynamic, spec.observer, options, label=label
    )


def weight_quantizer(spec, kind: str, layout: Layout, label: str) -> WeightQuantizer:
    """The (cached) quantizer of one weight of an operator of ``kind``."""
    fmt = spec.format.weight
    granularity = bind(granularities(spec, kind)[0], layout, fmt.block)
    if fmt.kind in BLOCK_KINDS:
        return BlockWeightQuantizer(fmt, granularity, spec.weight_mapping, label=label)
    if fmt.kind == "float":
        return FloatWeightQuantizer(fmt, granularity, spec.weight_observer, label=label)
    return WeightQuantizer(
        fmt.bits, granularity, spec.weight_mapping, spec.weight_observer, label=label
    )
