"""``brecq`` and ``qdrop``: block reconstruction (Li et al. 2021, "BRECQ: Pushing the Limit of
Post-Training Quantization by Block Reconstruction", ICLR; Wei et al. 2022, "QDrop: Randomly
Dropping Quantization for Extremely Low-bit Post-Training Quantization", ICLR).

**What it changes**: per block, the rounding of every quantized conv/linear weight in it
(AdaRound variables on the layer's own grid, baked into the float weight, see
:mod:`benchmark.quant.algorithms.rounding`) and the step sizes of its static activation
quantizers (LSQ-style: the calibrated scale and, on an asymmetric grid, the zero point become
parameters through ``ActivationQuantizer.make_learnable`` and are frozen back into the
``scale``/``zero_point`` buffers and ``lo``/``hi`` ranges afterwards, so ``save_ranges``
stores them). Dynamic activation quantizers keep computing their ranges per input.

**Blocks** (:func:`find_blocks`), found from the module tree alone: walking down from the
model, a child holding quantized layers is one block when it is a quantized layer itself or
holds at most ``max_block_layers`` quantized layers (and is not a ``ModuleList``/``ModuleDict``,
which is never called); otherwise its children are visited. On nnU-Net's U-Net this gives each
encoder and decoder stage (two convolutions), each up-sampling transposed convolution and the
head; on MONAI's UNETR the transformer blocks and each top-level encoder/decoder stage; on
SwinUNETR each Swin transformer block; on MedFormer the attention and feed-forward halves of a
transformer block (11 layers; ``max_block_layers: 11`` keeps them whole). Blocks run in the
order a forward calls them; a block reached by no calibration batch is left as it is.

**How**: for each block, its inputs in the quantized model (earlier blocks already
reconstructed) and its FP32 outputs (FP32 model, FP32 inputs: the earlier blocks' FP32
weights are kept when their rounding is baked, see
:func:`~benchmark.quant.algorithms.base.float_reference`) are collected on the calibration
batches; Adam then minimises a reconstruction loss plus AdaRound's rounding regulariser (see
:mod:`benchmark.quant.algorithms.adaround`). ``loss: block`` is the squared error of the block
output relative to the FP32 output's energy; ``loss: prediction`` is the per-voxel KL
divergence ``KL(p_fp32 || p_q)`` between the class probabilities (softmax over dim 1 of the
model's first output) of the FP32 and the quantized whole model, a segmentation form of BRECQ's
output-aware objective. ``qdrop`` in addition replaces each activation quantizer output of the
block by its float input with probability ``drop_prob`` per element during reconstruction.

**Cost**: per block, one forward per calibration batch up to the block in each model, then
``iters`` forward/backward passes of the block (``block``) or of the whole model
(``prediction``) on one batch; the block's inputs and FP32 outputs for all batches are held in
memory while it is reconstructed.

Options (defaults in :data:`DEFAULTS`; ``conf/algorithm/brecq.yaml``, ``qdrop.yaml``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.quant.algorithms.adaround import fit_options, relative_error
from benchmark.quant.algorithms.base import Algorithm, float_reference, register_algorithm
from benchmark.quant.algorithms.layer_inputs import (
    forward_order,
    model_device,
    module_inputs,
    module_outputs,
    quant_layers,
    run_call,
    with_defaults,
)
from benchmark.quant.algorithms.rounding import fit, frozen_parameters, rounding_for
from benchmark.quant.attention import QuantAttention
from benchmark.quant.errors import QuantError
from benchmark.quant.floatcast import flatten
from benchmark.quant.modules import QuantLayer
from benchmark.quant.primitives import SCALE_EPS
from benchmark.quant.quantizer import ActivationQuantizer

__all__ = ["BRECQ", "QDrop", "DEFAULTS", "find_blocks", "learned_steps"]

DEFAULTS = {
    "loss": "block",
    "iters": 200,
    "lr": 0.05,
    "act_lr": 0.01,
    "learn_steps": True,
    "reg_weight": 0.1,
    "warmup": 0.2,
    "beta_start": 20.0,
    "beta_end": 2.0,
    "max_block_layers": 8,
    "seed": 0,
}
LOSSES = ("block", "prediction")


def find_blocks(
    module: nn.Module, max_layers: int, _seen: set[int] | None = None
) -> list[nn.Module]:
    """The reconstruction blocks under ``module`` by the rule of the module docstring; a module
    reachable twice (nnU-Net's decoder holds the encoder) is visited once."""
    seen = set() if _seen is None else _seen
    blocks: list[nn.Module] = []
    for child in module.children():
        count = len(quant_layers(child))
        if count == 0 or id(child) in seen:
            continue
        seen.add(id(child))
        leaf = isinstance(child, (QuantLayer, QuantAttention))
        callable_unit = not isinstance(child, (nn.ModuleList, nn.ModuleDict))
        if leaf or (callable_unit and count <= max_layers):
            blocks.append(child)
        else:
            blocks.extend(find_blocks(child, max_layers, seen))
    return blocks


def _static(module: nn.Module) -> list[ActivationQuantizer]:
    return [
        q
        for q in module.modules()
        if isinstance(q, ActivationQuantizer) and not q.dynamic and q.scale is not None
    ]


def _all_quantizers(module: nn.Module) -> list[ActivationQuantizer]:
    return [q for q in module.modules() if isinstance(q, ActivationQuantizer)]


@contextlib.contextmanager
def learned_steps(quantizers: Sequence[ActivationQuantizer], lr: float) -> Iterator[list[dict]]:
    """Within the block the quantizers' scales (and asymmetric zero points) are parameters,
    returned as Adam groups with a learning rate of ``lr`` times each initial mean scale; on
    exit they are frozen back into the calibrated buffers and ranges."""
    groups = []
    try:
        for quantizer in quantizers:
            step = float(quantizer.scale.detach().abs().mean())
            scale, offset = quantizer.make_learnable()
            groups.append({"params": [scale], "lr": lr * step})
            if offset.requires_grad:
                groups.append({"params": [offset], "lr": lr})
        yield groups
    finally:
        for quantizer in quantizers:
            if quantizer.learnable:
                with torch.no_grad():
                    quantizer.scale.abs_().clamp_(min=SCALE_EPS)
                    quantizer.offset.clamp_(quantizer.qmin, quantizer.qmax)
                quantizer.freeze_learned()


@contextlib.contextmanager
def dropped_quantization(
    quantizers: Sequence[ActivationQuantizer], probability: float, generator: torch.Generator
) -> Iterator[None]:
    """QDrop: within the block, each output element of ``quantizers`` is its float input with
    probability ``probability`` while gradients are recorded (the reconstruction steps)."""

    def drop(module, args, output):
        if not torch.is_grad_enabled():
            return None
        x = args[0]
        keep_float = torch.rand(x.shape, generator=generator, device=x.device) < probability
        return torch.where(keep_float, x, output)

    handles = [q.register_forward_hook(drop) for q in quantizers] if probability > 0 else []
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _logits(output) -> torch.Tensor:
    return next(t for t in flatten(output) if isinstance(t, torch.Tensor))


def prediction_kl(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean over voxels of ``KL(softmax(reference) || softmax(logits))`` over dim 1."""
    log_p = F.log_softmax(reference, dim=1)
    log_q = F.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


@register_algorithm
class BRECQ(Algorithm):
    """Block-wise reconstruction of weight rounding and activation steps."""

    name = "brecq"
    needs_data = True
    defaults = DEFAULTS

    def optimise(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        options = with_defaults(self.name, self.defaults, self.options)
        if options["loss"] not in LOSSES:
            raise QuantError(
                f"{self.name}: loss={options['loss']!r} is not one of {', '.join(LOSSES)}"
            )
        device = model_device(qmodel)
        generator = torch.Generator().manual_seed(int(options["seed"]))
        drops = torch.Generator(device=device).manual_seed(int(options["seed"]))
        reference = None
        if options["loss"] == "prediction":
            with torch.no_grad(), float_reference(qmodel):
                reference = [_logits(qmodel(b.to(device))) for b in batches]
        blocks = find_blocks(qmodel, int(options["max_block_layers"]))
        with frozen_parameters(qmodel):
            for block in forward_order(qmodel, blocks, batches[0]):
                self._reconstruct(qmodel, block, batches, reference, options, generator, drops)

    def _reconstruct(self, qmodel, block, batches, reference, options, generator, drops) -> None:
        iters = int(options["iters"])
        if reference is None:
            calls = module_inputs(qmodel, block, batches)
            with float_reference(qmodel):
                targets = module_outputs(qmodel, block, batches)
            picks = torch.randint(max(1, len(calls)), (iters,), generator=generator).tolist()

            def reconstruction(step: int) -> torch.Tensor:
                i = picks[step]
                return relative_error(run_call(block, calls[i]), targets[i])

        else:
            calls = []
            module_inputs(qmodel, block, batches[:1], consume=calls.append)
            device = model_device(qmodel)
            picks = torch.randint(len(batches), (iters,), generator=generator).tolist()

            def reconstruction(step: int) -> torch.Tensor:
                i = picks[step]
                return prediction_kl(_logits(qmodel(batches[i].to(device))), reference[i])

        if not calls:
            return
        layers = [m for m in block.modules() if isinstance(m, QuantLayer)]
        steps = _static(block) if options["learn_steps"] else []
        probability = float(options.get("drop_prob", 0.0))
        if not 0.0 <= probability <= 1.0:
            raise QuantError(f"{self.name}: drop_prob={probability} must be in [0, 1]")
        with (
            rounding_for(layers) as roundings,
            learned_steps(steps, float(options["act_lr"])) as groups,
            dropped_quantization(_all_quantizers(block), probability, drops),
        ):
            fit(reconstruction, roundings, fit_options(options), groups)


@register_algorithm
class QDrop(BRECQ):
    """BRECQ with activation quantization dropped at random during reconstruction."""

    name = "qdrop"
    defaults = {**DEFAULTS, "drop_prob": 0.5}
