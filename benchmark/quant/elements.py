"""Element grids of the low-precision formats: minifloats ``ExMy`` and MX's scaled INT8.

A minifloat with ``E`` exponent bits, ``M`` mantissa bits and bias ``b`` holds ``0``, the
subnormals ``k 2^(1 - b - M)`` (``k < 2^M``) and the normals ``(1 + k 2^-M) 2^e`` for
``1 - b <= e``, up to ``max_normal`` (OCP OFP8 and OCP MX v1.0 definitions):

=========  ====  ===========  ==========  ================================
element    bias  max normal   emax        use
=========  ====  ===========  ==========  ================================
``e4m3``   7     448          8           FP8 (``torch.float8_e4m3fn``), MXFP8, NVFP4 scales
``e5m2``   15    57344        15          FP8 (``torch.float8_e5m2``), MXFP8
``e3m2``   3     28           4           MXFP6
``e2m3``   1     7.5          2           MXFP6
``e2m1``   1     6            2           MXFP4, NVFP4
=========  ====  ===========  ==========  ================================

Rounding is to the nearest grid value, ties to the even mantissa (IEEE's default), and values
beyond ``max_normal`` saturate to it (the OCP MX conversion; ``float8_e4m3fn`` has no infinity).
MXINT8's element is a signed 8-bit integer with an implied scale ``2^-6``: ``k / 64`` with
``|k| <= 127`` (symmetric, as in OCP's reference library), emax 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "FloatElement",
    "IntElement",
    "E4M3",
    "E5M2",
    "E3M2",
    "E2M3",
    "E2M1",
    "INT8",
    "round_to_element",
]


@dataclass(frozen=True)
class FloatElement:
    """A minifloat grid (see the module docstring)."""

    name: str
    ebits: int
    mbits: int
    bias: int
    max_normal: float

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal (subnormals share it)."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest normal (OCP MX's ``emax_elem``)."""
        return math.floor(math.log2(self.max_normal))

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits


@dataclass(frozen=True)
class IntElement:
    """A signed integer element with implied scale ``2^-(bits - 2)`` (MXINT8)."""

    name: str
    bits: int

    @property
    def max_normal(self) -> float:
        return (2 ** (self.bits - 1) - 1) / 2 ** (self.bits - 2)

    @property
    def emax(self) -> int:
        return 0


E4M3 = FloatElement("e4m3", 4, 3, 7, 448.0)
E5M2 = FloatElement("e5m2", 5, 2, 15, 57344.0)
E3M2 = FloatElement("e3m2", 3, 2, 3, 28.0)
E2M3 = FloatElement("e2m3", 2, 3, 1, 7.5)
E2M1 = FloatElement("e2m1", 2, 1, 1, 6.0)
INT8 = IntElement("int8", 8)


def round_to_element(x: torch.Tensor, element: FloatElement | IntElement) -> torch.Tensor:
    """``x`` (float32) rounded onto the element grid, ties to even, saturating."""
    if isinstance(element, IntElement):
        unit = 2.0 ** (element.bits - 2)
        limit = 2 ** (element.bits - 1) - 1
        return torch.clamp(torch.round(x * unit), -limit, limit) / unit
    magnitude = x.abs()
    _, exponent = torch.frexp(magnitude)  # magnitude = m 2^exponent, m in [0.5, 1)
    binade = torch.clamp(exponent - 1, min=element.emin)
    step = torch.ldexp(torch.ones_like(magnitude), binade - element.mbits)
    # division by a power of two is exact, so only the round itself rounds
    rounded = torch.clamp(torch.round(magnitude / step) * step, max=element.max_normal)
    return torch.copysign(rounded, x)
