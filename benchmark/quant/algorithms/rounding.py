"""A layer's own weight grid, learned rounding on it (AdaRound's variables), and baking a
solution into the float weight so that the layer's weight quantizer reproduces it exactly.

**The grid** is the one the layer's :class:`~benchmark.quant.weight_quantizer.WeightQuantizer`
uses (its scale and zero point per group, its bits), so GPTQ, AdaRound and BRECQ change codes,
never scales. A solution is baked as ``weight := (codes - z) * s``, and the quantizer must find
the same codes in that weight again. Two kinds of grid make sure it does:

- a *min-max* grid is recomputed from the weight's range, which stays the same only if each
  scale group's extreme keeps the end of the grid: the element of largest ``|w|`` (symmetric
  grid) keeps its round-to-nearest code ``±q_max``; on an asymmetric grid the group minimum
  keeps ``q_min`` and the maximum ``q_max``. These *pinned* elements (one or two per group) are
  excluded from the optimisation;
- a *searched* grid (``weight_observer: mse``, as ``tuned_rtn`` sets it) would be searched
  again on the rewritten weight and move, so it is *frozen*: the scale and zero point searched
  on the original weight become the quantizer's stored ``scale``/``zero_point`` (the buffers a
  QAT result uses too, saved with the ranges), and no element is pinned. A grid stored already
  (after QAT) is used as it is.

:func:`bake` checks that the quantizer's codes equal the solution.

**Learned rounding** (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
Quantization"): each weight rounds to ``floor(w/s) + h(V)`` with the rectified sigmoid
``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``, ``zeta = 1.1``, ``gamma = -0.1``,
``V`` initialised so that ``h(V)`` is the fractional part of ``w/s`` (the float weight). The
regulariser ``mean(1 - |2 h(V) - 1|^beta)``, with ``beta`` annealed from 20 to 2 after a warm-up,
drives every ``h`` to 0 or 1; the hard rounding is ``V >= 0``. While rounding is learned,
:class:`SoftRounding` stands in for the layer's weight quantizer (:func:`rounding_for`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from benchmark.quant.algorithms.base import keep_float_weight
from benchmark.quant.errors import QuantError
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = [
    "WeightGrid",
    "weight_grid",
    "freeze_grid",
    "bake",
    "SoftRounding",
    "rounding_for",
    "frozen_parameters",
    "fit",
    "FitOptions",
]

ZETA, GAMMA = 1.1, -0.1


@dataclass
class WeightGrid:
    """The integer grid of one weight, every tensor of the weight's shape.

    Attributes:
        scale: the quantizer's scale broadcast to the weight.
        zero_point: its zero point (float).
        qmin: lowest code.
        qmax: highest code.
        pinned: elements whose code is fixed (each group's range ends).
        pinned_codes: their codes.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    pinned: torch.Tensor
    pinned_codes: torch.Tensor

    def round_to_nearest(self, w: torch.Tensor) -> torch.Tensor:
        """Codes of ``w`` on this grid, exactly as the weight quantizer computes them."""
        codes = torch.round(w * torch.reciprocal(self.scale)) + self.zero_point
        return torch.where(self.pinned, self.pinned_codes, codes.clamp(self.qmin, self.qmax))

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.zero_point) * self.scale


def _check_quantizer(layer: nn.Module) -> WeightQuantizer:
    quantizer = layer.weight_quant
    label = quantizer.label or type(layer).__name__
    if type(quantizer) is not WeightQuantizer:
        raise QuantError(
            f"{label}: rounding optimisation needs an integer weight grid (wNaM), not "
            f"{type(quantizer).__name__}; use an integer precision such as w4a8"
        )
    if quantizer.transforms:
        raise QuantError(
            f"{label}: the weight quantizer has transforms, so a solution cannot be baked "
            "into the float weight; compose with methods that rewrite the weight itself"
        )
    return quantizer


def freeze_grid(quantizer: WeightQuantizer, weight: torch.Tensor) -> None:
    """Store the grid ``quantizer`` computes for ``weight`` (its searched scale and zero
    point) as the quantizer's fixed ``scale``/``zero_point``: later rewrites of the weight are
    quantized on this grid instead of a new search."""
    _, scale, zero_point = quantizer.codes(weight)
    quantizer.scale = scale.detach().clone()
    quantizer.zero_point = zero_point.detach().clone()
    quantizer.invalidate()


def weight_grid(layer: nn.Module) -> WeightGrid:
    """The grid of ``layer``'s weight quantizer on its current weight: a min-max grid with
    pinned extremes, a searched one frozen first (module docstring).

    Raises:
        QuantError: not an integer grid, or the quantizer has transforms.
    """
    quantizer = _check_quantizer(layer)
    if quantizer.scale is None and quantizer.observer_kind != "minmax":
        freeze_grid(quantizer, layer.weight)
    w = layer.weight.detach().float()
    codes, scale, zero_point = quantizer.codes(layer.weight)
    if quantizer.scale is None:
        pinned, pinned_codes = _range_ends(quantizer, w, codes, scale)
    else:  # a stored grid: nothing moves it, nothing to pin
        pinned, pinned_codes = torch.zeros_like(w, dtype=torch.bool), codes.clone()
    scale = scale.float().expand_as(w).contiguous()
    zero_point = zero_point.float().expand_as(w).contiguous()
    return WeightGrid(scale, zero_point, quantizer.qmin, quantizer.qmax, pinned, pinned_codes)


def _range_ends(
    quantizer: WeightQuantizer, w: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pinned, pinned_codes)`` of a min-max grid: each scale group's extremes keep the ends
    of the grid, so that the baked weight has the same range."""
    group_dims = tuple(d for d in range(w.ndim) if scale.ndim == w.ndim and scale.shape[d] == 1)
    if scale.ndim != w.ndim:
        group_dims = tuple(range(w.ndim))
    pinned_codes = codes.clone()
    if quantizer.mapping == "symmetric":
        magnitude = w.abs()
        top = magnitude.amax(dim=group_dims, keepdim=True) if group_dims else magnitude
        return (magnitude == top) & (top > 0), pinned_codes
    high = w.amax(dim=group_dims, keepdim=True) if group_dims else w
    low = w.amin(dim=group_dims, keepdim=True) if group_dims else w
    at_high, at_low = (w == high) & (high > 0), (w == low) & (low < 0)
    pinned_codes = torch.where(at_high, float(quantizer.qmax), pinned_codes)
    pinned_codes = torch.where(at_low, float(quantizer.qmin), pinned_codes)
    return at_high | at_low, pinned_codes


def bake(layer: nn.Module, grid: WeightGrid, codes: torch.Tensor) -> None:
    """``weight := (codes - z) * s``; the weight quantizer must then give back ``codes``. The
    FP32 weight stays beside it for :func:`~benchmark.quant.algorithms.base.float_reference`.

    Raises:
        QuantError: the quantizer derives other codes from the baked weight.
    """
    keep_float_weight(layer)
    with torch.no_grad():
        layer.weight.copy_(grid.dequantize(codes).to(layer.weight.dtype))
    layer.weight_quant.invalidate()
    requantized = layer.weight_quant.codes(layer.weight)[0]
    if not torch.equal(requantized, codes.to(requantized.dtype)):
        changed = int((requantized != codes).sum())
        raise QuantError(
            f"{layer.weight_quant.label}: {changed} code(s) change when the baked weight is "
            "quantized again; the grid's range ends were not kept"
        )


class SoftRounding(nn.Module):
    """Stands in for a layer's weight quantizer while its rounding ``V`` is learned.

    Its forward ignores the live weight: it returns the soft (``hard=False``) or hard
    rounding of the float weight it was built from, on the layer's own grid.
    """

    def __init__(self, weight: torch.Tensor, grid: WeightGrid) -> None:
        super().__init__()
        self.grid = grid
        scaled = weight.detach().float() * torch.reciprocal(grid.scale)
        self.register_buffer("floor", torch.floor(scaled))
        rest = (scaled - self.floor).clamp(1e-4, 1 - 1e-4)
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.hard = False

    def h(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def codes(self, hard: bool = True) -> torch.Tensor:
        up = (self.v >= 0).float() if hard else self.h()
        grid = self.grid
        codes = torch.clamp(self.floor + up + grid.zero_point, grid.qmin, grid.qmax)
        return torch.where(grid.pinned, grid.pinned_codes, codes)

    def regulariser(self, beta: float) -> torch.Tensor:
        free = ~self.grid.pinned
        if not bool(free.any()):
            return self.v.sum() * 0
        return (1 - (2 * self.h()[free] - 1).abs().pow(beta)).mean()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.grid.dequantize(self.codes(self.hard)).to(weight.dtype)


@contextlib.contextmanager
def rounding_for(layers: Sequence[nn.Module]) -> Iterator[list[SoftRounding]]:
    """Within the block each layer's weight quantizer is a :class:`SoftRounding`; on exit the
    hard rounding is baked into the weight and the quantizer put back."""
    originals = [(layer.weight_quant, layer.integer_kernels) for layer in layers]
    roundings = [SoftRounding(layer.weight, weight_grid(layer)) for layer in layers]
    try:
        for layer, rounding in zip(layers, roundings, strict=True):
            layer.weight_quant = rounding.to(layer.weight.device)
            layer.integer_kernels = False  # the stand-in has codes only for itself
        yield roundings
    finally:
        for layer, (quantizer, integer) in zip(layers, originals, strict=True):
            layer.weight_quant, layer.integer_kernels = quantizer, integer
    for layer, rounding in zip(layers, roundings, strict=True):
        with torch.no_grad():
            codes = rounding.codes(hard=True)
        bake(layer, rounding.grid, codes)


@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Within the block no parameter of ``module`` requires a gradient."""
    states = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in states:
            p.requires_grad_(False)
        yield
    finally:
        for p, state in states:
            p.requires_grad_(state)


@dataclass(frozen=True)
class FitOptions:
    """Schedule of one rounding optimisation (AdaRound's, also used by BRECQ/QDrop)."""

    iters: int
    lr: float
    reg_weight: float
    warmup: float
    beta_start: float
    beta_end: float


def _beta(step: int, options: FitOptions) -> float | None:
    """Annealed exponent, ``None`` during warm-up (no regulariser yet)."""
    start = int(options.warmup * options.iters)
    if step < start:
        return None
    progress = (step - start) / max(1, options.iters - start)
    return options.beta_end + (options.beta_start - options.beta_end) * (1 - progress)


def fit(
    reconstruction: Callable[[int], torch.Tensor],
    roundings: Sequence[SoftRounding],
    options: FitOptions,
    extra_groups: Sequence[dict] = (),
) -> list[float]:
    """Adam on the rounding variables (and ``extra_groups``, e.g. activation steps) against
    ``reconstruction(step) + reg_weight * regulariser``; returns the reconstruction losses."""
    groups = [{"params": [r.v for r in roundings], "lr": options.lr}, *extra_groups]
    groups = [g for g in groups if g["params"]]
    if not groups:
        return []
    optimiser = torch.optim.Adam(groups)
    losses = []
    for step in range(options.iters):
        loss = reconstruction(step)
        losses.append(float(loss.detach()))
        beta = _beta(step, options)
        if beta is not None and roundings:
            penalty = sum(r.regulariser(beta) for r in roundings) / len(roundings)
            loss = loss + options.reg_weight * penalty
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return losses
