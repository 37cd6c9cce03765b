"""The algorithm interface: methods that act on an already-quantized model (brevitas style).

An algorithm is one class in its own module of this package, registered under its
``QuantSpec.algorithm`` name with :func:`register_algorithm`. :func:`benchmark.quant.calibrate`
runs its three hooks around range calibration, on the same calibration batches:

1. :meth:`Algorithm.transform_weights` before ranges are observed: rewrite float weights or add
   ``WeightQuantizer`` transforms (equalisation, SmoothQuant, rotations, re-parameterisation);
2. :meth:`Algorithm.adjust_ranges` after calibration: change static ranges (bias correction,
   range shrinking);
3. :meth:`Algorithm.optimise` last: optimise rounding or scales with data (GPTQ, AdaRound,
   BRECQ/QDrop, QAT through :func:`benchmark.quant.qat.make_learnable`).

Options come from ``QuantSpec.algorithm_options``. :func:`float_reference` runs the model with
every quantizer bypassed, the reference most data-driven methods fit to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.quant.quantizer import ActivationQuantizer, WeightQuantizer
from benchmark.quant.registry import Registry

__all__ = ["ALGORITHMS", "Algorithm", "register_algorithm", "float_reference"]


class Algorithm:
    """Base class: every hook does nothing (round to nearest with the observed ranges).

    Args:
        **options: the algorithm's options (``QuantSpec.algorithm_options``).
    """

    name: ClassVar[str]
    #: whether the hooks read the batches (then ``calibrate`` keeps them in memory)
    needs_data: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = options

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


@contextlib.contextmanager
def float_reference(qmodel: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``qmodel`` computes its float function (all quantizers bypassed)."""
    quantizers = [
        m for m in qmodel.modules() if isinstance(m, (ActivationQuantizer, WeightQuantizer))
    ]
    states = [q.enabled for q in quantizers]
    try:
        for quantizer in quantizers:
            quantizer.enabled = False
        yield qmodel
    finally:
        for quantizer, state in zip(quantizers, states, strict=True):
            quantizer.enabled = state
