"""Precision strings: what number format each operand (weights, activations) is stored in.

=====================  ======  ===============================================================
precision              family  weights and activations
=====================  ======  ===============================================================
``fp32 fp16 bf16``     cast    the whole model cast (no scales)
``wNaM``               scaled  N-bit / M-bit integer grids, scales from the granularity policy
``fp8_e4m3 fp8_e5m2``  scaled  FP8 elements, FP32 scales from the policy (per tensor/channel)
``mxfp8_e4m3``,        block   OCP MX: 32-element blocks, E8M0 scale; FP8 E4M3/E5M2, FP6
``mxfp8_e5m2``,                E2M3/E3M2, FP4 E2M1 or INT8 elements
``mxfp6_e2m3``,
``mxfp6_e3m2``,
``mxfp4 mxint8``
``nvfp4``              block   16-element blocks of E2M1, E4M3 block scale, FP32 tensor scale
``wNaM_gK``            block   N-bit / M-bit integer grids, one scale per K elements
=====================  ======  ===============================================================

Bit widths are 2..16 written without leading zeros (``w8a8``, never ``w08a08``): one spelling
per point, so that two spellings cannot hash as two runs. Group sizes are 2..4096.
Block formats (family ``block``) take ``granularity=per_block``; element formats and block
formats are defined in :mod:`benchmark.quant.elements` and :mod:`benchmark.quant.blocks`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from benchmark.quant.elements import E2M1, E2M3, E3M2, E4M3, E5M2, INT8, FloatElement, IntElement
from benchmark.quant.errors import QuantSpecError

__all__ = ["OperandFormat", "Precision", "precision_format", "precision_names", "CAST"]

CAST = ("fp32", "fp16", "bf16")
_INT_RE = re.compile(r"^w(\d+)a(\d+)(?:_g(\d+))?$")


@dataclass(frozen=True)
class OperandFormat:
    """How one operand is quantized.

    Args:
        kind: ``int`` (integer grid), ``float`` (scaled FP8), ``mx``, ``nvfp4`` or ``int_group``.
        bits: element bits.
        element: the minifloat or MX integer element (``None`` for integer grids).
        block: elements per block for block formats.
    """

    kind: str
    bits: int
    element: FloatElement | IntElement | None = None
    block: int | None = None

    @property
    def label(self) -> str:
        """Short name for tables: ``int4``, ``fp8_e4m3``, ``mx32_e2m1``, ``nvfp4``, ``int4_g32``."""
        if self.kind == "int":
            return f"int{self.bits}"
        if self.kind == "int_group":
            return f"int{self.bits}_g{self.block}"
        if self.kind == "float":
            return f"fp8_{self.element.name}"
        if self.kind == "mx":
            return f"mx{self.block}_{self.element.name}"
        return "nvfp4"


@dataclass(frozen=True)
class Precision:
    """A parsed precision string: its family and the format of each operand."""

    name: str
    family: str
    weight: OperandFormat | None = None
    activation: OperandFormat | None = None

    @property
    def w_bits(self) -> int | None:
        return None if self.weight is None else self.weight.bits

    @property
    def a_bits(self) -> int | None:
        return None if self.activation is None else self.activation.bits

    @property
    def block_size(self) -> int | None:
        return None if self.weight is None else self.weight.block


def _both(name: str, family: str, fmt: OperandFormat) -> Precision:
    return Precision(name, family, fmt, fmt)


_NAMED = {p.name: p for p in [Precision(n, "cast") for n in CAST]} | {
    p.name: p
    for p in (
        _both("fp8_e4m3", "scaled", OperandFormat("float", 8, E4M3)),
        _both("fp8_e5m2", "scaled", OperandFormat("float", 8, E5M2)),
        _both("mxfp8_e4m3", "block", OperandFormat("mx", 8, E4M3, 32)),
        _both("mxfp8_e5m2", "block", OperandFormat("mx", 8, E5M2, 32)),
        _both("mxfp6_e2m3", "block", OperandFormat("mx", 6, E2M3, 32)),
        _both("mxfp6_e3m2", "block", OperandFormat("mx", 6, E3M2, 32)),
        _both("mxfp4", "block", OperandFormat("mx", 4, E2M1, 32)),
        _both("mxint8", "block", OperandFormat("mx", 8, INT8, 32)),
        _both("nvfp4", "block", OperandFormat("nvfp4", 4, E2M1, 16)),
    )
}


def precision_names() -> tuple[str, ...]:
    """The fixed precision names (integer ``wNaM``/``wNaM_gK`` strings are patterns)."""
    return tuple(_NAMED)


def precision_format(precision: str) -> Precision:
    """Parse a precision string (lower-cased, surrounding spaces removed).

    Raises:
        QuantSpecError: the string does not parse, has leading zeros, or a bit width is outside
            2..16 or a group size outside 2..4096.
    """
    text = str(precision).strip().lower()
    if text in _NAMED:
        return _NAMED[text]
    match = _INT_RE.match(text)
    if match is None:
        raise QuantSpecError(
            f"precision={precision!r} does not parse; use one of {', '.join(_NAMED)}, wNaM with "
            "N, M in 2..16 (e.g. w8a8, w4a8) or wNaM_gK (group-wise scales, e.g. w4a16_g128)"
        )
    if any(g is not None and g.startswith("0") for g in match.groups()):
        raise QuantSpecError(
            f"precision={precision!r}: write numbers without leading zeros (w8a8, not w08a08)"
        )
    w_bits, a_bits = int(match.group(1)), int(match.group(2))
    for label, bits in (("weight", w_bits), ("activation", a_bits)):
        if not 2 <= bits <= 16:
            raise QuantSpecError(
                f"precision={precision!r}: {label} bits {bits} is outside 2..16; pick N, M in 2..16"
            )
    if match.group(3) is None:
        return Precision(text, "scaled", OperandFormat("int", w_bits), OperandFormat("int", a_bits))
    group = int(match.group(3))
    if not 2 <= group <= 4096:
        raise QuantSpecError(f"precision={precision!r}: group size {group} is outside 2..4096")
    return Precision(
        text,
        "block",
        OperandFormat("int_group", w_bits, block=group),
        OperandFormat("int_group", a_bits, block=group),
    )
