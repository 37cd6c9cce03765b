"""Block-scaled number formats: OCP MX, NVFP4 and integer group-wise scales.

All three cut an operand into blocks of ``size`` consecutive elements along one axis (the
reduction axis of its operator, see :func:`benchmark.quant.granularity.bind`; a short last
block is zero-padded, which changes no block maximum) and give each block its own scale,
computed from the block itself:

- **MX** (OCP Microscaling v1.0): shared scale ``X = 2^(floor(log2(amax)) - emax_elem)`` stored
  as E8M0 (exponent clamped to [-127, 127]; an all-zero block takes 2^-127), elements
  ``round_to_element(v / X)``; MXFP8 (E4M3 or E5M2), MXFP6 (E2M3 or E3M2), MXFP4 (E2M1) and
  MXINT8 with 32-element blocks.
- **NVFP4**: 16-element blocks of E2M1 elements; a per-tensor FP32 scale
  ``s_t = amax_tensor / (6 * 448)`` and a per-block E4M3 scale ``s_b = e4m3(amax_b / (6 s_t))``;
  the value is ``e2m1(v / (s_b s_t)) * s_b s_t`` (a block whose E4M3 scale is 0 is 0).
- **integer groups** (``wNaM_gK``): each block gets the integer grid of
  :mod:`benchmark.quant.primitives` from its own min/max (``auto``: unsigned where the block's
  minimum is >= 0, symmetric elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmark.quant.elements import E2M1, E4M3, FloatElement, IntElement, round_to_element
from benchmark.quant.primitives import choose_qparams, dequantize_codes, quantize_codes

__all__ = ["to_blocks", "mx_fake_quant", "nvfp4_fake_quant", "group_fake_quant", "E8M0_MIN"]

E8M0_MIN, E8M0_MAX = -127, 127
NVFP4_SCALE_DIVISOR = E2M1.max_normal * E4M3.max_normal  # 6 * 448


def to_blocks(
    x: torch.Tensor, axis: int, size: int
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """``[..., blocks, size]`` view of ``x`` with ``axis`` last, and the inverse mapping."""
    moved = x.movedim(axis, -1)
    length = moved.shape[-1]
    padded = F.pad(moved, (0, (-length) % size)) if length % size else moved
    blocks = padded.reshape(*padded.shape[:-1], -1, size)

    def restore(values: torch.Tensor) -> torch.Tensor:
        return values.reshape(padded.shape)[..., :length].movedim(-1, axis)

    return blocks, restore


def mx_fake_quant(
    x: torch.Tensor, axis: int, element: FloatElement | IntElement, size: int = 32
) -> torch.Tensor:
    """OCP MX quantize-dequantize of ``x`` with blocks along ``axis``."""
    blocks, restore = to_blocks(x.float(), axis, size)
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    _, exponent = torch.frexp(amax)  # floor(log2(amax)) = exponent - 1 for amax > 0
    shared = torch.where(amax > 0, exponent - 1 - element.emax, torch.full_like(exponent, -127))
    scale = torch.ldexp(torch.ones_like(amax), torch.clamp(shared, E8M0_MIN, E8M0_MAX))
    return restore(round_to_element(blocks / scale, element) * scale)


def nvfp4_fake_quant(
    x: torch.Tensor, axis: int, tensor_dims: tuple[int, ...], size: int = 16
) -> torch.Tensor:
    """NVFP4 quantize-dequantize; the FP32 tensor scale is the amax over ``tensor_dims``."""
    x = x.float()
    tensor_amax = x.abs().amax(dim=tensor_dims, keepdim=True) if tensor_dims else x.abs()
    tensor_scale = tensor_amax / NVFP4_SCALE_DIVISOR
    blocks, restore = to_blocks(x, axis, size)
    scale_blocks, _ = to_blocks(tensor_scale.expand_as(x), axis, size)
    tensor_scale = scale_blocks[..., :1]
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    safe = torch.where(tensor_scale > 0, tensor_scale, torch.ones_like(tensor_scale))
    block_scale = round_to_element(amax / (E2M1.max_normal * safe), E4M3)
    scale = block_scale * tensor_scale
    divisor = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = torch.where(scale > 0, round_to_element(blocks / divisor, E2M1) * scale, 0.0)
    return restore(values)


def group_fake_quant(
    x: torch.Tensor, axis: int, size: int, bits: int, mapping: str
) -> torch.Tensor:
    """Integer grid per block of ``size`` along ``axis`` from the block's own min/max."""
    blocks, restore = to_blocks(x.float(), axis, size)
    lo = blocks.amin(dim=-1, keepdim=True)
    hi = blocks.amax(dim=-1, keepdim=True)
    if mapping != "auto":
        scale, zp, qmin, qmax = choose_qparams(lo, hi, bits, mapping)
        return restore(dequantize_codes(quantize_codes(blocks, scale, zp, qmin, qmax), scale, zp))
    s_sym, zp, smin, smax = choose_qparams(lo, hi, bits, "symmetric")
    s_uns, _, umin, umax = choose_qparams(lo, hi, bits, "unsigned")
    unsigned = lo >= 0
    scale = torch.where(unsigned, s_uns, s_sym)
    qmin = torch.where(unsigned, float(umin), float(smin))
    qmax = torch.where(unsigned, float(umax), float(smax))
    return restore(dequantize_codes(quantize_codes(blocks, scale, zp, qmin, qmax), scale, zp))
