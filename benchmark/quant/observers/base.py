"""The observer interface and its registry: how calibration batches become ``(lo, hi)`` ranges.

An observer is one class in its own module of this package, registered under its
``QuantSpec.observer`` name with :func:`register_observer`. It estimates the range of one batch
per scale group (:meth:`Observer.estimate`, also used per input by dynamic quantizers) and
folds batches together (:meth:`Observer.combine`); an observer that needs the whole
calibration set at once (``histogram``) overrides :meth:`Observer.update` and
:meth:`Observer.result` instead. ``options`` names the ``QuantSpec`` fields it reads.

A scale group is one index of the granularity's ``scale_dims`` (a channel, a voxel, a token, or
the whole tensor); the range is taken over all other dimensions of the batch. The ``mse`` search
quantizes with the operand's own grid: an integer grid of ``bits`` and ``mapping`` unless a
``fake_quant(x, lo, hi, mapping)`` of another number format is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch

from benchmark.quant.granularity import Granularity
from benchmark.quant.primitives import choose_qparams, fake_quantize
from benchmark.quant.registry import Registry

__all__ = [
    "OBSERVERS",
    "Observer",
    "register_observer",
    "resolve_mapping",
    "integer_fake_quant",
    "grouped",
    "scale_shape",
    "minmax",
]

FakeQuant = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str], torch.Tensor]


def resolve_mapping(mapping: str, observed_min: float) -> str:
    """Turn ``auto`` into ``unsigned`` (min >= 0) or ``symmetric``; other mappings pass through."""
    if mapping != "auto":
        return mapping
    return "unsigned" if observed_min >= 0 else "symmetric"


def integer_fake_quant(bits: int) -> FakeQuant:
    """``fake_quant(x, lo, hi, mapping)`` on the integer grid of ``bits``."""

    def fq(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, mapping: str) -> torch.Tensor:
        return fake_quantize(x, *choose_qparams(lo, hi, bits, mapping))

    return fq


def grouped(x: torch.Tensor, scale_dims: tuple[int, ...]) -> torch.Tensor:
    """View ``x`` as ``[groups, elements]`` with the scale dims first."""
    reduce = [d for d in range(x.ndim) if d not in scale_dims]
    groups = math.prod(x.shape[d] for d in scale_dims)
    return x.permute(*scale_dims, *reduce).reshape(groups, -1)


def scale_shape(x: torch.Tensor, scale_dims: tuple[int, ...]) -> list[int]:
    """Shape of a per-group range: ``x.shape`` with the reduced dims set to 1."""
    return [x.shape[d] if d in scale_dims else 1 for d in range(x.ndim)]


def minmax(x: torch.Tensor, reduce: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group minimum and maximum over ``reduce``."""
    if not reduce:
        return x.clone(), x.clone()
    # separate amin/amax: torch.aminmax over a non-innermost dim (the channels of a per-voxel
    # range) is several times slower than the two reductions on CPU (torch 2.13)
    return torch.amin(x, dim=reduce, keepdim=True), torch.amax(x, dim=reduce, keepdim=True)


class Observer:
    """Accumulates ranges over calibration batches for one quantized operand (static ranges,
    so the batch dimension is reduced).

    Args:
        granularity: the operand's granularity.
        bits: grid bits (for searches over the grid).
        mapping: ``auto``, ``symmetric``, ``unsigned`` or ``asymmetric``; ``auto`` is resolved per
            batch for a search and per operand (global min) at the end.
        fake_quant: the operand's quantizer for searches; the integer grid by default.
        **options: the observer's own options (its ``options`` class attribute).
    """

    name: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()
    #: the per-batch ``lo`` holds every group's minimum (a min-max estimate)
    lo_is_group_min: ClassVar[bool] = False
    #: the per-batch search depends on the grid mapping
    uses_mapping: ClassVar[bool] = False

    def __init__(
        self,
        granularity: Granularity,
        *,
        bits: int,
        mapping: str,
        fake_quant: FakeQuant | None = None,
        **options,
    ) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(f"observer {self.name!r} has no option(s) {unknown}")
        self.granularity = granularity
        self.bits = bits
        self.mapping = mapping
        self.fake_quant = fake_quant or integer_fake_quant(bits)
        self.settings = options
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self.observed_min = math.inf
        self.num_batches = 0

    @classmethod
    def estimate(
        cls, x: torch.Tensor, scale_dims: tuple[int, ...], *, mapping: str, fake_quant, **options
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch's range per scale group, each of shape ``x.shape`` with reduced dims 1."""
        raise NotImplementedError(f"{cls.__name__} must define estimate")

    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Fold one batch's range into ``self.lo``/``self.hi`` (the mean of batches here)."""
        n = self.num_batches
        self.lo = self.lo + (lo - self.lo) / n
        self.hi = self.hi + (hi - self.hi) / n

    def update(self, x: torch.Tensor) -> None:
        """Fold one batch into the running range."""
        x = x.detach().float()
        batch_min = float(x.min())
        scale_dims = self.granularity.scale_dims(x.ndim, dynamic=False)
        lo, hi = self.estimate(
            x,
            scale_dims,
            mapping=resolve_mapping(self.mapping, batch_min),
            fake_quant=self.fake_quant,
            **self.settings,
        )
        self.observed_min = min(self.observed_min, batch_min)
        self.num_batches += 1
        if self.lo is None:
            self.lo, self.hi = lo, hi
        elif lo.shape != self.lo.shape:
            raise ValueError(
                f"range shape {tuple(lo.shape)} differs from earlier batches {tuple(self.lo.shape)}; "
                "static per-position ranges need calibration batches of one ROI size"
            )
        else:
            self.combine(lo, hi)

    def result(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        """``(lo, hi, resolved_mapping)`` after at least one batch."""
        if self.lo is None or self.hi is None:
            raise RuntimeError("observer saw no batch")
        return self.lo, self.hi, resolve_mapping(self.mapping, self.observed_min)


OBSERVERS: Registry[type[Observer]] = Registry("QuantSpec.observer")


def register_observer(cls: type[Observer]) -> type[Observer]:
    """Class decorator: make ``cls`` available as ``QuantSpec(observer=cls.name)``."""
    return OBSERVERS.register(cls.name, cls)
