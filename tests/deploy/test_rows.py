"""Tidy rows: schema columns present, identity filled, summary derived from the rows."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmark.deploy.gate import BatchConsistency, decide
from benchmark.deploy.latency import LatencyStats
from benchmark.deploy.rows import (
    DEPLOY_COLUMNS,
    gate_rows,
    latency_rows,
    op_rows,
    size_row,
    to_frame,
)
from benchmark.deploy.summary import format_summary, summary_table
from benchmark.results import ROW_COLUMNS


def _stats(batch, p50):
    return LatencyStats(batch, 1, 10, p50, p50, p50 * 1.1, p50 * 1.2, batch * 1000 / p50)


@pytest.fixture
def frame():
    rows = []
    for backend, p50 in (("ort_fp32", 10.0), ("ort_int8_static", 5.0)):
        for batch in (1, 2):
            rows += latency_rows(
                backend, _stats(batch, p50 * batch), "CPUExecutionProvider", 1, "cpu x2"
            )
        rows.append(size_row(backend, 4.0 if backend == "ort_fp32" else 1.0))
        rows.append(
            {
                "backend": backend,
                "case": "c0",
                "class": 1,
                "metric": "dsc",
                "value": 0.8,
                "tolerance_mm": float("nan"),
            }
        )
    counts = pd.DataFrame(
        {
            "op_type": ["QLinearConv", "ConvTranspose"],
            "domain": ["com.microsoft", "ai.onnx"],
            "count": [3, 1],
            "kind": ["integer", "float_compute"],
        }
    )
    rows += op_rows(
        "ort_int8_static", counts, {"integer_conv_fraction": 0.75}, "CPUExecutionProvider"
    )
    batch = BatchConsistency(True, (1, 2, 4), 0.0, 0.0, 1e-4)
    rows += gate_rows("ort_int8_static", decide({1: 0.8}, {1: 0.8}, batch=batch), batch)
    rows.append({"backend": "torch_fp32", "case": "c0", "class": 1, "metric": "dsc", "value": 1.0})
    rows.append(
        {
            "backend": "ort_cuda_fp16",
            "metric": "backend_available",
            "value": 0.0,
            "note": "skipped: no GPU",
        }
    )
    return to_frame(
        rows, {"experiment": "e", "run_id": "r", "model": "tiny", "hardware": "default"}
    )


def test_rows_have_schema_and_deploy_columns(frame):
    assert set(ROW_COLUMNS) | set(DEPLOY_COLUMNS) <= set(frame.columns)
    assert (frame["task"] == "deploy").all() and (frame["run_id"] == "r").all()
    assert str(frame["class"].dtype) == "Int64" and frame["value"].dtype == float
    latency = frame[frame["metric"] == "latency_p50_ms"]
    assert set(latency["batch_size"]) == {1, 2} and (latency["hardware"] == "cpu x2").all()
    assert set(frame.loc[frame["metric"] == "op_count", "op_type"]) == {
        "QLinearConv",
        "ConvTranspose",
    }


def test_summary_table_derives_speedup_and_gate(frame):
    table = summary_table(frame)
    assert table.loc["ort_int8_static", "speedup@b1"] == pytest.approx(2.0)
    assert table.loc["ort_fp32", "speedup@b2"] == pytest.approx(1.0)
    assert table.loc["ort_int8_static", "size_mb"] == 1.0
    assert table.loc["ort_int8_static", "gate"] == "accepted"
    assert table.loc["ort_int8_static", "int_conv_share"] == 0.75
    assert table.loc["ort_int8_static", "dsc_drop_%"] == pytest.approx(20.0)
    assert table.loc["torch_fp32", "dsc_drop_%"] == 0.0
    assert "ort_cuda_fp16" not in table.index
    text = format_summary(frame)
    assert "ort_int8_static: accepted" in text and "ort_cuda_fp16: skipped: no GPU" in text


def test_layer_rows_report_choice_execution_and_measured_times():
    from benchmark.deploy.layer_policy import ConvShape, LayerChoice
    from benchmark.deploy.rows import layer_rows
    from benchmark.deploy.summary import policy_table

    up = ConvShape("ConvTranspose", 8, 8, (2, 2, 2), (2, 2, 2), 1, (4, 4, 4), (0,) * 6)
    choices = [LayerChoice("up", up, True, "policy all", 1.0, 1.5)]
    rows = layer_rows("ort_int8_static", "all", choices, {"up": False})
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["layer_int8"]["value"] == 1.0
    assert by_metric["layer_executed_int8"]["value"] == 0.0
    assert "no integer kernel" in by_metric["layer_executed_int8"]["note"]
    assert (
        by_metric["layer_int8_ms"]["value"] == 1.5 and by_metric["layer_float_ms"]["note"] == up.key
    )
    policy = [
        {"backend": "openvino_int8", "policy": p, "metric": m, "value": v}
        for p, m, v in (
            ("all", "policy_speedup", 2.0),
            ("all", "policy_latency_p50_ms", 5.0),
            ("latency_aware", "policy_speedup", 2.5),
        )
    ]
    table = policy_table(to_frame(policy, {"model": "tiny"}))
    assert table.loc[("openvino_int8", "latency_aware"), "speedup@b1"] == 2.5
    assert table.loc[("openvino_int8", "all"), "p50_ms@b1"] == 5.0
