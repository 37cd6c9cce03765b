"""ONNX graph work of the own-scales QDQ export: module -> node mapping, codes, checks, read-back.

The dynamo exporter records on every node the module path that produced it
(``pkg.torch.onnx.name_scopes``); that path, resolved through every alias of the module
(nnU-Net holds each convolution both as ``conv`` and as ``all_modules.0``) to the quantized
model's own name, maps layers to nodes. Each mapping is checked: the node's weight initializer
must hold the layer's weight (transposed for ``MatMul``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

from benchmark.deploy.qdq_plan import ONNX_OP_TYPES, QParams

__all__ = [
    "QDQExportError",
    "node_modules",
    "weight_layout",
    "write_codes",
    "restore_float_consumers",
    "check_quantized",
    "read_qdq_params",
]

_SCOPES = "pkg.torch.onnx.name_scopes"
_WRAPPER = "net"  # the attribute under which export.export_onnx wraps the network
COMPUTE_OPS = frozenset(op for ops in ONNX_OP_TYPES.values() for op in ops)


class QDQExportError(ValueError):
    """The model cannot be exported with its own scales (the message says why)."""


def node_modules(graph: onnx.GraphProto, network: nn.Module) -> dict[str, list[onnx.NodeProto]]:
    """Canonical module name -> the compute nodes it produced.

    Raises:
        QDQExportError: a compute node lacks the dynamo exporter's module scopes.
    """
    canonical = {id(m): n for n, m in network.named_modules()}
    aliases = {n: canonical[id(m)] for n, m in network.named_modules(remove_duplicate=False)}
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        if _SCOPES not in meta:
            raise QDQExportError(
                f"ONNX node {node.name} has no {_SCOPES} metadata; export with exporter='dynamo'"
            )
        scopes = ast.literal_eval(meta[_SCOPES])
        scope = scopes[-2] if len(scopes) >= 2 else ""
        scope = scope[len(_WRAPPER) + 1 :] if scope.startswith(_WRAPPER + ".") else scope
        if scope in aliases:
            found.setdefault(aliases[scope], []).append(node)
    return found


def weight_layout(node: onnx.NodeProto, inits: dict, layer: nn.Module) -> tuple[str, bool]:
    """The node's weight initializer and whether it stores the torch weight transposed.

    Raises:
        QDQExportError: the weight is not an initializer or does not hold the layer's weight.
    """
    name = node.input[1]
    if name not in inits:
        raise QDQExportError(f"{node.name}: weight input {name!r} is not an initializer")
    transposed = node.op_type == "MatMul" or (
        node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute)
    )
    stored = numpy_helper.to_array(inits[name])
    weight = layer.weight.detach().numpy()
    expected = weight.T if transposed else weight
    if stored.shape != expected.shape or not np.allclose(stored, expected, rtol=0, atol=1e-6):
        raise QDQExportError(
            f"{node.name}: weight {name!r} {stored.shape} is not the layer's weight "
            f"{tuple(weight.shape)}; the module -> node mapping is wrong"
        )
    return name, transposed


def write_codes(model: onnx.ModelProto, node_name: str, q: QParams, transposed: bool) -> None:
    """Replace the quantized weight initializer that ``node_name`` dequantizes by the codes."""
    producer = {out: n for n in model.graph.node for out in n.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    dq = producer.get(node.input[1])
    if dq is None or dq.op_type != "DequantizeLinear":
        raise QDQExportError(f"{node_name}: its weight is not dequantized after quantization")
    codes = q.codes.T if transposed else q.codes
    for index, init in enumerate(model.graph.initializer):
        if init.name == dq.input[0]:
            if list(init.dims) != list(codes.shape):
                raise QDQExportError(f"{init.name}: shape {list(init.dims)} != {codes.shape}")
            dtype = getattr(onnx.TensorProto, q.dtype.upper())
            values = codes.reshape(-1).tolist()
            tensor = onnx.helper.make_tensor(init.name, dtype, codes.shape, values)
            model.graph.initializer[index].CopyFrom(tensor)
            return
    raise QDQExportError(f"{node_name}: no quantized weight initializer {dq.input[0]!r}")


def restore_float_consumers(model: onnx.ModelProto, inputs: set[str], keep: set[str]) -> None:
    """Float consumers of a quantized layer input read the float tensor again.

    ONNX Runtime's quantizer routes every consumer of a quantized tensor through its
    DequantizeLinear; in the harness only the quantized layer sees the quantized value (a skip
    connection or a float layer reading the same tensor sees it unquantized).
    """
    producer = {out: n for n in model.graph.node for out in n.output}
    float_of = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in producer:
            quant = producer[node.input[0]]
            if quant.op_type == "QuantizeLinear" and quant.input[0] in inputs:
                float_of[node.output[0]] = quant.input[0]
    for node in model.graph.node:
        if node.name in keep or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            if name in float_of:
                node.input[index] = float_of[name]


def check_quantized(model: onnx.ModelProto, exported: set[str]) -> None:
    """Exactly the exported compute nodes read a dequantized input and weight.

    Raises:
        QDQExportError: an exported node lacks a Q/DQ operand, or another node gained one.
    """
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        kinds = [producer.get(name) for name in node.input[:2]]
        dequantized = kinds == ["DequantizeLinear", "DequantizeLinear"]
        if dequantized != (node.name in exported):
            state = "exported" if node.name in exported else "float"
            raise QDQExportError(f"{node.name} ({state}) reads {kinds} after quantization")


def read_qdq_params(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Scales, zero points and weight codes that the file's compute nodes read, by node name.

    For each node whose first two inputs come from DequantizeLinear: ``input_scale``,
    ``input_zero_point``, ``weight_scale``, ``weight_zero_point``, ``weight_codes`` (as
    stored, in the ONNX layout), read from the initializers.
    """
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    params = {}
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        dqs = [producer.get(name) for name in node.input[:2]]
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in dqs):
            continue
        act, weight = dqs
        params[node.name] = {
            "input_scale": inits[act.input[1]],
            "input_zero_point": inits[act.input[2]],
            "weight_scale": inits[weight.input[1]],
            "weight_zero_point": inits[weight.input[2]],
            "weight_codes": inits[weight.input[0]],
        }
    return params
