"""``mixed_precision``: per-layer weight bit widths under a mean-bits budget, from a measured
one-layer-at-a-time sensitivity (in the spirit of HAWQ, Dong et al. 2019, with the Hessian
trace replaced by the measured output error, as in the sensitivity analyses of Wu et al. 2020,
"Integer Quantization for Deep Learning Inference").

**What it changes**: the bit width of the weight quantizer of every quantized conv/linear
layer with an integer grid (activations keep the spec's bits). The choice is stored in a buffer
``weight_bits`` of each layer (so ``save_ranges`` keeps it; ``load_ranges`` re-applies it after
loading) and is what ``quantization_table`` reports as ``w_bits``. Later methods of a
composition (``mixed_precision+gptq``) quantize on the chosen grids.

**Sensitivity**: with every other quantizer bypassed (FP32 model), the weight of one layer is
quantized at each allowed bit width in turn, and the mean squared error of the model output
against FP32 over the first ``batches`` calibration batches is recorded.

**Allocation** (greedy, a relaxation of the multiple-choice knapsack): every layer starts at
the largest allowed width; while the mean weight bits (weighted by each layer's number of
weights) exceed ``budget``, the step down with the smallest error increase per bit saved is
taken; then the upgrades with the largest error decrease per bit that still fit the budget are
taken. ``budget`` defaults to the spec's weight bits (the memory of the uniform model).

**Cost**: ``layers x len(bits) x batches`` forward passes (tiny nnU-Net: 26 x 3 x 4).

Options (defaults in :data:`DEFAULTS`, listed in ``conf/algorithm/mixed_precision.yaml``):
``budget``, ``bits`` (allowed widths: ``"2,4,8"`` or a list), ``batches``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmark.quant.algorithms.base import Algorithm, register_algorithm
from benchmark.quant.algorithms.layer_inputs import model_device, with_defaults
from benchmark.quant.errors import QuantError
from benchmark.quant.floatcast import flatten
from benchmark.quant.modules import QuantLayer
from benchmark.quant.primitives import quant_range
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = ["MixedPrecision", "DEFAULTS", "allocate_bits", "layer_sensitivity", "set_weight_bits"]

DEFAULTS = {"budget": None, "bits": "2,4,8", "batches": 4}


def _layers(qmodel: nn.Module) -> list[nn.Module]:
    """Quantized layers whose weight has an integer grid (bits can change)."""
    return [
        m
        for m in qmodel.modules()
        if isinstance(m, QuantLayer) and type(m.weight_quant) is WeightQuantizer
    ]


def set_weight_bits(layer: nn.Module, bits: int) -> None:
    """Quantize ``layer``'s weight on a ``bits``-bit grid from now on (and record it)."""
    quantizer = layer.weight_quant
    quantizer.bits = int(bits)
    quantizer.qmin, quantizer.qmax = quant_range(int(bits), quantizer.mapping)
    quantizer.invalidate()
    if "weight_bits" in layer._buffers:
        layer.weight_bits.fill_(int(bits))


def _apply_loaded_bits(layer: nn.Module, incompatible_keys) -> None:
    """Post-load hook: the loaded ``weight_bits`` buffer sets the quantizer's grid."""
    if int(layer.weight_bits) != layer.weight_quant.bits:
        set_weight_bits(layer, int(layer.weight_bits))


def _parse_bits(value) -> tuple[int, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    bits = tuple(sorted({int(b) for b in items}))
    if not bits or bits[0] < 2 or bits[-1] > 16:
        raise QuantError(f"mixed_precision: bits={value!r} must be widths in 2..16, e.g. 2,4,8")
    return bits


def _output(qmodel: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return next(t for t in flatten(qmodel(batch)) if isinstance(t, torch.Tensor))


def layer_sensitivity(
    qmodel: nn.Module, layers: Sequence[nn.Module], bits: Sequence[int], batches
) -> list[dict[int, float]]:
    """Per layer, ``{bits: output MSE vs FP32}`` with only that layer's weight quantized."""
    quantizers = [
        m for m in qmodel.modules() if isinstance(m, (ActivationQuantizer, WeightQuantizer))
    ]
    states = [q.enabled for q in quantizers]
    device = model_device(qmodel)
    batches = [b.to(device) for b in batches]
    result = []
    try:
        for quantizer in quantizers:
            quantizer.enabled = False
        with torch.no_grad():
            reference = [_output(qmodel, b) for b in batches]
            for layer in layers:
                original = layer.weight_quant.bits
                layer.weight_quant.enabled = True
                errors = {}
                for width in bits:
                    set_weight_bits(layer, width)
                    errors[width] = sum(
                        float((_output(qmodel, b) - r).square().mean())
                        for b, r in zip(batches, reference, strict=True)
                    ) / len(batches)
                set_weight_bits(layer, original)
                layer.weight_quant.enabled = False
                result.append(errors)
    finally:
        for quantizer, state in zip(quantizers, states, strict=True):
            quantizer.enabled = state
    return result


def allocate_bits(
    sizes: Sequence[int], errors: Sequence[dict[int, float]], bits: Sequence[int], budget: float
) -> list[int]:
    """Greedy widths (see the module docstring) with ``sum(size * bits) <= budget * sum(size)``.

    Raises:
        QuantError: the budget is below the smallest allowed width.
    """
    bits = sorted(bits)
    limit = budget * sum(sizes)
    if bits[0] * sum(sizes) > limit + 1e-9:
        raise QuantError(
            f"mixed_precision: budget={budget} mean weight bits is below the smallest allowed "
            f"width {bits[0]}; raise the budget or allow fewer bits"
        )
    chosen = [bits[-1]] * len(sizes)

    def used() -> float:
        return sum(s * b for s, b in zip(sizes, chosen, strict=True))

    while used() > limit + 1e-9:
        steps = []
        for i, width in enumerate(chosen):
            if width != bits[0]:
                lower = bits[bits.index(width) - 1]
                cost = (errors[i][lower] - errors[i][width]) / (sizes[i] * (width - lower))
                steps.append((cost, i, lower))
        _, i, lower = min(steps)
        chosen[i] = lower
    while True:
        spare = limit - used()
        steps = []
        for i, width in enumerate(chosen):
            if width != bits[-1]:
                higher = bits[bits.index(width) + 1]
                if sizes[i] * (higher - width) <= spare + 1e-9:
                    gain = (errors[i][width] - errors[i][higher]) / (sizes[i] * (higher - width))
                    steps.append((-gain, i, higher))
        if not steps:
            return chosen
        _, i, higher = min(steps)
        chosen[i] = higher


@register_algorithm
class MixedPrecision(Algorithm):
    """Per-layer weight bits under a mean-bits budget, from measured sensitivities."""

    name = "mixed_precision"
    needs_data = True

    def prepare(self, qmodel: nn.Module) -> None:
        for layer in _layers(qmodel):
            if "weight_bits" not in layer._buffers:
                device = layer.weight.device
                bits = torch.tensor(layer.weight_quant.bits, dtype=torch.int64, device=device)
                layer.register_buffer("weight_bits", bits)
                layer.register_load_state_dict_post_hook(_apply_loaded_bits)

    def optimise(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        options = with_defaults(self.name, DEFAULTS, self.options)
        bits = _parse_bits(options["bits"])
        spec_bits = qmodel.quant_spec.w_bits
        budget = float(spec_bits if options["budget"] is None else options["budget"])
        count = int(options["batches"])
        if count < 1:
            raise QuantError(f"mixed_precision: batches={count} must be >= 1")
        layers = _layers(qmodel)
        fixed = [
            m.weight_quant.label
            for m in layers
            if getattr(m.weight_quant, "scale", None) is not None
        ]
        if fixed:
            raise QuantError(
                f"mixed_precision: {fixed[0]} has a learned weight scale for its current bits; "
                "put mixed_precision before the method that learns weight scales"
            )
        if not layers:
            return
        errors = layer_sensitivity(qmodel, layers, bits, list(batches)[:count])
        sizes = [layer.weight.numel() for layer in layers]
        for layer, width in zip(layers, allocate_bits(sizes, errors, bits, budget), strict=True):
            set_weight_bits(layer, width)
