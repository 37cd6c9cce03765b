"""Which layers of a calibrated fake-quant model an ONNX QDQ export can carry, and with what.

A layer is exported when a QuantizeLinear/DequantizeLinear pair with the harness's own scale and
zero point reproduces its fake-quant operands exactly and a runtime can run it: a static
integer-factorizable layer (``quantization_table``'s ``execution``) with one calibrated
activation scale per tensor and a weight with per-tensor or per-output-channel scales.
Everything else is *simulation-only* for the export and stays float in the ONNX file, named in
the report with its reason:

* per-input-channel activation scales of a convolution, per-kernel-position scales, block
  formats (MX, NVFP4, group-wise), FP8 grids: no integer kernel takes them;
* dynamic ranges (per voxel, per token, or ``dynamic=True``): computed per input at run time,
  so no scale can be written into the file; static per-voxel/per-token ranges likewise (ONNX
  Q/DQ scales one axis at most, and no integer kernel scales GEMM rows);
* activation grids other than 4 and 8 bits (a QuantizeLinear clamps to its type's range, so a
  6-bit grid in an int8 container would not clamp where the harness does); weights above
  8 bits; learnable (QAT) scales; attention matmul operands (kept float).

Containers (each the harness's grid, value for value):

* activations: ``symmetric`` -> int8 (int4 at 4 bits), zero point 0; ``unsigned`` and
  ``asymmetric`` -> uint8 (uint4), the harness's zero point. The harness's signed grid is
  narrow (``[-127, 127]``); a QuantizeLinear saturates at -128, so an input below the
  calibrated minimum by more than half a step maps to -128 instead of -127 (inputs inside
  the calibrated range are unaffected);
* weights: the harness's integer codes, any width up to 8 bits, in ``int8`` (zero point 0;
  asymmetric weight grids in uint8 with their zero points) or ``uint8`` (symmetric codes
  shifted by 128 with zero point 128: the same real values, see :mod:`.qdq_export` for why);
  4-bit weights in ONNX ``int4``/``uint4`` (opset 21) with ``int4_weights=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmark.quant.attention import QuantAttention
from benchmark.quant.granularity import PerAxis, PerTensor
from benchmark.quant.modules import QuantLayer
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = ["QParams", "LayerPlan", "plan_layers", "WEIGHT_DTYPES", "ONNX_OP_TYPES"]

WEIGHT_DTYPES = ("int8", "uint8")
#: torch layer class name -> the ONNX op types the exporter writes for it.
ONNX_OP_TYPES = {
    "Conv2d": ("Conv",),
    "Conv3d": ("Conv",),
    "ConvTranspose2d": ("ConvTranspose",),
    "ConvTranspose3d": ("ConvTranspose",),
    "Linear": ("Gemm", "MatMul"),
}
_INTEGER_EXECUTION = "integer-factorizable"


@dataclass(frozen=True)
class QParams:
    """One operand's quantization as the ONNX file stores it.

    Attributes:
        scale: float32 scales, shape ``(1,)`` per tensor or ``(C,)`` along ``axis``.
        zero_point: integer zero points, same shape, in the container's range.
        dtype: ONNX container: ``int8``, ``uint8``, ``int4`` or ``uint4``.
        axis: the per-channel axis of the torch tensor, ``None`` per tensor.
        codes: weights only: the integer codes (zero point included) in the torch layout.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None = None
    codes: np.ndarray | None = None


@dataclass(frozen=True)
class LayerPlan:
    """One quantized layer: exported with ``activation``/``weight``, or float with ``reason``."""

    module: str
    op_type: str
    w_bits: int | None
    a_bits: int | None
    reason: str = ""
    activation: QParams | None = None
    weight: QParams | None = None

    @property
    def exported(self) -> bool:
        return not self.reason


def _float_type_name(module: nn.Module) -> str:
    for cls in type(module).__mro__[1:]:
        if cls.__module__.startswith(("torch.nn", "monai")):
            return cls.__name__
    return type(module).__name__


def _reason(layer: nn.Module) -> str:
    """Why ``layer`` cannot be exported with its own scales (empty when it can)."""
    act, weight = layer.input_quant, layer.weight_quant
    if layer.execution != _INTEGER_EXECUTION:
        return f"simulation-only: execution {layer.execution}"
    if type(act) is not ActivationQuantizer or type(weight) is not WeightQuantizer:
        return f"simulation-only: {type(act).__name__} has no integer Q/DQ form"
    if act.dynamic:
        return f"simulation-only: dynamic {act.granularity.name} activation scales"
    if not isinstance(act.granularity, PerTensor):
        return f"simulation-only: static {act.granularity.name} activation scales"
    if act.learnable or weight.learnable:
        return "simulation-only: learnable (QAT) scales"
    if act.bits not in (4, 8):
        return f"simulation-only: {act.bits}-bit activations have no ONNX integer type"
    if weight.bits > 8:
        return f"simulation-only: {weight.bits}-bit weights exceed the 8-bit kernels"
    if not isinstance(weight.granularity, (PerTensor, PerAxis)):
        return f"simulation-only: {weight.granularity.name} weight scales"
    if not act.calibrated:
        return "not calibrated (not reached by the calibration batches)"
    return ""


def _activation_qparams(act: ActivationQuantizer) -> QParams:
    signed = act.resolved_mapping == "symmetric"
    dtype = ("int" if signed else "uint") + str(act.bits)
    scale = act.scale.detach().reshape(-1).float().numpy().astype(np.float32)
    zero_point = act.zero_point.detach().reshape(-1).numpy().astype(np.int64)
    return QParams(scale, zero_point, dtype)


def _weight_qparams(layer: nn.Module, weight_dtype: str, int4_weights: bool) -> QParams:
    quantizer: WeightQuantizer = layer.weight_quant
    codes, scale, zero_point = quantizer.codes(layer.weight)
    codes = codes.detach().to(torch.int64).numpy()
    axis = quantizer.granularity.axis if isinstance(quantizer.granularity, PerAxis) else None
    scale = scale.detach().reshape(-1).float().numpy().astype(np.float32)
    zero_point = zero_point.detach().reshape(-1).to(torch.int64).numpy()
    signed = quantizer.mapping == "symmetric"
    if int4_weights and quantizer.bits == 4:
        return QParams(scale, zero_point, "int4" if signed else "uint4", axis, codes)
    if signed and weight_dtype == "uint8":
        return QParams(scale, zero_point + 128, "uint8", axis, codes + 128)
    return QParams(scale, zero_point, "int8" if signed else "uint8", axis, codes)


def plan_layers(
    qmodel: nn.Module, weight_dtype: str = "int8", int4_weights: bool = True
) -> list[LayerPlan]:
    """Every quantized layer and attention block of ``qmodel`` with its export decision.

    Args:
        qmodel: a calibrated model from ``benchmark.quant.quantize``.
        weight_dtype: container of 5- to 8-bit weights, ``int8`` or ``uint8``.
        int4_weights: 4-bit weights as ONNX int4/uint4 (opset 21); otherwise in the 8-bit
            container (the same codes).

    Raises:
        ValueError: unknown ``weight_dtype``.
    """
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype={weight_dtype!r} is not one of {WEIGHT_DTYPES}")
    plans = []
    for name, module in qmodel.named_modules():
        if isinstance(module, QuantAttention):
            plans.append(
                LayerPlan(
                    name, _float_type_name(module), None, None, "kept float: attention matmuls"
                )
            )
        if not isinstance(module, QuantLayer):
            continue
        op_type = _float_type_name(module)
        w_bits, a_bits = module.weight_quant.bits, module.input_quant.bits
        reason = _reason(module)
        if reason:
            plans.append(LayerPlan(name, op_type, w_bits, a_bits, reason))
            continue
        plans.append(
            LayerPlan(
                name,
                op_type,
                w_bits,
                a_bits,
                activation=_activation_qparams(module.input_quant),
                weight=_weight_qparams(module, weight_dtype, int4_weights),
            )
        )
    return plans
