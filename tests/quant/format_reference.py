"""Independent numpy references of the element grids and block formats (OCP MX v1.0, NVFP4).

Grids are built by decoding every bit pattern of a format from its definition (exponent field,
mantissa field, subnormals at exponent field 0), not from the engine's formulas; rounding picks
the nearest grid value, ties to the even code (the even mantissa), and saturates at the largest
value. NVFP4's two scales are computed in float32 in the order the format defines them.
"""

from __future__ import annotations

import numpy as np

# (exponent bits, mantissa bits, bias, codes at the top that are not finite numbers)
MINIFLOATS = {
    "e4m3": (4, 3, 7, 1),  # float8_e4m3fn: S.1111.111 is NaN
    "e5m2": (5, 2, 15, 4),  # IEEE-like: exponent 11111 is inf/NaN
    "e3m2": (3, 2, 3, 0),
    "e2m3": (2, 3, 1, 0),
    "e2m1": (2, 1, 1, 0),
}


def grid(name: str) -> np.ndarray:
    """Non-negative values of a minifloat, indexed by their code."""
    ebits, mbits, bias, not_finite = MINIFLOATS[name]
    values = []
    for exponent in range(2**ebits):
        for mantissa in range(2**mbits):
            if exponent == 0:
                values.append(mantissa / 2**mbits * 2.0 ** (1 - bias))
            else:
                values.append((1 + mantissa / 2**mbits) * 2.0 ** (exponent - bias))
    return np.array(values[: len(values) - not_finite])


def round_to_grid(v: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Nearest value of ``values`` (sorted codes) to ``|v|``, ties to the even code, signed."""
    magnitude = np.minimum(np.abs(v.astype(np.float64)), values[-1])
    upper = np.clip(np.searchsorted(values, magnitude), 1, len(values) - 1)
    lower = upper - 1
    d_low, d_up = magnitude - values[lower], values[upper] - magnitude
    pick = np.where(
        d_low < d_up, lower, np.where(d_up < d_low, upper, np.where(lower % 2 == 0, lower, upper))
    )
    return np.sign(v) * values[pick]


def round_int8_mx(v: np.ndarray) -> np.ndarray:
    """MXINT8 element: ``k / 64``, ``|k| <= 127``, ties to even."""
    return np.clip(np.rint(v.astype(np.float64) * 64), -127, 127) / 64


def blocks_of(x: np.ndarray, axis: int, size: int):
    """``[..., n_blocks, size]`` with ``axis`` last (zero-padded) and the inverse."""
    moved = np.moveaxis(x, axis, -1)
    length = moved.shape[-1]
    pad = (-length) % size
    padded = np.concatenate([moved, np.zeros((*moved.shape[:-1], pad), x.dtype)], -1)
    blocks = padded.reshape(*padded.shape[:-1], -1, size)

    def restore(values):
        return np.moveaxis(values.reshape(padded.shape)[..., :length], -1, axis)

    return blocks, restore


EMAX = {"e4m3": 8, "e5m2": 15, "e3m2": 4, "e2m3": 2, "e2m1": 2, "int8": 0}


def mx(x: np.ndarray, axis: int, element: str, size: int = 32) -> np.ndarray:
    """OCP MX: ``X = 2^(floor(log2(amax)) - emax_elem)`` (E8M0, clamped), elements of ``v / X``."""
    blocks, restore = blocks_of(x.astype(np.float64), axis, size)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        shared = np.where(amax > 0, np.floor(np.log2(amax)) - EMAX[element], -127)
    scale = 2.0 ** np.clip(shared, -127, 127)
    scaled = blocks / scale
    elements = round_int8_mx(scaled) if element == "int8" else round_to_grid(scaled, grid(element))
    return restore(elements * scale).astype(np.float32)


def nvfp4(x: np.ndarray, axis: int, tensor_axes: tuple[int, ...], size: int = 16) -> np.ndarray:
    """NVFP4: FP32 tensor scale ``amax / (6 * 448)``, E4M3 block scale, E2M1 elements."""
    x = x.astype(np.float32)
    amax_t = np.abs(x).max(axis=tensor_axes, keepdims=True).astype(np.float32)
    s_t = np.broadcast_to(amax_t / np.float32(6 * 448), x.shape)
    blocks, restore = blocks_of(x, axis, size)
    s_t = blocks_of(np.ascontiguousarray(s_t), axis, size)[0][..., :1]
    amax_b = np.abs(blocks).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        block_scale = round_to_grid(amax_b / (np.float32(6) * s_t), grid("e4m3")).astype(np.float32)
        scale = (block_scale * s_t).astype(np.float32)
        elements = round_to_grid((blocks / scale).astype(np.float32), grid("e2m1"))
    values = np.where(scale > 0, (elements.astype(np.float32) * scale), 0)
    return restore(values).astype(np.float32)


def int_groups(x: np.ndarray, axis: int, size: int, bits: int) -> np.ndarray:
    """Signed narrow integer grid per block: ``s = amax / (2^(b-1) - 1)``, round half to even."""
    blocks, restore = blocks_of(x.astype(np.float32), axis, size)
    qmax = 2 ** (bits - 1) - 1
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    scale = np.maximum(amax / np.float32(qmax), np.finfo(np.float32).eps).astype(np.float32)
    inverse = (np.float32(1) / scale).astype(np.float32)
    codes = np.clip(np.rint((blocks * inverse).astype(np.float32)), -qmax, qmax)
    return restore((codes * scale).astype(np.float32))
