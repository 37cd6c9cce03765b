"""Which operators really execute after ONNX Runtime's graph optimisation, and in what arithmetic.

A QDQ model only states an intent: ONNX Runtime fuses ``DequantizeLinear -> Conv ->
QuantizeLinear`` into ``QLinearConv`` when the execution provider has an integer kernel for that
case, and otherwise runs the float ``Conv`` on dequantized tensors (INT8 storage, float compute).
The optimized graph that a session writes (``SessionOptions.optimized_model_filepath``) is
therefore the ground truth for "runs in INT8"; this module counts its op types.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import onnx
import pandas as pd

from benchmark.deploy.session import make_session

__all__ = [
    "executed_int8_layers",
    "INTEGER_OPS",
    "FLOAT_COMPUTE_OPS",
    "QUANTIZE_OPS",
    "op_kind",
    "optimized_op_counts",
    "integer_kernel_summary",
]

#: Kernels whose arithmetic is integer (inputs and weights INT8/UINT8, INT32 accumulation).
INTEGER_OPS = frozenset(
    {
        "QLinearConv",
        "ConvInteger",
        "MatMulInteger",
        "QLinearMatMul",
        "QGemm",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QLinearConvTranspose",
        "QLinearAdd",
        "QLinearMul",
        "QLinearConcat",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearLeakyRelu",
        "QLinearSigmoid",
        "QLinearSoftmax",
        "QAttention",
    }
)
#: Float kernels that carry the network's multiply-accumulate work (NCHWc and fused forms too).
FLOAT_COMPUTE_OPS = frozenset(
    {"Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "Attention"}
)
#: Format conversions inserted by quantization (cost time, do no model arithmetic).
QUANTIZE_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ReorderInput", "ReorderOutput"}
)
#: Convolution kernels of every runtime (ONNX Runtime ops, OpenVINO layer types, torch modules);
#: OpenVINO and torch op types carry their precision after a colon (``Convolution:I8``).
_CONV_LIKE = frozenset(
    {
        "Conv",
        "FusedConv",
        "ConvTranspose",
        "QLinearConv",
        "ConvInteger",
        "QLinearConvTranspose",
        "Convolution",
        "Deconvolution",
        "GroupConvolution",
        "Conv3d",
        "ConvTranspose3d",
    }
)


def op_kind(op_type: str) -> str:
    """``integer``, ``float_compute``, ``quantize`` or ``other`` for an ONNX op type."""
    if op_type in INTEGER_OPS:
        return "integer"
    if op_type in FLOAT_COMPUTE_OPS:
        return "float_compute"
    if op_type in QUANTIZE_OPS:
        return "quantize"
    return "other"


def optimized_op_counts(
    model_path: str | Path,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int = 1,
    save_to: str | Path | None = None,
) -> pd.DataFrame:
    """Op types of the graph ONNX Runtime actually executes, with counts and kinds.

    Args:
        model_path: ``.onnx`` model (FP32, QDQ or dynamic INT8).
        providers: execution providers; kernels differ between providers, so report per provider.
        threads: intra-op threads of the inspecting session (does not change the graph).
        save_to: keep the optimized graph here; a temporary file is used when ``None``.

    Returns:
        One row per ``(domain, op_type)``: columns ``op_type``, ``domain``, ``count``, ``kind``
        (see :func:`op_kind`), sorted by kind then count.
    """
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(save_to) if save_to is not None else Path(tmp) / "optimized.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        make_session(model_path, providers=providers, threads=threads, optimized_model_path=target)
        graph = onnx.load(str(target), load_external_data=False).graph
        counts = Counter((node.domain or "ai.onnx", node.op_type) for node in graph.node)
    rows = [
        {"op_type": op, "domain": domain, "count": n, "kind": op_kind(op)}
        for (domain, op), n in counts.items()
    ]
    frame = pd.DataFrame(rows, columns=["op_type", "domain", "count", "kind"])
    return frame.sort_values(["kind", "count", "op_type"], ascending=[True, False, True])


def integer_kernel_summary(counts: pd.DataFrame) -> dict[str, float]:
    """Totals of an :func:`optimized_op_counts` table (or an OpenVINO/torch one of the same form).

    Returns:
        ``integer_ops`` (integer kernels), ``float_compute_ops`` (float Conv/MatMul/...),
        ``quantize_ops``, ``conv_ops`` (all convolution kernels, either arithmetic) and
        ``integer_conv_fraction`` = integer convolutions / all convolutions (NaN if none).
    """
    by_kind = counts.groupby("kind")["count"].sum()
    conv = counts[counts["op_type"].str.split(":").str[0].isin(_CONV_LIKE)]
    conv_total = int(conv["count"].sum())
    conv_int = int(conv.loc[conv["kind"] == "integer", "count"].sum())
    return {
        "integer_ops": float(by_kind.get("integer", 0)),
        "float_compute_ops": float(by_kind.get("float_compute", 0)),
        "quantize_ops": float(by_kind.get("quantize", 0)),
        "conv_ops": float(conv_total),
        "integer_conv_fraction": conv_int / conv_total if conv_total else float("nan"),
    }


def executed_int8_layers(optimized_path: str | Path, layers: Sequence[str]) -> dict[str, bool]:
    """Whether each source convolution node runs in an integer kernel in the optimized graph.

    ONNX Runtime names a fused node after the node it replaces (``node_conv3d_2`` ->
    ``node_conv3d_2_token_9``); a source node counts as integer when a node of that name, or
    that name followed by a non-numeric suffix, is an integer kernel.
    """
    graph = onnx.load(str(optimized_path), load_external_data=False).graph
    executed = [(n.name, n.op_type) for n in graph.node]
    found = {}
    for layer in layers:
        kinds = [
            op_kind(op)
            for name, op in executed
            if (name == layer or name.startswith(layer + "_"))
            and not name[len(layer) + 1 : len(layer) + 2].isdigit()
            and op_kind(op) in ("integer", "float_compute")
        ]
        found[layer] = bool(kinds) and kinds[0] == "integer"
    return found
