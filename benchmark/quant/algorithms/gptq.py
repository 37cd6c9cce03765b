"""``gptq``: GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers").

**What it changes**: the integer codes of every quantized Linear, Conv2d/Conv3d and
non-overlapping ConvTranspose2d/3d weight (stride = kernel, no padding: nnU-Net's and MONAI's
up-sampling; other transposed convolutions keep round-to-nearest, and attention matmuls have no
weight). The scales stay those of the layer's own weight quantizer; the solution is baked into
the float weight (``weight := (codes - z) s``), so the quantizer reproduces its codes exactly
(see :mod:`benchmark.quant.algorithms.rounding` for the pinned range ends that guarantee it).

**How**: per layer, in the order a forward calls them (later layers see quantized
predecessors), the Hessian of the layer-wise squared error ``H = 2 X X^T / N`` is accumulated
from the layer's inputs in the quantized model, after its input quantizer (what the weight
multiplies): Linear inputs directly, convolutions through im2col (``X`` = patches x output
positions; float32 products of chunks of at most 2^24 values, summed in float64). Then, with
``H`` dampened by ``damp * mean(diag H)`` and ``U`` the upper Cholesky
factor of ``H^-1``, the columns are quantized one by one; the error of column ``j``,
``(w_j - q_j) / U_jj``, is fed back into the columns not yet quantized through row ``j`` of
``U``, lazily in blocks of ``block_size`` columns. ``act_order`` quantizes columns in order of
decreasing ``diag H``. Columns whose input is always zero (``H_jj = 0``) are set to zero, as in
the reference implementation. Grouped convolutions have one Hessian per group.

**Cost**: one forward per calibration batch per layer up to that layer, ``O(d^2 N)`` for the
Hessian and ``O(d^3 + rows d^2)`` for the update, ``d = C_in k^3``; the update runs in float64 on the
model's device.

Options (defaults in :data:`DEFAULTS`, listed in ``conf/algorithm/gptq.yaml``): ``damp``,
``block_size``, ``act_order``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from benchmark.quant.algorithms.base import Algorithm, register_algorithm
from benchmark.quant.algorithms.layer_inputs import (
    forward_order,
    input_columns,
    matrix_support,
    module_inputs,
    set_weight_matrix,
    weight_matrix,
    with_defaults,
)
from benchmark.quant.algorithms.rounding import bake, weight_grid
from benchmark.quant.errors import QuantError
from benchmark.quant.modules import QuantLayer

__all__ = ["GPTQ", "gptq_codes", "DEFAULTS"]

DEFAULTS = {"damp": 0.01, "block_size": 128, "act_order": False}


def gptq_codes(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    pinned: torch.Tensor | None = None,
    pinned_codes: torch.Tensor | None = None,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> torch.Tensor:
    """GPTQ codes of one weight matrix ``[rows, d]`` for the Hessian ``[d, d]``.

    ``scale`` and ``zero_point`` are per element (broadcastable to ``weight``); ``pinned``
    elements take ``pinned_codes`` instead of their rounded value (the error is fed back the
    same way). Returns float codes of ``weight``'s shape, in ``[qmin, qmax]``.
    """
    w = weight.double().clone()
    h = hessian.double().clone()
    scale = scale.double().expand_as(w)
    zero_point = zero_point.double().expand_as(w)
    pinned = torch.zeros_like(w, dtype=torch.bool) if pinned is None else pinned.expand_as(w)
    pinned_codes = torch.zeros_like(w) if pinned_codes is None else pinned_codes.double()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    order = torch.argsort(torch.diagonal(h), descending=True, stable=True) if act_order else None
    if order is not None:
        w, h = w[:, order], h[order][:, order]
        scale, zero_point = scale[:, order], zero_point[:, order]
        pinned, pinned_codes = pinned[:, order], pinned_codes[:, order]
    h += (
        damp * torch.mean(torch.diagonal(h)) * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    )
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.zeros_like(w)
    d = w.shape[1]
    for start in range(0, d, block_size):
        stop = min(start + block_size, d)
        block = w[:, start:stop].clone()
        errors = torch.zeros_like(block)
        u = upper[start:stop, start:stop]
        for i in range(stop - start):
            j = start + i
            column = block[:, i]
            rounded = torch.clamp(torch.round(column / scale[:, j]) + zero_point[:, j], qmin, qmax)
            code = torch.where(pinned[:, j], pinned_codes[:, j], rounded)
            codes[:, j] = code
            error = (column - (code - zero_point[:, j]) * scale[:, j]) / u[i, i]
            block[:, i:] -= error.unsqueeze(1) * u[i, i:].unsqueeze(0)
            errors[:, i] = error
        w[:, stop:] -= errors @ upper[start:stop, stop:]
    if order is not None:
        codes = codes[:, torch.argsort(order)]
    return codes


def layer_hessian(qmodel: nn.Module, layer: nn.Module, batches: Sequence[torch.Tensor]):
    """``2 X X^T / N`` per group ``[groups, d, d]`` from the layer's quantized inputs."""
    state: dict[str, Any] = {"h": None, "n": 0}

    def accumulate(call):
        x = layer.input_quant(call[0][0]).float()  # float32 chunks, summed in float64
        for columns in input_columns(layer, x):
            gram = (columns @ columns.transpose(1, 2)).double()
            state["h"] = gram if state["h"] is None else state["h"] + gram
            state["n"] += columns.shape[-1]

    module_inputs(qmodel, layer, batches, consume=accumulate)
    if state["h"] is None:
        return None
    return 2 * state["h"] / state["n"]


@register_algorithm
class GPTQ(Algorithm):
    """Column-wise quantization with Hessian-based error feedback, layer by layer."""

    name = "gptq"
    needs_data = True

    def optimise(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        options = with_defaults(self.name, DEFAULTS, self.options)
        if float(options["damp"]) < 0 or int(options["block_size"]) < 1:
            raise QuantError("gptq: damp must be >= 0 and block_size >= 1")
        layers = [
            m for m in qmodel.modules() if isinstance(m, QuantLayer) and matrix_support(m) is None
        ]
        for layer in forward_order(qmodel, layers, batches[0]):
            self._quantize_layer(qmodel, layer, batches, options)

    def _quantize_layer(self, qmodel, layer, batches, options) -> None:
        grid = weight_grid(layer)
        hessian = layer_hessian(qmodel, layer, batches)
        if hessian is None:
            return
        weight = weight_matrix(layer, layer.weight.detach())
        parts = [weight_matrix(layer, t) for t in (grid.scale, grid.zero_point, grid.pinned)]
        pinned_codes = weight_matrix(layer, grid.pinned_codes)
        codes = torch.stack(
            [
                gptq_codes(
                    weight[g],
                    hessian[g],
                    parts[0][g],
                    parts[1][g],
                    grid.qmin,
                    grid.qmax,
                    parts[2][g],
                    pinned_codes[g],
                    damp=float(options["damp"]),
                    block_size=int(options["block_size"]),
                    act_order=bool(options["act_order"]),
                )
                for g in range(weight.shape[0])
            ]
        )
        bake(layer, grid, set_weight_matrix(layer, codes.float()))
