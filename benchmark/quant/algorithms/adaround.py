"""``adaround``: adaptive rounding (Nagel, Amjad, van Baalen, Louizos, Blankevoort 2020, "Up or
Down? Adaptive Rounding for Post-Training Quantization", ICML).

**What it changes**: whether each weight of every quantized Linear, Conv2d/3d and
ConvTranspose2d/3d rounds up or down on the layer's own grid (scales unchanged; attention
matmuls have no weight). The hard rounding is baked into the float weight, so the layer's
weight quantizer reproduces it (:mod:`benchmark.quant.algorithms.rounding`).

**How**: layer by layer in the order a forward calls them, on the inputs the layer receives
in the quantized model (earlier layers already rounded), Adam minimises
``|| W x_q - W~ x_q ||^2 / || W x_q ||^2 + reg_weight * mean(1 - |2 h(V) - 1|^beta)``, with
``x_q`` the layer's quantized input, ``W`` the float weight and ``W~`` the soft-rounded one;
``beta`` is annealed from ``beta_start`` to ``beta_end`` after the first ``warmup`` fraction
of the iterations, without regulariser. Each iteration uses one calibration batch, drawn with
a seeded generator (deterministic on CPU).

**Cost**: per layer, one forward per calibration batch up to the layer, then ``iters``
forward/backward passes of the layer alone on one batch; the layer's inputs and float outputs
for all batches are held in memory while it is optimised.

Options (defaults in :data:`DEFAULTS`, listed in ``conf/algorithm/adaround.yaml``): ``iters``,
``lr``, ``reg_weight``, ``warmup``, ``beta_start``, ``beta_end``, ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmark.quant.algorithms.base import Algorithm, register_algorithm
from benchmark.quant.algorithms.layer_inputs import (
    forward_order,
    module_inputs,
    run_call,
    with_defaults,
)
from benchmark.quant.algorithms.rounding import FitOptions, fit, frozen_parameters, rounding_for
from benchmark.quant.floatcast import flatten
from benchmark.quant.modules import QuantLayer

__all__ = ["AdaRound", "DEFAULTS", "fit_options", "relative_error"]

DEFAULTS = {
    "iters": 300,
    "lr": 0.05,
    "reg_weight": 0.1,
    "warmup": 0.2,
    "beta_start": 20.0,
    "beta_end": 2.0,
    "seed": 0,
}


def fit_options(options: dict) -> FitOptions:
    """The rounding schedule from an algorithm's resolved options."""
    return FitOptions(
        iters=int(options["iters"]),
        lr=float(options["lr"]),
        reg_weight=float(options["reg_weight"]),
        warmup=float(options["warmup"]),
        beta_start=float(options["beta_start"]),
        beta_end=float(options["beta_end"]),
    )


def relative_error(output, target) -> torch.Tensor:
    """Squared error of ``output`` relative to the energy of ``target`` (a tensor or nested
    tuples/lists/dicts of them)."""
    outputs = [t for t in flatten(output) if isinstance(t, torch.Tensor)]
    targets = [t for t in flatten(target) if isinstance(t, torch.Tensor)]
    error = sum((o - t).square().sum() for o, t in zip(outputs, targets, strict=True))
    energy = sum(t.square().sum() for t in targets)
    return error / energy.clamp_min(1e-12)


@register_algorithm
class AdaRound(Algorithm):
    """Learned up/down rounding of each weight, layer by layer."""

    name = "adaround"
    needs_data = True

    def optimise(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        options = with_defaults(self.name, DEFAULTS, self.options)
        schedule = fit_options(options)
        generator = torch.Generator().manual_seed(int(options["seed"]))
        layers = [m for m in qmodel.modules() if isinstance(m, QuantLayer)]
        with frozen_parameters(qmodel):
            for layer in forward_order(qmodel, layers, batches[0]):
                calls = module_inputs(qmodel, layer, batches)
                if calls:
                    self._round_layer(layer, calls, schedule, generator)

    @staticmethod
    def _round_layer(layer, calls, schedule: FitOptions, generator) -> None:
        layer.weight_quant.enabled = False
        try:
            with torch.no_grad():
                targets = [run_call(layer, call) for call in calls]
        finally:
            layer.weight_quant.enabled = True
        picks = torch.randint(len(calls), (schedule.iters,), generator=generator).tolist()

        def reconstruction(step: int) -> torch.Tensor:
            return relative_error(run_call(layer, calls[picks[step]]), targets[picks[step]])

        with rounding_for([layer]) as roundings:
            fit(reconstruction, roundings, schedule)
