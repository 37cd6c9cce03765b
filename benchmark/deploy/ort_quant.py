"""Real INT8 (and FP16) ONNX models with ``onnxruntime.quantization``.

Static INT8 uses the QDQ format: QuantizeLinear/DequantizeLinear pairs around each quantized
operator, which ONNX Runtime's graph optimiser fuses into integer kernels (``QLinearConv``,
``QLinearMatMul``) where the execution provider has them and otherwise executes as dequantize ->
float op. Weights are symmetric INT8, per output channel; activation ranges come from the same
calibration patches as the fake-quant run (``benchmark.data.calibration_patches``).

Observer mapping (fake-quant ``QuantSpec.observer`` -> ONNX Runtime ``CalibrationMethod``):

======================  =================================================================
``minmax``              ``MinMax`` (running min/max over all calibration batches)
``moving_average``      ``MinMax`` with ``CalibMovingAverage`` (same exponential average)
``percentile``          ``Percentile`` with ``CalibPercentile`` = the spec's percentile.
                        ONNX Runtime clips ``(100 - p) / 2`` per side for asymmetric ranges
                        and the ``p``-th percentile of ``|x|`` for symmetric ones.
``mse``                 ``Entropy`` (KL-divergence threshold search). ONNX Runtime has no
                        MSE search; both pick a clipping range that minimises a distortion
                        of the histogram, so this is the nearest available method.
======================  =================================================================

Activation grid (``QuantSpec.act_mapping`` -> ONNX Runtime): ``symmetric`` -> signed INT8 with
zero point 0 (``ActivationSymmetric``); ``asymmetric`` and ``auto`` -> unsigned INT8 with a
calibrated zero point. For ``auto`` this is identical on non-negative tensors (zero point 0, the
simulation's unsigned grid) and finer on signed ones (the simulation uses the symmetric grid
there). Weights are symmetric INT8 on the narrow grid ``[-127, 127]`` in both.

Differences from the fake-quant simulation that remain (measured, not hidden, by
``agreement``): ONNX Runtime quantizes activations per tensor only (fake-quant
``per_channel_token``/``adaptive`` activations are finer), and an integer kernel also
re-quantizes its output, which the simulation leaves in float.

Weight range on CPUs without VNNI: ONNX Runtime's x86 U8S8 kernels without VNNI multiply
pairs with ``vpmaddubsw``, whose 16-bit sums saturate when 8-bit activations meet full-range
8-bit weights; ``reduce_range`` (7-bit weights) avoids it. Measured on an AVX2-only CPU: a
small 3D U-Net's static INT8 argmax agreed with FP32 on 96.5 % of voxels with full-range
weights and 99.5 % with ``reduce_range``; OpenVINO ran the same QDQ model at 99.5 % either way.
:func:`needs_reduce_range` makes the choice from the CPU's flags (``deploy.reduce_range:
auto``).

Dynamic INT8 (``quantize_dynamic``) stores INT8 weights and computes each activation's range
at run time (``DynamicQuantizeLinear`` -> ``ConvInteger``/``MatMulInteger``); it needs no
calibration, but its ranges depend on the whole batch, which the gate's batch-consistency
check exposes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from benchmark.deploy.export import INPUT_NAME, quiet_library_output

__all__ = [
    "OBSERVER_TO_CALIBRATE_METHOD",
    "calibrate_method_for",
    "PatchReader",
    "preprocess_for_quantization",
    "quantize_static_onnx",
    "quantize_dynamic_onnx",
    "convert_fp16_onnx",
    "needs_reduce_range",
    "resolve_reduce_range",
]

#: Fake-quant observer -> (ONNX Runtime method, extra options); see the module docstring.
OBSERVER_TO_CALIBRATE_METHOD: dict[str, tuple[CalibrationMethod, dict[str, object]]] = {
    "minmax": (CalibrationMethod.MinMax, {}),
    "moving_average": (CalibrationMethod.MinMax, {"CalibMovingAverage": True}),
    "percentile": (CalibrationMethod.Percentile, {}),
    "mse": (CalibrationMethod.Entropy, {}),
}
_METHODS_BY_NAME = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
    "distribution": CalibrationMethod.Distribution,
}
# quantize_dynamic has integer kernels for these only (ConvInteger, MatMulInteger).
_DYNAMIC_OP_TYPES = ("Conv", "MatMul")


def needs_reduce_range() -> bool:
    """Whether this CPU lacks VNNI (AVX-512 VNNI or AVX-VNNI), so 8-bit weights may saturate."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}
    return False


def resolve_reduce_range(setting: str) -> bool:
    """``deploy.reduce_range`` (``auto``, ``true``, ``false``) -> whether to use 7-bit weights.

    Raises:
        ValueError: any other value.
    """
    value = str(setting).lower()
    if value not in ("auto", "true", "false"):
        raise ValueError(f"deploy.reduce_range={setting!r} is not one of auto, true, false")
    return needs_reduce_range() if value == "auto" else value == "true"


def calibrate_method_for(
    observer: str,
    method: str = "auto",
    percentile: float = 99.99,
    averaging_constant: float = 0.01,
) -> tuple[CalibrationMethod, dict[str, object]]:
    """ONNX Runtime calibration method and extra options for a fake-quant observer.

    Args:
        observer: ``QuantSpec.observer`` (``minmax``, ``moving_average``, ``percentile``, ``mse``).
        method: ``auto`` to map ``observer``, or an explicit ONNX Runtime method name
            (``minmax``, ``percentile``, ``entropy``, ``distribution``).
        percentile: percentile (in %, e.g. 99.99) used by the ``Percentile`` method.
        averaging_constant: weight of a new batch in the moving average (``moving_average``).

    Returns:
        ``(CalibrationMethod, extra_options)`` for :func:`quantize_static_onnx`.

    Raises:
        ValueError: unknown observer or method, with the allowed values.
    """
    if method != "auto":
        if method not in _METHODS_BY_NAME:
            raise ValueError(
                f"calibrate method {method!r} is not one of {['auto', *_METHODS_BY_NAME]}"
            )
        chosen, extra = _METHODS_BY_NAME[method], {}
    elif observer in OBSERVER_TO_CALIBRATE_METHOD:
        chosen, extra = OBSERVER_TO_CALIBRATE_METHOD[observer]
    else:
        raise ValueError(
            f"observer {observer!r} has no ONNX Runtime counterpart; known: "
            f"{sorted(OBSERVER_TO_CALIBRATE_METHOD)}. Set deploy.calibrate_method explicitly."
        )
    extra = dict(extra)
    if chosen == CalibrationMethod.Percentile:
        extra["CalibPercentile"] = float(percentile)
    if extra.get("CalibMovingAverage"):
        extra["CalibMovingAverageConstant"] = float(averaging_constant)
    return chosen, extra


class PatchReader(CalibrationDataReader):
    """Feeds calibration patches ``[B, C, *roi]`` to ONNX Runtime's calibrator, one per call."""

    def __init__(self, batches: Iterable[torch.Tensor | np.ndarray], input_name: str = INPUT_NAME):
        self._arrays = [np.ascontiguousarray(np.asarray(b, dtype=np.float32)) for b in batches]
        if not self._arrays:
            raise ValueError("calibration needs at least one batch; got none")
        self._input_name = input_name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._arrays):
            return None
        self._next += 1
        return {self._input_name: self._arrays[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


def preprocess_for_quantization(src: str | Path, dst: str | Path) -> Path:
    """Shape inference and constant folding, the pre-processing ONNX Runtime recommends."""
    with quiet_library_output():
        quant_pre_process(str(src), str(dst))
    return Path(dst)


def quantize_static_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    batches: Iterable[torch.Tensor | np.ndarray],
    *,
    method: CalibrationMethod = CalibrationMethod.MinMax,
    extra_options: dict[str, object] | None = None,
    per_channel: bool = True,
    activation_symmetric: bool = False,
    op_types: Sequence[str] = ("Conv", "ConvTranspose", "MatMul", "Gemm"),
    nodes_to_exclude: Sequence[str] = (),
    reduce_range: bool = False,
) -> Path:
    """Static W8A8 QDQ model with calibrated activation ranges.

    Args:
        fp32_path: exported FP32 model.
        out_path: destination of the quantized model.
        batches: calibration inputs ``[B, C, *roi]`` (the fake-quant run's patches).
        method: ONNX Runtime calibration method (see :func:`calibrate_method_for`).
        extra_options: extra ``quantize_static`` options (e.g. ``CalibPercentile``).
        per_channel: one weight scale per output channel (axis 0 of Conv weights, axis 1 of
            ConvTranspose and MatMul weights).
        activation_symmetric: signed INT8 activations with zero point 0; otherwise unsigned
            INT8 with a calibrated zero point (ONNX Runtime's CPU default).
        op_types: ONNX op types whose inputs, weights and outputs are quantized.
        nodes_to_exclude: node names left in float (a layer policy's choice, see
            :mod:`.layer_policy`); names are those of ``fp32_path``, which the pre-processing
            keeps.
        reduce_range: 7-bit weights (see the module docstring; :func:`needs_reduce_range`).

    Returns:
        ``out_path``.
    """
    out_path = Path(out_path)
    pre = preprocess_for_quantization(fp32_path, out_path.with_suffix(".pre.onnx"))
    options: dict[str, object] = {
        "WeightSymmetric": True,
        "ActivationSymmetric": bool(activation_symmetric),
        "QDQOpTypePerChannelSupportToAxis": {"ConvTranspose": 1, "MatMul": 1},
        **(extra_options or {}),
    }
    with quiet_library_output():
        quantize_static(
            str(pre),
            str(out_path),
            PatchReader(batches),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if activation_symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=list(nodes_to_exclude),
            reduce_range=bool(reduce_range),
            extra_options=options,
        )
    pre.unlink(missing_ok=True)
    return out_path


def quantize_dynamic_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    per_channel: bool = True,
    op_types: Sequence[str] = ("Conv", "ConvTranspose", "MatMul", "Gemm"),
) -> Path:
    """Dynamic INT8 model: INT8 weights, activation ranges computed per call.

    Only ``Conv`` and ``MatMul`` have dynamic integer kernels in ONNX Runtime; other requested
    op types stay float.
    """
    out_path = Path(out_path)
    pre = preprocess_for_quantization(fp32_path, out_path.with_suffix(".pre.onnx"))
    with quiet_library_output():
        quantize_dynamic(
            str(pre),
            str(out_path),
            op_types_to_quantize=[op for op in op_types if op in _DYNAMIC_OP_TYPES],
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
        )
    pre.unlink(missing_ok=True)
    return out_path


def convert_fp16_onnx(fp32_path: str | Path, out_path: str | Path) -> Path:
    """FP16 weights and compute with FP32 inputs/outputs (for GPU providers)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return Path(out_path)
