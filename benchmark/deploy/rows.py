"""Deployment measurements as tidy result rows (DESIGN.md schema plus deployment columns).

Extra columns, beside the schema's: ``task`` (``deploy``), ``backend`` (``torch_fp32``,
``torch_fakequant`` and the names of ``benchmark.deploy.backends``), ``policy`` (the layer
policy of an INT8 backend's row), ``layer`` (per-layer rows), ``reference`` (``label``,
``fp32``, ``fakequant`` for agreement rows), ``batch_size``, ``provider``, ``threads``,
``hardware`` (latency rows), ``op_type``/``op_kind`` (operator report rows) and ``note`` (gate
reasons, layer choices, skipped steps, fallback reasons). Rows that are not about a case or
class (latency, size, operators, gate) leave ``case``/``class`` missing.

Metric ids written here: ``latency_mean_ms``, ``latency_p50_ms``, ``latency_p90_ms``,
``latency_p99_ms``, ``throughput`` (patches/s), ``size_mb``, ``export_max_abs_diff``,
``op_count``, ``op_time_ms`` and ``op_time_share`` (per ``op_type``, batch 1), ``integer_ops``,
``float_compute_ops``, ``quantize_ops``, ``conv_ops``, ``integer_conv_fraction``,
``gate_accepted`` (1/0), ``batch_consistent`` (1/0), ``batch_mismatch_fraction``,
``batch_max_abs_diff``, ``backend_available`` (0 with the reason in ``note`` for a backend that
was skipped, e.g. CUDA without a GPU); per layer (``layer``, ``op_type``, ``policy``):
``layer_int8`` (the policy's choice, reason in ``note``), ``layer_executed_int8`` (an integer
kernel really runs it), ``layer_float_ms`` / ``layer_int8_ms`` (the layer alone, measured for
``latency_aware``); per compared policy (batch 1): ``policy_latency_p50_ms``,
``policy_speedup`` (``ort_fp32`` p50 of the same block / p50), ``policy_int8_conv_fraction``;
run-time selector: ``selector_int8_calls``, ``selector_calls``, ``selector_fallback`` (1 per
switch, reason in ``note``), ``selector_max_disagreement``; agreement metrics come from
:mod:`benchmark.deploy.agreement`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from benchmark.deploy.gate import BatchConsistency, GateDecision
from benchmark.deploy.latency import LatencyStats
from benchmark.deploy.layer_policy import LayerChoice

__all__ = [
    "DEPLOY_COLUMNS",
    "latency_rows",
    "size_row",
    "op_rows",
    "op_time_rows",
    "gate_rows",
    "layer_rows",
    "to_frame",
]

#: Deployment columns added to the schema's (filled with NA where they do not apply).
DEPLOY_COLUMNS = (
    "task",
    "backend",
    "policy",
    "layer",
    "reference",
    "batch_size",
    "provider",
    "threads",
    "hardware",
    "op_type",
    "op_kind",
    "note",
)


def latency_rows(
    backend: str, stats: LatencyStats, provider: str, threads: int, hardware: str
) -> list[dict[str, Any]]:
    """One row per latency statistic and the throughput of one backend at one batch size."""
    return [
        {
            "backend": backend,
            "metric": metric,
            "value": value,
            "batch_size": stats.batch_size,
            "provider": provider,
            "threads": threads,
            "hardware": hardware,
            "note": f"warmup={stats.warmup} runs={stats.runs}",
        }
        for metric, value in stats.as_metrics().items()
    ]


def size_row(backend: str, size_mb: float) -> dict[str, Any]:
    """Model size on disk in MB (10^6 bytes)."""
    return {"backend": backend, "metric": "size_mb", "value": float(size_mb)}


def op_rows(
    backend: str, counts: pd.DataFrame, summary: Mapping[str, float], provider: str
) -> list[dict[str, Any]]:
    """Operator report: one ``op_count`` row per executed op type, then the totals."""
    rows = [
        {
            "backend": backend,
            "metric": "op_count",
            "value": float(row["count"]),
            "op_type": row["op_type"],
            "op_kind": row["kind"],
            "provider": provider,
        }
        for _, row in counts.iterrows()
    ]
    rows += [
        {"backend": backend, "metric": name, "value": float(value), "provider": provider}
        for name, value in summary.items()
    ]
    return rows


def op_time_rows(backend: str, times: pd.DataFrame, provider: str) -> list[dict[str, Any]]:
    """Profiled time per run (ms) and share of node time for each op type, at batch 1."""
    return [
        {
            "backend": backend,
            "metric": metric,
            "value": float(row[column]),
            "op_type": row["op_type"],
            "provider": provider,
            "batch_size": 1,
        }
        for _, row in times.iterrows()
        for metric, column in (("op_time_ms", "time_ms"), ("op_time_share", "share"))
    ]


def layer_rows(
    backend: str,
    policy: str | None,
    choices: Iterable[LayerChoice],
    executed: Mapping[str, bool] | None,
) -> list[dict[str, Any]]:
    """Per layer: the policy's choice, what executes (when known), the measured times."""
    rows = []
    for c in choices:
        common = {"backend": backend, "policy": policy, "layer": c.layer, "op_type": c.shape.op}
        rows.append({**common, "metric": "layer_int8", "value": float(c.int8), "note": c.reason})
        if executed is not None and c.layer in executed:
            ran = executed[c.layer]
            note = "integer kernel" if ran else "float kernel"
            if c.int8 and not ran:
                note = "float kernel: this runtime has no integer kernel for it"
            rows.append(
                {**common, "metric": "layer_executed_int8", "value": float(ran), "note": note}
            )
        if math.isfinite(c.float_ms):
            rows.append(
                {**common, "metric": "layer_float_ms", "value": c.float_ms, "note": c.shape.key}
            )
            rows.append(
                {**common, "metric": "layer_int8_ms", "value": c.int8_ms, "note": c.shape.key}
            )
    return rows


def gate_rows(
    backend: str, decision: GateDecision, batch: BatchConsistency
) -> list[dict[str, Any]]:
    """The gate's decision and the batch-consistency measurements behind it."""
    note = "accepted" if decision.accepted else "; ".join(decision.reasons)
    values = {
        "gate_accepted": float(decision.accepted),
        "batch_consistent": float(batch.consistent),
        "batch_mismatch_fraction": batch.mismatch_fraction,
        "batch_max_abs_diff": batch.max_abs_diff,
    }
    return [
        {
            "backend": backend,
            "metric": metric,
            "value": float(value),
            "note": note,
        }
        for metric, value in values.items()
    ]


def to_frame(rows: Iterable[Mapping[str, Any]], identity: Mapping[str, Any]) -> pd.DataFrame:
    """Rows plus the run's identity columns, with every schema and deployment column present.

    Args:
        rows: measurement dicts (``metric``, ``value`` and any of the columns above).
        identity: columns shared by every row of the run (experiment, run_id, model, the
            quantization point, provenance, ...); a row's own value wins over the identity's.
    """
    from benchmark.results import ROW_COLUMNS

    records = [{**identity, **row} for row in rows]
    frame = pd.DataFrame.from_records(records)
    for column in (*ROW_COLUMNS, *DEPLOY_COLUMNS):
        if column not in frame.columns:
            frame[column] = None
    frame["task"] = "deploy"
    frame["value"] = frame["value"].astype(float)
    frame["tolerance_mm"] = (
        frame["tolerance_mm"]
        .map(lambda v: float("nan") if v is None or (isinstance(v, float) and math.isnan(v)) else v)
        .astype(float)
    )
    for column in ("class", "batch_size", "threads"):
        frame[column] = pd.array(frame[column], dtype="Int64")
    return frame
