"""``bias_correction``: empirical per-channel bias correction.

Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction"
(ICCV; the empirical variant of its section 4.2) and Banner et al. 2019, "Post training 4-bit
quantization of convolutional networks for rapid-deployment" (NeurIPS): quantization errors
do not average out, a quantized layer's output is shifted per output channel by
``E[W~ x~] - E[W x]``. After range calibration, for each quantized conv/linear layer in
execution order, the mean over the calibration batches (and every voxel or token) of quantized
minus float output is subtracted from the layer's bias, per output channel. Layer by layer, so
each shift is measured with the layers before it already corrected; the float outputs are the
float network's (every quantizer bypassed, weights a rounding method baked replaced by the FP32
weights kept beside them), taken in one pass before any bias changes. It is an ``optimise``
hook, so it runs in the composition's order: listed after GPTQ, AdaRound or BRECQ
(``[tuned_rtn, gptq, bias_correction]``) it corrects the weights they chose. After
its correction a layer's mean output error on the calibration set is zero up to float32
rounding, the last layer's included: the logits' mean error per class vanishes.

Applies to: every quantized Conv/ConvTranspose/Linear called once per forward. Layers without
a bias get a zero bias in ``prepare`` (where the correction lives); the correction applied is
also kept in a ``bias_correction`` buffer, so calibrating the model again first takes it back
out (``prepare``) and starts from the float biases. Until then the corrected biases are part of
the model, :func:`~benchmark.quant.algorithms.base.float_reference` included. Skipped: layers whose only
reader is an InstanceNorm without running statistics (nnU-Net's conv -> norm, MONAI's
UnetResBlock), which subtracts each channel's mean per sample and so removes any bias shift by
itself; layers called more than once per forward (one bias, several inputs); attention matmuls
(no bias). On nnU-Net this leaves the transposed convolutions and the segmentation head.

Cost: one float pass over the calibration batches, then per corrected layer one quantized pass
that stops at that layer (about L/2 forwards of the batches for L corrected layers); memory one
per-channel sum per layer. No options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmark.quant.algorithms.base import Algorithm, float_reference, register_algorithm
from benchmark.quant.algorithms.channels import ensure_bias
from benchmark.quant.algorithms.graph import Graph, trace
from benchmark.quant.modules import QuantLayer

__all__ = ["BiasCorrection", "correctable_layers", "output_means"]

BUFFER = "bias_correction"


class _Stop(Exception):
    """Raised by a hook to end a forward once the layer of interest has run."""


def _removes_channel_means(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.instancenorm._InstanceNorm) and not (
        module.track_running_stats
    )


def correctable_layers(graph: Graph) -> list[nn.Module]:
    """Quantized layers called once whose bias is not cancelled by an InstanceNorm, in order."""
    layers = []
    for node in graph.nodes:
        if not isinstance(node.module, QuantLayer) or graph.once(node.module) is not node:
            continue
        reader = graph.only_reader(node)
        if reader is not None and _removes_channel_means(reader[0].module):
            continue
        layers.append(node.module)
    return layers


def output_means(
    qmodel: nn.Module, batches: Sequence[torch.Tensor], layers: Sequence[nn.Module], stop=False
) -> list[torch.Tensor]:
    """Mean output of each layer per output channel over ``batches`` (float64); with ``stop``
    each forward ends after the last of ``layers`` has run."""
    sums: list[torch.Tensor | None] = [None] * len(layers)
    counts = [0] * len(layers)

    def hook(index):
        def record(module, args, output):
            axis = -1 if isinstance(module, nn.Linear) else 1
            dims = [d for d in range(output.ndim) if d != axis % output.ndim]
            total = output.detach().to(torch.float64).sum(dim=dims)
            sums[index] = total if sums[index] is None else sums[index] + total
            counts[index] += output.numel() // output.shape[axis]
            if stop and index == len(layers) - 1:
                raise _Stop

        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            for batch in batches:
                try:
                    qmodel(batch.to(device))
                except _Stop:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    return [s / c for s, c in zip(sums, counts, strict=True)]


@register_algorithm
class BiasCorrection(Algorithm):
    """Subtract each layer's mean quantized-minus-float output from its bias, layer by layer."""

    name = "bias_correction"
    needs_data = True

    def prepare(self, qmodel: nn.Module) -> None:
        for module in qmodel.modules():
            if not isinstance(module, QuantLayer):
                continue
            ensure_bias(module)
            applied = getattr(module, BUFFER, None)
            if applied is None:
                module.register_buffer(BUFFER, torch.zeros_like(module.bias.detach()))
            else:  # calibrating again: back to the float bias
                with torch.no_grad():
                    module.bias.add_(applied)
                    applied.zero_()

    def optimise(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        """An ``optimise`` hook, so it runs in the composition's order: after a rounding
        method listed before it (``[tuned_rtn, gptq, bias_correction]``), it corrects the mean
        error of the weights that method chose."""
        layers = correctable_layers(trace(qmodel, batches[0][:1]))
        if not layers:
            return
        with float_reference(qmodel):
            reference = output_means(qmodel, batches, layers)
        for layer, target in zip(layers, reference, strict=True):
            (quantized,) = output_means(qmodel, batches, [layer], stop=True)
            shift = (quantized - target).to(layer.bias)
            with torch.no_grad():
                layer.bias.sub_(shift)
                getattr(layer, BUFFER).add_(shift)
