"""A calibrated fake-quant model -> ONNX QDQ carrying the harness's own scales and zero points.

What the sweep measured is what is deployed: the float network is exported as usual
(:func:`.export.export_onnx`, dynamo), each exported layer's ONNX node is found by the module
path the exporter records (``pkg.torch.onnx.name_scopes``; nnU-Net's aliased module names are
resolved to the quantized model's own names), and ONNX Runtime's QDQ quantizer inserts the
QuantizeLinear/DequantizeLinear pairs with every scale and zero point pinned through its
``TensorQuantOverrides`` option (no calibration runs). The weight initializers are then
overwritten with the harness's integer codes, so ``DequantizeLinear(weight)`` equals the
fake-quant weight bit for bit, whatever algorithm produced it. Biases stay float, as in the
harness (OpenVINO adds them after its integer convolution); with ``output_batches`` they become
int32 at scale ``s_x * s_w``, which ONNX Runtime's ``QLinearConv`` needs, without ONNX
Runtime's weight-scale adjustment.
Layers the export cannot carry stay float and are listed with their reason
(:mod:`.qdq_plan`); ``strict=True`` refuses them instead.

Layer outputs are not quantized by the harness, and by default not here either: OpenVINO runs
``FakeQuantize -> Convolution`` in integer arithmetic with a float output, while ONNX Runtime
then runs the convolution in float on the dequantized operands (exactly the fake-quant
arithmetic). ONNX Runtime's integer ``QLinearConv`` needs a quantized output;
``output_batches`` adds one per exported layer: 8-bit asymmetric, with min/max ranges observed
on those batches through the fake-quant model (new scales, named in the report, which the
harness never had).

Saturation on CPUs without VNNI (AVX2): both runtimes' u8 x s8 kernels multiply with
``vpmaddubsw``, whose 16-bit pair sums overflow when 8-bit activations meet full-range int8
weights (measured on one 3x3x3 convolution with full-range random codes: 23 % relative error
in both ONNX Runtime ``QLinearConv`` and OpenVINO for signed activations, 1.6 % for unsigned;
exact with 7-bit weights). The harness's weights are full-range, so per runtime:

* ONNX Runtime, integer path (``output_batches``): ``weight_dtype="uint8"`` stores the same
  codes shifted by 128 (zero point 128), which runs in the U8U8 kernel without saturation.
  Shipped ``tiny_nnunet`` W8A8 per tensor on phantom patches: argmax agreement with the
  fake-quant model 99.85 % with uint8 weights, 99.51 % with int8 weights (saturated);
  19 of 23 convolutions ``QLinearConv`` (ConvTranspose stays float).
* ONNX Runtime, default (no output Q/DQ): float convolutions on the dequantized operands,
  99.95 % (signed activation grids) to 99.98 % (unsigned).
* OpenVINO: int8 weights; every ``Convolution`` runs in U8. With unsigned or asymmetric
  activation grids 99.97 %; with signed ones (``act_mapping="auto"`` after LeakyReLU) its
  kernels saturate: 89.1 %. uint8 weights make it fall back to float convolutions that
  disagree (75.6 to 85.6 %), so an OpenVINO file keeps ``weight_dtype="int8"``.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import torch
from torch import nn

from benchmark.deploy.export import export_onnx, quiet_library_output
from benchmark.deploy.qdq_graph import (
    QDQExportError,
    check_quantized,
    node_modules,
    read_qdq_params,
    restore_float_consumers,
    weight_layout,
    write_codes,
)
from benchmark.deploy.qdq_plan import LayerPlan, QParams, plan_layers
from benchmark.quant.attention import QuantAttention
from benchmark.quant.modules import QuantLayer
from benchmark.quant.primitives import choose_qparams

__all__ = ["ExportReport", "LayerExport", "QDQExportError", "export_qdq", "read_qdq_params"]

_QUANTIZERS = ("input_quant", "weight_quant", "q_quant", "k_quant", "attn_quant", "v_quant")


@dataclass(frozen=True)
class LayerExport:
    """One quantized layer in the export: ``status`` ``qdq`` or ``float`` (with ``reason``)."""

    module: str
    op_type: str
    onnx_nodes: tuple[str, ...]
    status: str
    reason: str
    w_bits: int | None
    a_bits: int | None
    activation_dtype: str | None
    weight_dtype: str | None
    weight_axis: int | None


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_qdq` wrote.

    Attributes:
        path: the QDQ ``.onnx`` file.
        opset: its ONNX opset.
        layers: one :class:`LayerExport` per quantized layer or attention block.
        output_requantized: layer outputs carry Q/DQ observed on ``output_batches``.
    """

    path: Path
    opset: int
    layers: tuple[LayerExport, ...]
    output_requantized: bool

    @property
    def exported(self) -> list[str]:
        """Modules written with Q/DQ."""
        return [layer.module for layer in self.layers if layer.status == "qdq"]

    @property
    def kept_float(self) -> list[str]:
        """Modules left float in the file (each with its reason in :meth:`table`)."""
        return [layer.module for layer in self.layers if layer.status == "float"]

    @property
    def simulation_only(self) -> list[str]:
        """Modules whose scheme no runtime can run as quantized (a subset of ``kept_float``)."""
        return [x.module for x in self.layers if x.reason.startswith("simulation-only")]

    def table(self) -> pd.DataFrame:
        """The layers as a frame (one row each)."""
        return pd.DataFrame([layer.__dict__ for layer in self.layers])


def _float_network(qmodel: nn.Module) -> nn.Module:
    """A copy of ``qmodel`` with every quantized class swapped back and its quantizers removed."""
    model = copy.deepcopy(qmodel).eval()
    model._forward_pre_hooks.clear()  # quantize()'s finiteness checks (data-dependent)
    model._forward_hooks.clear()
    for module in model.modules():
        if isinstance(module, (QuantLayer, QuantAttention)):
            module.__class__ = next(
                c for c in type(module).__mro__[1:] if c.__module__.startswith(("torch", "monai"))
            )
            for name in _QUANTIZERS:
                if name in module._modules:
                    del module._modules[name]
    return model


def _quant_type(dtype: str):
    from onnxruntime.quantization import QuantType

    return {
        "int8": QuantType.QInt8,
        "uint8": QuantType.QUInt8,
        "int4": QuantType.QInt4,
        "uint4": QuantType.QUInt4,
    }[dtype]


_NP_ZP = {"int8": np.int8, "uint8": np.uint8, "int4": np.int8, "uint4": np.uint8}


def _override(q: QParams, axis: int | None = None) -> list[dict]:
    """ONNX Runtime ``TensorQuantOverrides`` entries pinning ``q``'s scales and zero points."""
    kind, zp_type = _quant_type(q.dtype), _NP_ZP[q.dtype]
    if axis is None:
        return [
            {
                "scale": np.array(q.scale[0], np.float32),
                "zero_point": np.array(q.zero_point[0], zp_type),
                "quant_type": kind,
            }
        ]
    return [
        {"axis": axis, "scale": np.array(s, np.float32), "zero_point": np.array(z, zp_type)}
        | {"quant_type": kind}
        for s, z in zip(q.scale, q.zero_point, strict=True)
    ]


@torch.no_grad()
def _output_ranges(
    qmodel: nn.Module, modules: Sequence[str], batches: Iterable[torch.Tensor]
) -> dict[str, tuple[float, float]]:
    """Min/max of each module's output over ``batches`` run through the fake-quant model."""
    ranges: dict[str, tuple[float, float]] = {}
    hooks = []
    for name in modules:

        def hook(_m, _a, out, name=name):
            lo, hi = ranges.get(name, (0.0, 0.0))
            ranges[name] = (min(lo, float(out.min())), max(hi, float(out.max())))

        hooks.append(qmodel.get_submodule(name).register_forward_hook(hook))
    try:
        for batch in batches:
            qmodel(torch.as_tensor(batch, dtype=torch.float32))
    finally:
        for h in hooks:
            h.remove()
    return ranges


def _layer_overrides(
    plans: Sequence[LayerPlan], found: dict[str, list[onnx.NodeProto]], inits: dict, network
) -> tuple[dict, dict, dict[str, list[tuple[str, bool]]], dict[str, str]]:
    """ORT overrides and ranges for the exported layers; nodes per module; reasons to keep float."""
    overrides: dict[str, list[dict]] = {}
    ranges: dict[str, tuple] = {}
    nodes: dict[str, list[tuple[str, bool]]] = {}
    refused: dict[str, str] = {}
    owner: dict[str, str] = {}
    for plan in plans:
        if not plan.exported:
            continue
        if plan.module not in found:
            refused[plan.module] = "not in the exported graph (not run by the forward pass)"
            continue
        act = plan.activation
        for node in found[plan.module]:
            tensor = node.input[0]
            if tensor in owner and not _same(overrides[tensor][0], act):
                refused[plan.module] = (
                    f"kept float: input shared with {owner[tensor]} at another scale"
                )
                break
        if plan.module in refused:
            continue
        layer = network.get_submodule(plan.module)
        for node in found[plan.module]:
            weight_name, transposed = weight_layout(node, inits, layer)
            tensor = node.input[0]
            owner.setdefault(tensor, plan.module)
            overrides[tensor] = _override(act)
            lo = float(act.scale[0]) * -128.0
            ranges[tensor] = (np.array(lo, np.float32), np.array(-lo, np.float32))
            w = plan.weight
            axis = None if w.axis is None else (1 - w.axis if transposed else w.axis)
            overrides[weight_name] = _override(w, axis)
            nodes.setdefault(plan.module, []).append((node.name, transposed))
    return overrides, ranges, nodes, refused


def _same(entry: dict, act: QParams) -> bool:
    return (
        float(entry["scale"]) == float(act.scale[0])
        and int(entry["zero_point"]) == int(act.zero_point[0])
        and entry["quant_type"] == _quant_type(act.dtype)
    )


def _output_overrides(
    qmodel: nn.Module, nodes: dict, batches, found: dict, overrides: dict, ranges: dict
) -> None:
    """8-bit asymmetric Q/DQ on each exported layer's output, from ranges seen on ``batches``."""
    observed = _output_ranges(qmodel, list(nodes), batches)
    for module, (lo, hi) in observed.items():
        scale, zero_point, _, _ = choose_qparams(
            torch.tensor(lo), torch.tensor(hi), 8, "asymmetric"
        )
        q = QParams(scale.reshape(1).numpy(), zero_point.reshape(1).numpy(), "uint8")
        for node in found[module]:
            if node.output[0] not in overrides:  # an input of another layer keeps its own scale
                overrides[node.output[0]] = _override(q)
                ranges[node.output[0]] = (np.array(lo, np.float32), np.array(hi, np.float32))


def _quantize(model: onnx.ModelProto, nodes, overrides, ranges, op_types, requantize: bool):
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    names = [name for entries in nodes.values() for name, _ in entries]
    options = {
        "TensorQuantOverrides": overrides,
        "OpTypesToExcludeOutputQuantization": [] if requantize else sorted(op_types),
        "QDQDisableWeightAdjustForInt32Bias": True,
        # int32 biases at s_x * s_w only where an integer kernel needs them (QLinearConv):
        # rounding the bias moved up to 0.4 % of W4A4 voxels; float biases keep the file
        # equal to the fake-quant model (measured |diff| ~1e-8)
        "QuantizeBias": requantize,
    }
    with quiet_library_output():
        quantizer = QDQQuantizer(
            model,
            False,  # per-channel comes from the overrides' axis
            False,  # reduce_range: the harness's grids, never 7-bit
            QuantType.QInt8,
            QuantType.QUInt8,
            TensorsData(CalibrationMethod.MinMax, ranges),
            names,
            [],
            sorted(op_types),
            options,
        )
        return quantizer.quantize_model()


def export_qdq(
    qmodel: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    opset: int | None = None,
    weight_dtype: str = "int8",
    int4_weights: bool = True,
    strict: bool = False,
    output_batches: Iterable[torch.Tensor] | None = None,
) -> ExportReport:
    """Write ``qmodel`` as an ONNX QDQ model with its own calibrated scales and zero points.

    Args:
        qmodel: a calibrated model from ``benchmark.quant.quantize`` (static ranges).
        example: ``[B, C, *roi]`` input of the size the model runs at.
        path: destination ``.onnx`` file.
        opset: ONNX opset; ``None``: 21 when int4/uint4 tensors are written, else 18.
        weight_dtype: ``int8`` or ``uint8`` container of the weight codes (see the module
            docstring: ``uint8`` for ONNX Runtime on CPUs without VNNI).
        int4_weights: 4-bit weights as ONNX int4/uint4 rather than in the 8-bit container.
        strict: refuse (raise) when any quantized layer would stay float.
        output_batches: when given, quantize each exported layer's output (ONNX Runtime's
            ``QLinearConv`` needs it) with ranges observed on these batches.

    Returns:
        The :class:`ExportReport`.

    Raises:
        QDQExportError: nothing to export, ``strict`` with layers kept float, or an opset
            below 21 with 4-bit tensors.
    """
    plans = plan_layers(qmodel, weight_dtype, int4_weights)
    if not any(plan.exported for plan in plans):
        reasons = sorted({p.reason for p in plans}) or ["no quantized layer"]
        raise QDQExportError(f"no layer of this model can be exported with its scales: {reasons}")
    four_bit = any("4" in (p.activation.dtype + p.weight.dtype) for p in plans if p.exported)
    opset = opset or (21 if four_bit else 18)
    if four_bit and opset < 21:
        raise QDQExportError(f"4-bit Q/DQ needs opset >= 21, got opset={opset}")
    network = _float_network(qmodel)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(network, Path(tmp) / "fp32.onnx", example, opset=opset)
        from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

        model = load_model_with_shape_infer(fp32)
    found = node_modules(model.graph, network)
    inits = {init.name: init for init in model.graph.initializer}
    overrides, ranges, nodes, refused = _layer_overrides(plans, found, inits, network)
    kept = [p for p in plans if not p.exported or p.module in refused]
    if strict and kept:
        listed = "; ".join(f"{p.module}: {refused.get(p.module, p.reason)}" for p in kept[:5])
        raise QDQExportError(
            f"{len(kept)} quantized layer(s) cannot be exported with their scales ({listed}); "
            "use a static per-tensor integer scheme or strict=False to keep them float"
        )
    if not nodes:
        raise QDQExportError(f"no exportable layer is in the exported graph: {refused}")
    inputs = dict(ranges)
    if output_batches is not None:
        _output_overrides(qmodel, nodes, output_batches, found, overrides, ranges)
    op_types = {n.op_type for entries in found.values() for n in entries}
    model = _quantize(model, nodes, overrides, ranges, op_types, output_batches is not None)
    by_plan = {p.module: p for p in plans}
    for module, entries in nodes.items():
        for node_name, transposed in entries:
            write_codes(model, node_name, by_plan[module].weight, transposed)
    exported = {name for entries in nodes.values() for name, _ in entries}
    restore_float_consumers(model, set(inputs), exported)
    check_quantized(model, exported)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    layers = tuple(_layer_row(p, nodes, refused) for p in plans)
    return ExportReport(path, opset, layers, output_batches is not None)


def _layer_row(plan: LayerPlan, nodes: dict, refused: dict[str, str]) -> LayerExport:
    exported = plan.module in nodes
    return LayerExport(
        module=plan.module,
        op_type=plan.op_type,
        onnx_nodes=tuple(name for name, _ in nodes.get(plan.module, [])),
        status="qdq" if exported else "float",
        reason="" if exported else refused.get(plan.module, plan.reason),
        w_bits=plan.w_bits,
        a_bits=plan.a_bits,
        activation_dtype=plan.activation.dtype if exported else None,
        weight_dtype=plan.weight.dtype if exported else None,
        weight_axis=plan.weight.axis if exported else None,
    )
