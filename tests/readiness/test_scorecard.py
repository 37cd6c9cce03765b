"""Readiness scorecard from a small synthetic tidy table: scores follow the stated rules."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmark.readiness import (
    build_scorecard,
    deploy_evidence,
    sweep_evidence,
    to_html,
    to_markdown,
)
from benchmark.readiness.__main__ import main
from benchmark.readiness.scorecard import score_by_thresholds, speed_text

FP32 = {1: 0.90, 2: 0.80, 3: 0.70}
CASES = ["c0", "c1", "c2", "c3"]


def _point(precision, granularity="per_channel_token", observer="minmax", calib_n=16):
    return {
        "precision": precision,
        "granularity": granularity,
        "observer": observer,
        "algorithm": "none",
        "calib_n": calib_n,
    }


def _sweep_rows(point, drop_by_class, model="tiny"):
    """Evaluation rows whose per-class mean DSC is FP32 x (1 - drop)."""
    return [
        {
            "task": "evaluate",
            "model": model,
            "dataset": "phantom",
            "case": case,
            "class": cls,
            "class_name": f"organ{cls}",
            "metric": "dsc",
            "reference": "label",
            "value": FP32[cls] * (1 - drop_by_class.get(cls, 0.0)),
            **point,
        }
        for case in CASES
        for cls in FP32
    ]


def _deploy_rows(static_drop, accepted, consistent=True, faithful=0.99, model="tiny"):
    base = {
        "task": "deploy",
        "model": model,
        "run_id": "deploy-tiny",
        "created": "2026-01-01T00:00:00",
        **_point("w8a8"),
    }
    rows = []
    for backend, drop in (
        ("torch_fp32", 0.0),
        ("torch_fakequant", static_drop),
        ("ort_int8_static", static_drop),
    ):
        for case in CASES:
            for cls, value in FP32.items():
                rows.append(
                    {
                        **base,
                        "backend": backend,
                        "case": case,
                        "class": cls,
                        "metric": "dsc",
                        "value": value * (1 - drop),
                    }
                )
                if backend == "ort_int8_static":
                    rows.append(
                        {
                            **base,
                            "backend": backend,
                            "case": case,
                            "class": cls,
                            "metric": "dsc_vs_fakequant",
                            "value": faithful,
                        }
                    )
                    rows.append(
                        {
                            **base,
                            "backend": backend,
                            "case": case,
                            "class": cls,
                            "metric": "dsc_vs_fp32",
                            "value": 0.97,
                        }
                    )
    latency = {
        ("ort_fp32", 1): 10.0,
        ("ort_fp32", 4): 36.0,
        ("ort_int8_static", 1): 6.0,
        ("ort_int8_static", 4): 20.0,
    }
    for (backend, batch), p50 in latency.items():
        rows.append(
            {
                **base,
                "backend": backend,
                "batch_size": batch,
                "metric": "latency_p50_ms",
                "value": p50,
                "hardware": "test cpu",
            }
        )
        rows.append(
            {
                **base,
                "backend": backend,
                "batch_size": batch,
                "metric": "throughput",
                "value": batch * 1000 / p50,
                "hardware": "test cpu",
            }
        )
    rows += [
        {**base, "backend": "ort_fp32", "metric": "size_mb", "value": 4.0},
        {**base, "backend": "ort_int8_static", "metric": "size_mb", "value": 1.1},
        {**base, "backend": "ort_int8_static", "metric": "integer_conv_fraction", "value": 0.75},
        {
            **base,
            "backend": "ort_int8_static",
            "metric": "op_count",
            "value": 3.0,
            "op_type": "QLinearConv",
            "op_kind": "integer",
        },
        {
            **base,
            "backend": "ort_int8_static",
            "metric": "op_count",
            "value": 1.0,
            "op_type": "ConvTranspose",
            "op_kind": "float_compute",
        },
        {
            **base,
            "backend": "ort_int8_static",
            "metric": "gate_accepted",
            "value": float(accepted),
            "note": "accepted" if accepted else "mean DSC drop 3.00% > tolerance 1.00%",
        },
        {
            **base,
            "backend": "ort_int8_static",
            "metric": "batch_consistent",
            "value": float(consistent),
        },
    ]
    return rows


def _table(*row_lists):
    frame = pd.DataFrame([r for rows in row_lists for r in rows])
    frame["class"] = pd.array(frame["class"], dtype="Int64")
    return frame


@pytest.fixture
def passing():
    return _table(
        _sweep_rows(_point("fp32", "none", "none", 0), {}),
        _sweep_rows(_point("w8a8"), {1: 0.005, 2: 0.005, 3: 0.005}),
        _sweep_rows(_point("w8a8", observer="percentile"), {1: 0.013, 2: 0.013, 3: 0.013}),
        _sweep_rows(_point("w4a4", "per_tensor"), {1: 0.1, 2: 0.2, 3: 0.3}),
        _deploy_rows(static_drop=0.004, accepted=True),
    )


def test_thresholds_rule():
    drops = (0.01, 0.02, 0.05, 0.10)
    assert [score_by_thresholds(d, drops, False) for d in (0.0, 0.01, 0.015, 0.04, 0.08, 0.2)] == [
        5,
        5,
        4,
        3,
        2,
        1,
    ]
    assert [score_by_thresholds(s, (2, 1.5, 1.1, 0.9), True) for s in (3, 1.6, 1.2, 1.0, 0.5)] == [
        5,
        4,
        3,
        2,
        1,
    ]


def test_evidence_derives_drops_and_speedups(passing):
    sweep = sweep_evidence(passing, "tiny")
    best = sweep.best("w8a8")
    assert best["observer"] == "minmax" and best["rel_drop"] == pytest.approx(0.005)
    assert sweep.fp32_dsc == pytest.approx(0.8)
    w4 = sweep.best("w4a4")
    assert w4["worst_class"] == 3 and w4["worst_class_drop"] == pytest.approx(0.3)
    deploy = deploy_evidence(passing, "tiny")
    assert deploy.speedup == {1: pytest.approx(10 / 6), 4: pytest.approx(1.8)}
    assert deploy.float_ops["ort_int8_static"] == ["ConvTranspose"]
    assert deploy.rel_drop() == pytest.approx(0.004)


def test_passing_model_scores_follow_the_rules(passing):
    card = build_scorecard(
        "tiny", sweep_evidence(passing, "tiny"), deploy_evidence(passing, "tiny")
    )
    scores = {c.name: c.score for c in card.criteria}
    assert scores == {
        "Performance sensitivity": 5,  # best W8A8 drop 0.5 % <= 1 %
        "Calibration data": 4,  # spread 1.3 % - 0.5 % = 0.8 pp: <= 1 pp
        # speed-up 1.8x -> 4, size 1.1/4.0 = 0.275 -> 5, floor(4.5) = 4
        "Deployment constraints": 4,
        "Validation": 5,  # accepted, consistent, fake-quant agreement 0.99 >= 0.98
        "Effort": 5,  # deployed PTQ passes the gate
    }
    assert card.overall_percent == pytest.approx(100 * 23 / 25)
    assert card.recommendation.startswith("Proceed with W8A8 PTQ per-channel")
    assert "ConvTranspose" in card.notes[0]
    deploy_risks = card.risks[card.risks["source"] == "deploy ort_int8_static"]
    assert len(deploy_risks) == 3


def test_rejected_deployment_and_risky_class():
    results = _table(
        _sweep_rows(_point("fp32", "none", "none", 0), {}),
        _sweep_rows(_point("w8a8"), {1: 0.0, 2: 0.01, 3: 0.08}),
        _deploy_rows(static_drop=0.03, accepted=False, consistent=False),
    )
    card = build_scorecard(
        "tiny", sweep_evidence(results, "tiny"), deploy_evidence(results, "tiny")
    )
    scores = {c.name: c.score for c in card.criteria}
    # mean drop (0 + 0.008 + 0.056) / 2.4 = 2.67 % -> 3; one W8A8 point: calibration not measured
    assert scores["Performance sensitivity"] == 3
    assert scores["Calibration data"] is None
    assert scores["Validation"] == 2  # rejected, drop 3 % <= 5 x 1 %
    assert scores["Effort"] == 3  # best W8A8 drop 2.67 % <= 5 %
    # the unmeasured criterion counts 0: 12 of 25 points
    assert card.overall_percent == pytest.approx(100 * (3 + 4 + 2 + 3) / 25)
    assert card.recommendation.startswith("Consider QAT")
    sweep_risks = card.risks[card.risks["source"].str.startswith("sweep")]
    assert sweep_risks.iloc[0]["class"] == 3
    assert sweep_risks.iloc[0]["rel_drop"] == pytest.approx(0.08)
    assert list(sweep_risks["class"]) == [3, 2]  # class 1 lost nothing: not a risk


def test_without_deployment_run_criteria_are_not_measured(passing):
    sweep_only = passing[passing["task"] != "deploy"]
    card = build_scorecard(
        "tiny", sweep_evidence(sweep_only, "tiny"), deploy_evidence(sweep_only, "tiny")
    )
    unscored = [c.name for c in card.criteria if c.score is None]
    assert unscored == ["Deployment constraints", "Validation"]
    assert card.criteria[2].measured["speed-up"] == "not measured"
    text = to_markdown(card)
    assert "not measured" in text and "only 3 of 5 criteria scored" in text
    assert "(incomplete)" in text and "## What to run" in text
    assert "python -m benchmark.run experiment=deploy_smoke model=tiny" in text


def test_cli_writes_markdown_and_html(passing, tmp_path):
    results = tmp_path / "results.parquet"
    passing.assign(class_name=passing["class_name"].replace("organ3", "<b>x</b>")).to_parquet(
        results
    )
    assert main([str(results), "--model", "tiny", "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "readiness_tiny.md").read_text()
    page = (tmp_path / "out" / "readiness_tiny.html").read_text()
    assert "# Quantization readiness: tiny" in md and "**Overall: 92%**" in md
    assert "Rule: best W8A8 relative DSC drop" in md
    assert page.startswith("<!DOCTYPE html>")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert main([str(results), "--model", "nope", "--out", str(tmp_path)]) == 2


def test_html_matches_markdown_scores(passing):
    card = build_scorecard(
        "tiny", sweep_evidence(passing, "tiny"), deploy_evidence(passing, "tiny")
    )
    page = to_html(card)
    for criterion in card.criteria:
        assert f"{criterion.name}: {criterion.score}/5" in page


def test_deployment_alone_scores_deployment_validation_and_effort():
    """Without a sweep the deployed model's own drop drives effort and the recommendation."""
    results = _table(_deploy_rows(static_drop=0.005, accepted=False, consistent=False))
    card = build_scorecard(
        "tiny", sweep_evidence(results, "tiny"), deploy_evidence(results, "tiny")
    )
    scores = {c.name: c.score for c in card.criteria}
    assert scores["Performance sensitivity"] is None and scores["Calibration data"] is None
    assert scores["Validation"] == 3  # rejected, drop 0.5 % <= tol
    assert scores["Effort"] == 4  # deployed drop 0.5 % <= tol
    assert card.recommendation.startswith("Keep FP32 for now")
    assert "incomplete: Performance sensitivity, Calibration data not measured" in (
        card.recommendation
    )
    assert "experiment_name=sweep_tiny" in card.criteria[0].to_measure


def test_cli_errors_name_the_problem(passing, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main([str(tmp_path / "missing"), "--out", out]) == 2
    assert "no results at" in capsys.readouterr().err
    not_tidy = tmp_path / "other.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(not_tidy)
    assert main([str(not_tidy), "--out", out]) == 2
    assert "not a tidy results file" in capsys.readouterr().err
    results = tmp_path / "results.parquet"
    passing.to_parquet(results)
    assert main([str(results), "--model", "nope", "--out", out]) == 2
    assert "no rows for model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_runs_of_one_point_on_different_cases_are_refused(passing, tmp_path, capsys):
    # A 2-case smoke sweep beside an 8-case study would be averaged into one mean: refused,
    # naming the point and each experiment's cases; the same cases twice are accepted.
    study = passing.assign(experiment="study", run_id="a")
    smoke = study[study["case"] == CASES[0]].assign(experiment="smoke", run_id="b")
    assert sweep_evidence(pd.concat([study, study.assign(run_id="c")]), "tiny").configs.shape[0]
    mixed = tmp_path / "results.parquet"
    pd.concat([study, smoke]).to_parquet(mixed)
    assert main([str(mixed), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"study: {len(CASES)} cases" in err and "smoke: 1 cases" in err and "fp32" in err
    assert len(err.strip().splitlines()) == 1


def _overall(results):
    return build_scorecard(
        "tiny", sweep_evidence(results, "tiny"), deploy_evidence(results, "tiny")
    ).overall_percent


def test_missing_evidence_never_raises_the_overall_score(passing):
    """Removing evidence of any kind can only lower the overall score, never raise it."""
    full = _overall(passing)
    sweep_only = passing[passing["task"] != "deploy"]
    no_calibration = passing[passing["observer"] != "percentile"]
    deploy_only = passing[passing["task"] == "deploy"]
    for partial in (sweep_only, no_calibration, deploy_only):
        assert _overall(partial) <= full
    # a sweep whose W8A8 point is good scores 2 criteria at 9 of 10: 36 %, not 90 %
    weaker = _table(
        _sweep_rows(_point("fp32", "none", "none", 0), {}),
        _sweep_rows(_point("w8a8"), {1: 0.012, 2: 0.012, 3: 0.012}),
        _deploy_rows(static_drop=0.012, accepted=True),
    )
    assert _overall(weaker[weaker["task"] != "deploy"]) < _overall(weaker)


def test_no_proceed_without_deployment_and_validation(passing):
    sweep_only = passing[passing["task"] != "deploy"]
    card = build_scorecard("tiny", sweep_evidence(sweep_only, "tiny"), None)
    assert "proceed" not in card.recommendation.lower()
    assert card.recommendation.startswith("No deployment decision yet")
    assert not card.complete and [c.name for c in card.missing] == [
        "Deployment constraints",
        "Validation",
    ]
    text = to_markdown(card)
    assert "**Overall: 52% (incomplete)**" in text  # (5 + 4 + 0 + 0 + 4) / 25
    assert "| Validation | python -m benchmark.run experiment=deploy_smoke model=tiny |" in text
    assert "What to run" in to_html(card)


def test_a_slower_int8_model_is_called_slower(passing):
    slow = passing.copy()
    int8 = (slow["backend"] == "ort_int8_static") & (slow["metric"] == "latency_p50_ms")
    slow.loc[int8, "value"] = slow.loc[int8, "value"] * 3.4  # 20 ms -> 68 ms at batch 4
    card = build_scorecard("tiny", sweep_evidence(slow, "tiny"), deploy_evidence(slow, "tiny"))
    deployment = card.criteria[2]
    assert deployment.measured["static INT8 vs ONNX Runtime FP32 at batch 4"].startswith(
        "1.89x slower"
    )
    assert "1.89x slower" in card.recommendation and "0.53x" not in card.recommendation
    assert speed_text(1.8) == "1.80x faster" and speed_text(0.5) == "2.00x slower"
