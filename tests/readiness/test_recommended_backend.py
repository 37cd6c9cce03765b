"""The deployment criterion and the recommendation use the fastest backend that passed the gate."""

from __future__ import annotations

from benchmark.readiness.evidence import deploy_evidence, sweep_evidence
from benchmark.readiness.scorecard import build_scorecard
from tests.readiness.test_scorecard import _deploy_rows, _point, _sweep_rows, _table


def _with_backend(rows, backend, p50_b4, accepted, size=1.1):
    base = {k: v for k, v in rows[0].items() if k not in ("case", "class", "class_name")}
    base.update(backend=backend, value=None, metric=None)
    extra = [
        {**base, "batch_size": 4, "metric": "latency_p50_ms", "value": p50_b4, "hardware": "cpu"},
        {**base, "metric": "size_mb", "value": size},
        {**base, "metric": "gate_accepted", "value": float(accepted), "note": "accepted"},
        {**base, "metric": "policy_speedup", "policy": "latency_aware", "value": 2.5},
        {**base, "metric": "policy_int8_conv_fraction", "policy": "latency_aware", "value": 0.8},
        {
            **base,
            "metric": "layer_int8",
            "policy": "latency_aware",
            "layer": "stem",
            "op_type": "Conv",
            "value": 0.0,
            "note": "kept float",
        },
        {
            **base,
            "metric": "layer_executed_int8",
            "policy": "latency_aware",
            "layer": "stem",
            "op_type": "Conv",
            "value": 0.0,
        },
    ]
    return rows + extra


def _card(rows):
    results = _table(
        _sweep_rows(_point("fp32", "none", "none", 0), {}),
        _sweep_rows(_point("w8a8"), {1: 0.005, 2: 0.005, 3: 0.005}),
        rows,
    )
    return build_scorecard(
        "tiny", sweep_evidence(results, "tiny"), deploy_evidence(results, "tiny")
    )


def test_the_fastest_accepted_backend_is_recommended_and_scored():
    # ort_fp32 36 ms at batch 4; ort_int8_static 20 ms (1.8x); openvino_int8 9 ms (4x)
    rows = _with_backend(_deploy_rows(0.004, accepted=True), "openvino_int8", 9.0, True)
    card = _card(rows)
    deployment = card.criteria[2]
    assert deployment.measured["recommended backend"] == "openvino_int8 (passed the gate)"
    assert deployment.score == 5  # 4x -> 5, size 1.1 / 4.0 -> 5
    assert "openvino_int8 4.00x faster" in deployment.why
    assert "deploy openvino_int8 (INT8), the fastest backend that passed" in card.recommendation
    assert "latency_aware 2.50x (80.00%)" in "".join(deployment.measured.values())
    assert "0 of 1 INT8; float: stem" in "".join(deployment.measured.values())


def test_a_faster_backend_that_was_rejected_is_not_recommended():
    rows = _with_backend(_deploy_rows(0.004, accepted=True), "openvino_int8", 9.0, False)
    card = _card(rows)
    assert card.criteria[2].measured["recommended backend"].startswith("ort_int8_static")
    assert card.criteria[2].score == 4  # 1.8x -> 4, as for static INT8 alone
    assert "deploy ort_int8_static" in card.recommendation
