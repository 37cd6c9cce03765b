"""Integer-factorized convolution and linear layers: integer sums, scales applied outside.

A fake-quantized layer computes ``conv(q_x * s_x, q_w * s_w)``. When the scales do not vary
along the summed index they factor out of the sum:

.. math::

    y_{o,v} = s_w[o] \\, s_x[v] \\sum_{c,\\delta} q_w[o, c, \\delta] \\, q_x[c, v + \\delta] + b_o

with ``s_x`` one scalar (per tensor) or one scale per output voxel ``v`` (per voxel on a 1x1x1
convolution: output voxel ``v`` reads only input voxel ``v * stride``). The sum runs over integer
codes held in float32 tensors; it is exact while partial sums stay below 2^24 (8-bit codes and
the channel counts of segmentation networks), and on CUDA it is exact in TF32 as well because
codes of at most 8 bits fit the 11-bit TF32 significand. This is the GPU fast path.

Per-voxel scales on a larger kernel do not factor out of a single convolution (one output sums
voxels with different scales) but do factor per kernel position ``delta`` (the im2col view: each
input voxel appears in several columns, once per kernel position that reads it, always with its
own scale):

.. math::

    y_{o,v} = s_w[o] \\sum_{\\delta} s_x[v \\cdot stride + \\delta \\cdot dilation - pad]
              \\sum_c q_w[o, c, \\delta] \\, q_x[c, v \\cdot stride + \\delta \\cdot dilation - pad] + b_o

i.e. one 1x1x1 integer convolution per kernel position on a shifted view of the codes, each
multiplied by the scale map read through the same shift (:func:`conv_per_kernel_position`).
Padding voxels are zero codes, so their scale does not matter.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["factorized_conv", "factorized_linear", "conv_per_kernel_position"]


def _channel_view(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """Weight scale ``[O, 1, ...]`` (or one element) as ``[1, O, 1, ...]`` for an output."""
    if scale.numel() == 1:
        return scale.reshape([1] * ndim)
    return scale.reshape(1, -1, *([1] * (ndim - 2)))


def factorized_conv(
    conv: nn.Module,
    codes: torch.Tensor,
    act_scale: torch.Tensor,
    w_codes: torch.Tensor,
    w_scale: torch.Tensor,
) -> torch.Tensor:
    """Convolution of integer codes with per-tensor or per-voxel (1x1x1) activation scales.

    Args:
        conv: the ``nn.Conv2d``/``nn.Conv3d`` whose geometry (stride, padding, groups) is used.
        codes: activation codes ``[B, C, *spatial]``.
        act_scale: one element, or per voxel ``[B or 1, 1, *spatial]`` (then the conv must be
            1x1x1 without padding).
        w_codes: weight codes ``[O, C / groups, *k]``.
        w_scale: one element or ``[O, 1, ...]``.

    Returns:
        ``[B, O, *spatial_out]`` float32 output, equal to the fake-quant path within rounding.
    """
    acc = conv._conv_forward(codes, w_codes, None)
    scale = _channel_view(w_scale, acc.ndim)
    if act_scale.numel() == 1:
        scale = scale * act_scale.reshape([1] * acc.ndim)
    else:
        index = (Ellipsis, *(slice(None, None, s) for s in conv.stride))
        scale = scale * act_scale[index]
    out = acc * scale
    if conv.bias is not None:
        out = out + conv.bias.reshape(1, -1, *([1] * (acc.ndim - 2)))
    return out


def factorized_linear(
    codes: torch.Tensor,
    act_scale: torch.Tensor,
    w_codes: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Linear layer on integer codes with per-tensor or per-token scales.

    Args:
        codes: ``[..., C]`` activation codes.
        act_scale: one element or ``[..., 1]`` (per token).
        w_codes: ``[O, C]`` weight codes.
        w_scale: one element or ``[O, 1]``.
        bias: ``[O]`` or None.

    Returns:
        ``[..., O]`` float32 output.
    """
    acc = F.linear(codes, w_codes)
    out = acc * act_scale * w_scale.reshape(-1)
    return out if bias is None else out + bias


def conv_per_kernel_position(
    codes: torch.Tensor,
    act_scale: torch.Tensor,
    w_codes: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
) -> torch.Tensor:
    """Convolution with per-voxel activation scales, factorized per kernel position.

    Computes the second formula of the module docstring with one integer 1x1x1 convolution per
    kernel position (``groups=1``, zero padding).

    Args:
        codes: activation codes ``[B, C, *spatial]``.
        act_scale: per-voxel scales ``[B or 1, 1, *spatial]``.
        w_codes: weight codes ``[O, C, *k]``.
        w_scale: one element or ``[O, 1, ...]``.
        bias: ``[O]`` or None.
        stride: per spatial dim.
        padding: per spatial dim (zeros).
        dilation: per spatial dim.

    Returns:
        ``[B, O, *spatial_out]`` float32 output.
    """
    spatial = codes.ndim - 2
    pad = [p for p in reversed(padding) for _ in range(2)]
    codes_p = F.pad(codes, pad)
    scale_p = F.pad(act_scale, pad)
    kernel = w_codes.shape[2:]
    out_shape = [
        (codes_p.shape[2 + d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1
        for d in range(spatial)
    ]
    out = None
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = (
            Ellipsis,
            *(
                slice(o * dil, o * dil + st * (n - 1) + 1, st)
                for o, dil, st, n in zip(offset, dilation, stride, out_shape, strict=True)
            ),
        )
        tap = w_codes[(slice(None), slice(None), *offset)].reshape(
            *w_codes.shape[:2], *[1] * spatial
        )
        conv = F.conv3d if spatial == 3 else F.conv2d
        partial = conv(codes_p[index], tap) * scale_p[index]
        out = partial if out is None else out + partial
    out = out * _channel_view(w_scale, out.ndim)
    if bias is not None:
        out = out + bias.reshape(1, -1, *([1] * spatial))
    return out
