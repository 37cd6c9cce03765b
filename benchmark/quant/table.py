"""``quantization_table``: every compute op of a quantized model, quantized or left in float.

Rows come from three sources, in registration order: the quantized modules' own rows (layers,
attention matmuls, functional attention calls), the candidates ``quantize`` kept in float32
(with the reason), and, given an example input, every other matmul-like op a traced forward
runs on operands that no quantizer passed (:mod:`benchmark.quant.tracing`): a functional
convolution, attention left in float, a layer of a type without a quantized counterpart.
:func:`quant_table_hash` condenses a table into the short id stored with each result row.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import torch
from torch import nn

from benchmark.quant.algorithms import float_reference
from benchmark.quant.functional_attention import QuantFunctionalAttention
from benchmark.quant.handlers import QUANTIZED, handlers
from benchmark.quant.ranges import spec_of
from benchmark.quant.spec import QuantSpec
from benchmark.quant.tracing import Op, Trace, trace

__all__ = ["TABLE_COLUMNS", "quantization_table", "quant_table_hash"]

#: columns of :func:`quantization_table`
TABLE_COLUMNS = [
    "module",
    "op_type",
    "weight_scheme",
    "activation_scheme",
    "w_bits",
    "a_bits",
    "execution",
    "calibrated",
]


def quantization_table(qmodel: nn.Module, example: torch.Tensor | None = None) -> pd.DataFrame:
    """Which module is quantized how: one row per layer, attention matmul or float op.

    Columns (:data:`TABLE_COLUMNS`): ``module``, ``op_type``, ``weight_scheme``,
    ``activation_scheme`` (``granularity/static|dynamic/mapping``), ``w_bits``, ``a_bits``,
    ``execution`` (``integer-factorizable``, ``integer-factorizable per kernel position``,
    ``simulation-only``, ``float32 (<reason>)`` for ops left in float32, ``fp16``/``bf16``/
    ``fp32 cast``), ``calibrated``. Rows follow registration order.

    Without ``example`` the rows are the quantized modules and the skipped candidates. With
    ``example`` (an input of the inference shape) one forward is traced and every other
    matmul-like op it runs (convolutions, linear maps, matmuls, einsums, attention) whose
    operands did not all pass a quantizer gets a row ``<module>.<op>_<i>`` with the reason.
    """
    spec = spec_of(qmodel)
    flow = None
    if example is not None:
        with float_reference(qmodel):
            flow = trace(qmodel, example)
    if spec.is_float:
        return _cast_table(qmodel, spec, flow)
    skipped: dict[str, list[tuple]] = {}
    for entry in qmodel.quant_skipped:
        skipped.setdefault(entry[0], []).append(entry)
    rows = []
    for name, module in qmodel.named_modules():
        if isinstance(module, QUANTIZED):
            rows.extend(module.quant_rows(name))
        for _, row, op_type, reason in skipped.get(name, ()):
            rows.append({"module": row, "op_type": op_type, "execution": f"float32 ({reason})"})
        if flow is not None and not any(row == name for _, row, _, _ in skipped.get(name, ())):
            rows.extend(_float_op_rows(qmodel, spec, name, module, flow, rows))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _float_op_rows(qmodel, spec, name: str, module: nn.Module, flow: Trace, rows) -> list[dict]:
    """Rows of the traced ops of ``module`` that ran on operands no quantizer passed."""
    listed = {row["module"] for row in rows}
    out = {}
    for ops in flow.calls.get(name, ()):
        for op in ops:
            row = f"{name}.{op.label}" if name else op.label
            if op.quantized or row in listed or row in out:
                continue
            out[row] = {
                "module": row,
                "op_type": f"{_float_class(module).__name__}.{op.op}",
                "execution": f"float32 ({_float_reason(qmodel, spec, module, op)})",
            }
    return list(out.values())


def _float_reason(qmodel: nn.Module, spec: QuantSpec, module: nn.Module, op: Op) -> str:
    attention = op.functional_attention or op.op == "multi_head_attention_forward"
    if attention and not spec.quantize_attention:
        return "quantize_attention=False"
    if op.functional_attention and not qmodel.quant_traced:
        return "functional attention: pass quantize(..., example=) to quantize it"
    if isinstance(module, QUANTIZED):
        return "operand not quantized"
    return f"no quantized counterpart of {type(module).__name__}"


def _float_class(module: nn.Module) -> type:
    if isinstance(module, QuantFunctionalAttention):
        return module.float_class
    return type(module)


def _cast_table(qmodel: nn.Module, spec: QuantSpec, flow: Trace | None) -> pd.DataFrame:
    """fp32/fp16/bf16: every handled module, and with a trace every other matmul-like op."""
    handled = handlers(spec.quantize_attention)
    rows = []
    for name, module in qmodel.named_modules():
        cast = {
            "weight_scheme": spec.precision,
            "activation_scheme": spec.precision,
            "execution": f"{spec.precision} cast",
            "calibrated": True,
        }
        if type(module) in handled:
            rows.append({"module": name, "op_type": type(module).__name__, **cast})
            continue
        labels = {op.label: op for ops in (flow.calls.get(name, ()) if flow else ()) for op in ops}
        for label, op in labels.items():
            row = f"{name}.{label}" if name else label
            rows.append({"module": row, "op_type": f"{type(module).__name__}.{op.op}", **cast})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def quant_table_hash(table: pd.DataFrame) -> str:
    """Short stable hash of a :func:`quantization_table` (its rows in order, missing cells as
    null): equal hashes mean the same ops were quantized the same way."""
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    payload = json.dumps(records, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]
