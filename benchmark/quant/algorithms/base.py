"""The algorithm interface: methods that act on an already-quantized model (brevitas style).

An algorithm is one class in its own module of this package, registered under its
``QuantSpec.algorithm`` name with :func:`register_algorithm`. :func:`benchmark.quant.calibrate`
runs its hooks around range calibration, on the same calibration batches:

0. :meth:`Algorithm.prepare` first, without data: structural changes (an inserted rotation or
   scale module with identity buffers). :func:`benchmark.quant.load_ranges` calls it too, before
   it restores a cached result, so the cached state fits the module tree;
1. :meth:`Algorithm.transform_weights` before ranges are observed: rewrite float weights or add
   ``WeightQuantizer`` transforms (equalisation, SmoothQuant, rotations, re-parameterisation);
2. :meth:`Algorithm.adjust_ranges` after calibration: change static ranges (range shrinking);
3. :meth:`Algorithm.optimise` last, in the order of the composition: optimise rounding or
   scales with data (GPTQ, AdaRound, BRECQ/QDrop, QAT through
   :func:`benchmark.quant.qat.make_learnable`), and measure what the final weights do (bias
   correction, listed after the method whose weights it corrects).

Whatever an algorithm learns (rewritten weights, learned rounding baked into the weights, scales,
smoothing factors) must live in the quantized model's parameters and buffers: for a spec with an
algorithm, :func:`benchmark.quant.save_ranges` stores the whole ``state_dict``, so a sweep runs
each algorithm once per model x spec x calibration set. Python callables added as
``WeightQuantizer.transforms`` are not stored; use them only for what ``prepare`` re-creates.

Options come from ``QuantSpec.algorithm_options``. :func:`float_reference` runs the model with
every quantizer bypassed, the reference most data-driven methods fit to. A method that bakes
quantized values into a float weight (GPTQ, AdaRound, BRECQ/QDrop) first keeps the FP32 weight
beside it (:func:`keep_float_weight`), so the reference stays the FP32 network for the methods
after it: BRECQ's later blocks and a bias correction listed after a rounding method.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.registry import Registry
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "register_algorithm",
    "float_reference",
    "keep_float_weight",
    "FLOAT_WEIGHT",
]

#: The attribute under which a layer keeps its FP32 weight once quantized values are baked into
#: ``weight``: a plain attribute, not a buffer, so it is not saved with the ranges (only the
#: methods of the same calibration need it).
FLOAT_WEIGHT = "float_weight"


class Algorithm:
    """Base class: every hook does nothing (round to nearest with the observed ranges).

    Args:
        **options: the algorithm's options (``QuantSpec.algorithm_options``).
    """

    name: ClassVar[str]
    #: whether the hooks read the batches (then ``calibrate`` keeps them in memory)
    needs_data: ClassVar[bool] = False
    #: whether the hooks train on labels: given ``(image, label)`` pairs, ``calibrate`` hands
    #: such an algorithm the pairs and everything else (observers, other methods) the images
    uses_labels: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = options

    def prepare(self, qmodel: nn.Module) -> None:
        """First, without data: structural changes that a cached state is loaded into."""

    def transform_weights(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        """Before range calibration."""

    def adjust_ranges(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        """After range calibration."""

    def optimise(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        """Last: rounding and scales with data."""


ALGORITHMS: Registry[type[Algorithm]] = Registry("QuantSpec.algorithm")


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make ``cls`` available as ``QuantSpec(algorithm=cls.name)``."""
    return ALGORITHMS.register(cls.name, cls)


def keep_float_weight(layer: nn.Module) -> None:
    """Keep ``layer``'s current weight as its FP32 weight before quantized values are baked
    into it; the first call wins (a weight baked twice keeps the original)."""
    if getattr(layer, FLOAT_WEIGHT, None) is None:
        setattr(layer, FLOAT_WEIGHT, layer.weight.detach().clone())


@contextlib.contextmanager
def float_reference(qmodel: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``qmodel`` computes its float function: all quantizers bypassed and
    every baked weight replaced by the FP32 weight kept beside it."""
    quantizers = [
        m for m in qmodel.modules() if isinstance(m, (ActivationQuantizer, WeightQuantizer))
    ]
    states = [q.enabled for q in quantizers]
    baked = [m for m in qmodel.modules() if getattr(m, FLOAT_WEIGHT, None) is not None]
    weights = [m.weight.data for m in baked]
    try:
        for quantizer in quantizers:
            quantizer.enabled = False
        for module in baked:
            module.weight.data = getattr(module, FLOAT_WEIGHT)
        yield qmodel
    finally:
        for quantizer, state in zip(quantizers, states, strict=True):
            quantizer.enabled = state
        for module, weight in zip(baked, weights, strict=True):
            module.weight.data = weight
