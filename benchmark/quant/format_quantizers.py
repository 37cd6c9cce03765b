"""Quantizers of the non-integer formats: scaled FP8 and the block formats.

- FP8 (``fp8_e4m3``, ``fp8_e5m2``): ``round_to_element(x s^-1) s`` with ``s = amax /
  max_normal`` per scale group of the granularity policy (per tensor, channel, token or
  voxel), static (calibrated ranges, observers as for integers) or dynamic. FP8 grids are
  signed, so ``auto`` and ``symmetric`` mean the same here.
- Block formats (MX, NVFP4, ``wNaM_gK``): scales come from each block at run time (see
  :mod:`benchmark.quant.blocks`), for weights once (cached) and for activations per input.
"""

from __future__ import annotations

import torch

from benchmark.quant.blocks import group_fake_quant, mx_fake_quant, nvfp4_fake_quant
from benchmark.quant.elements import FloatElement, round_to_element
from benchmark.quant.errors import QuantError
from benchmark.quant.formats import OperandFormat
from benchmark.quant.observers import estimate_range
from benchmark.quant.primitives import SCALE_EPS
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = [
    "float_scale",
    "float_fake_quant",
    "float_search",
    "block_fake_quant",
    "FloatActivationQuantizer",
    "FloatWeightQuantizer",
    "BlockActivationQuantizer",
    "BlockWeightQuantizer",
]


def float_scale(lo: torch.Tensor, hi: torch.Tensor, element: FloatElement) -> torch.Tensor:
    """``max(|lo|, |hi|) / max_normal``, floored at float32 eps like the integer scales."""
    amax = torch.maximum(lo.float().abs(), hi.float().abs())
    return torch.clamp(amax / element.max_normal, min=SCALE_EPS)


def float_fake_quant(x: torch.Tensor, scale: torch.Tensor, element: FloatElement) -> torch.Tensor:
    """``round_to_element(x * s^-1) * s`` (the reciprocal convention of the integer grids)."""
    return round_to_element(x.float() * torch.reciprocal(scale), element) * scale


def float_search(element: FloatElement):
    """``fake_quant(x, lo, hi, mapping)`` on the scaled FP8 grid, for range searches."""

    def fq(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, mapping: str) -> torch.Tensor:
        return float_fake_quant(x, float_scale(lo, hi, element), element)

    return fq


def block_fake_quant(
    x: torch.Tensor, fmt: OperandFormat, axis: int, mapping: str, per_sample: bool
):
    """One block format applied to ``x`` with blocks along ``axis``; NVFP4's tensor scale is
    per sample (dims after 0) for activations and over the whole tensor for weights."""
    if fmt.kind == "mx":
        return mx_fake_quant(x, axis, fmt.element, fmt.block)
    if fmt.kind == "nvfp4":
        dims = tuple(range(1, x.ndim)) if per_sample else tuple(range(x.ndim))
        return nvfp4_fake_quant(x, axis, dims, fmt.block)
    return group_fake_quant(x, axis, fmt.block, fmt.bits, mapping)


class FloatActivationQuantizer(ActivationQuantizer):
    """Scaled FP8 activations; ranges are collected and saved like integer ones."""

    def __init__(self, fmt: OperandFormat, granularity, dynamic, observer, options, label=""):
        super().__init__(fmt.bits, granularity, "symmetric", dynamic, observer, options, label)
        self.fmt = fmt

    def search_fake_quant(self):
        return float_search(self.fmt.element)

    @property
    def scheme(self) -> str:
        mode = "dynamic" if self.dynamic else "static"
        return f"{self.granularity.name}/{mode}/{self.fmt.label}"

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor, mapping: str) -> None:
        self.scale = float_scale(lo, hi, self.fmt.element).to(lo.device)
        self.zero_point = torch.zeros_like(self.scale, dtype=torch.int32)
        self.resolved_mapping = "symmetric"
        self.lo, self.hi = lo.detach().clone(), hi.detach().clone()

    def _static(self, x: torch.Tensor) -> torch.Tensor:
        return float_fake_quant(x, self.scale, self.fmt.element)

    def _dynamic(self, x: torch.Tensor) -> torch.Tensor:
        dims = self.granularity.scale_dims(x.ndim, dynamic=True)
        lo, hi = estimate_range(
            x,
            dims,
            self.observer_kind,
            fake_quant=self.search_fake_quant(),
            **self.observer_options,
        )
        return float_fake_quant(x, float_scale(lo, hi, self.fmt.element), self.fmt.element)

    def make_learnable(self):
        raise QuantError(f"{self.label}: learnable scales are implemented for integer grids")

    def codes(self, x):
        raise QuantError(f"{self.label}: {self.fmt.label} has no integer codes")


class FloatWeightQuantizer(WeightQuantizer):
    """Scaled FP8 weights (cached like integer weights)."""

    def __init__(self, fmt: OperandFormat, granularity, observer: str, label: str = "") -> None:
        super().__init__(8, granularity, "symmetric", observer, label)
        self.fmt = fmt

    def _compute(self, w: torch.Tensor) -> tuple:
        element = self.fmt.element
        dims = self.granularity.scale_dims(w.ndim)
        lo, hi = estimate_range(w, dims, self.observer_kind, fake_quant=float_search(element))
        scale = float_scale(lo, hi, element)
        return float_fake_quant(w, scale, element), None, scale, None

    @property
    def scheme(self) -> str:
        return f"{self.granularity.name}/static/{self.fmt.label}"


class BlockActivationQuantizer(ActivationQuantizer):
    """Block-format activations: always dynamic, nothing to calibrate."""

    def __init__(self, fmt: OperandFormat, granularity, mapping: str, label: str = "") -> None:
        super().__init__(fmt.bits, granularity, mapping, True, "minmax", {}, label)
        self.fmt = fmt

    @property
    def scheme(self) -> str:
        mapping = f"/{self.mapping}" if self.fmt.kind == "int_group" else ""
        return f"{self.granularity.name}/dynamic/{self.fmt.label}{mapping}"

    def _dynamic(self, x: torch.Tensor) -> torch.Tensor:
        return block_fake_quant(x, self.fmt, self.granularity.axis, self.mapping, per_sample=True)

    def make_learnable(self):
        raise QuantError(f"{self.label}: block formats have no calibrated scales to learn")

    def codes(self, x):
        raise QuantError(f"{self.label}: block formats have no per-tensor integer codes")


class BlockWeightQuantizer(WeightQuantizer):
    """Block-format weights (cached like integer weights)."""

    def __init__(self, fmt: OperandFormat, granularity, mapping: str, label: str = "") -> None:
        super().__init__(min(fmt.bits, 16), granularity, mapping, "minmax", label)
        self.fmt = fmt

    def _compute(self, w: torch.Tensor) -> tuple:
        fq = block_fake_quant(w, self.fmt, self.granularity.axis, self.mapping, per_sample=False)
        return fq, None, None, None

    @property
    def scheme(self) -> str:
        mapping = f"/{self.mapping}" if self.fmt.kind == "int_group" else ""
        return f"{self.granularity.name}/static/{self.fmt.label}{mapping}"
