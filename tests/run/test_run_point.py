"""run_point and run_job on composed configs with fake lower layers (real metrics, real inference)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmark.config import ConfigError
from benchmark.pipeline.evaluate import FP32_AGREEMENT_METRIC
from benchmark.points.cache import content_digest
from benchmark.quant import QuantSpec, quant_table_hash
from benchmark.results import ROW_COLUMNS, collect, run_done
from benchmark.run import TASKS
from tests.runs import context_of, run_config, run_task


def test_rows_follow_the_schema_and_carry_the_model_config(fake_layers, make_cfg):
    cfg = make_cfg(
        "precision=w8a8", "granularity=per_tensor", "evaluation.probability_metrics=false"
    )
    rows = run_task(cfg)
    assert set(ROW_COLUMNS) <= set(rows.columns)
    scored = rows[rows["metric"] != FP32_AGREEMENT_METRIC]
    # 2 test cases x 2 foreground classes x (dsc, nsd, hd95)
    assert len(scored) == 2 * 2 * 3
    assert set(scored["case"]) == {"c0", "c1"} and set(scored["class"]) == {1, 2}
    assert set(rows["class_name"]) == {"cube", "bar"}
    one = rows.iloc[0]
    assert (one["family"], one["framework"], one["display_name"]) == (
        cfg.model.family,
        cfg.model.framework,
        cfg.model.display_name,
    )
    assert (one["w_bits"], one["a_bits"], one["granularity"], one["calib_n"]) == (
        8,
        8,
        "per_tensor",
        2,
    )
    assert rows["config_hash"].nunique() == 1 and rows["run_id"].iloc[0].endswith(
        rows["config_hash"].iloc[0][:10]
    )
    assert rows["params_m"].iloc[0] == pytest.approx(rows["params_m_counted"].iloc[0])
    assert (rows["inference_s"] > 0).all() and (rows["scoring_s"] > 0).all()


def test_fp32_rows_report_no_quantization_axes(fake_layers, make_cfg, calls):
    rows = run_task(make_cfg("precision=fp32", "granularity=none"))
    assert set(rows["granularity"]) == {"none"} and set(rows["observer"]) == {"none"}
    assert set(rows["calib_n"]) == {0} and set(rows["w_bits"]) == {32}
    assert calls.calibrate == 0
    assert FP32_AGREEMENT_METRIC not in set(rows["metric"])
    assert {"ece", "brier"} <= set(rows["metric"])


def test_calibration_ranges_are_cached_per_spec(fake_layers, make_cfg, calls):
    first = run_task(make_cfg("precision=w4a4", "granularity=adaptive"))
    assert (calls.calibrate, calls.load_ranges) == (1, 0)
    again = run_task(make_cfg("precision=w4a4", "granularity=adaptive"))
    assert (calls.calibrate, calls.load_ranges) == (1, 1)
    # the seconds the calibration took when it was computed, not the load
    assert set(again["calibration_s"]) == set(first["calibration_s"])
    assert set(first["calibration_cached"]) == {False} and set(again["calibration_cached"]) == {
        True
    }
    assert float(first["calibration_s"].iloc[0]) > 0
    pd.testing.assert_series_equal(first["value"], again["value"])
    run_task(make_cfg("precision=w4a4", "granularity=per_tensor"))
    assert calls.calibrate == 2  # another spec, another calibration
    run_task(make_cfg("precision=w4a4", "granularity=adaptive", "calibration.n=3"))
    assert calls.calibrate == 3  # another calibration set


def test_qat_trains_on_labelled_training_patches(fake_layers, make_cfg, calls):
    """With the distillation term off, QAT has only the labels to learn from: it runs only if
    the pipeline hands it (image, label) pairs, and it changes the model's predictions."""
    qat = "algorithm=qat", "+algorithm.options={epochs: 2, distill_weight: 0.0, progress: false}"
    trained = run_task(make_cfg("precision=w4a4", "granularity=per_tensor", *qat))
    plain = run_task(make_cfg("precision=w4a4", "granularity=per_tensor"))
    assert set(trained["algorithm"]) == {"qat"} and calls.calibrate == 2
    assert not trained["value"].reset_index(drop=True).equals(plain["value"].reset_index(drop=True))


def test_fp32_predictions_are_computed_once_and_shared(fake_layers, make_cfg, tmp_path):
    run_task(make_cfg("precision=fp32", "granularity=none"))
    cached = sorted((tmp_path / "cache" / "fp32").rglob("*.npz"))
    assert [p.stem for p in cached] == ["c0", "c1"]
    stamps = [p.stat().st_mtime_ns for p in cached]
    rows = run_task(make_cfg("precision=w8a8", "granularity=per_tensor"))
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    agreement = rows[rows["metric"] == FP32_AGREEMENT_METRIC]
    assert len(agreement) == 4 and agreement["value"].between(0, 1).all()


def test_fp32_agreement_computes_missing_fp32_predictions(fake_layers, make_cfg, tmp_path):
    rows = run_task(make_cfg("precision=w8a8", "granularity=per_tensor"))
    assert len(list((tmp_path / "cache" / "fp32").rglob("*.npz"))) == 2
    fp32 = run_task(make_cfg("precision=fp32", "granularity=none"))
    # the w8a8 fake only rounds the input to 256 levels: its prediction agrees closely with fp32
    assert rows[rows["metric"] == FP32_AGREEMENT_METRIC]["value"].mean() > 0.9
    assert len(fp32)


def test_a_sweep_computes_fp32_predictions_and_ranges_once(fake_layers, make_cfg, calls):
    points = [(p, g) for p in ("fp32", "w8a8", "w4a4") for g in ("per_tensor", "adaptive")]
    statuses = [
        run_config(make_cfg(f"precision={p}", f"granularity={g}"), in_sweep=True) for p, g in points
    ]
    assert [s["status"] for s in statuses].count("ok") == 5  # fp32 x 2 granularities: one run
    n_cases = len(fake_layers.split("test"))
    # the FP32 network predicted each test case once for the whole sweep: the quantized runs
    # took its labels (dsc_fp32) from the cache; one calibration per (spec, calibration set)
    assert calls.predict_fp32 == n_cases
    assert (calls.calibrate, calls.load_ranges) == (4, 0)
    assert calls.predict_quantized == 4 * n_cases
    # another sweep over the same points: ranges come from the cache, FP32 labels too
    for p, g in points[2:]:
        run_config(
            make_cfg("experiment_name=again", f"precision={p}", f"granularity={g}"), in_sweep=True
        )
    assert (calls.predict_fp32, calls.calibrate, calls.load_ranges) == (n_cases, 4, 4)
    # a new calibration set is a new calibration; the FP32 labels are still shared
    run_config(make_cfg("calibration.n=3", "precision=w4a4", "granularity=adaptive"), in_sweep=True)
    assert (calls.predict_fp32, calls.calibrate) == (n_cases, 5)


def test_quantized_runs_before_fp32_share_the_fp32_labels(fake_layers, make_cfg, calls):
    for g in ("per_tensor", "adaptive"):
        run_config(make_cfg("precision=w8a8", f"granularity={g}"), in_sweep=True)
    assert calls.predict_fp32 == len(fake_layers.split("test"))


def test_run_job_writes_files_then_skips_the_same_config(fake_layers, make_cfg, tmp_path):
    cfg = make_cfg("precision=w8a8", "granularity=adaptive")
    out = tmp_path / "job"
    status = run_config(cfg, output_dir=out)
    assert status["status"] == "ok"
    on_disk = json.loads((out / "status.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["run_id"] == status["run_id"]
    exp = tmp_path / "results" / "adhoc"
    assert run_done(exp, status["run_id"])
    record = json.loads((exp / "runs" / f"{status['run_id']}.json").read_text())
    assert {
        "commit",
        "dirty",
        "hardware",
        "package_version",
        "calibration_s",
        "inference_s",
        "scoring_s",
    } <= set(record)
    assert "precision:\n  name: w8a8" in (exp / "runs" / f"{status['run_id']}.yaml").read_text()
    assert run_config(cfg, output_dir=out)["status"] == "skipped"
    # paths and progress bars do not change the hash: still the same run
    assert (
        run_config(make_cfg("precision=w8a8", "granularity=adaptive", "run.progress=true"))[
            "status"
        ]
        == "skipped"
    )
    assert len(collect(exp)) == status["rows"]


def test_sweep_collapses_float_precisions_to_one_run(fake_layers, make_cfg):
    statuses = [
        run_config(make_cfg("precision=fp32", f"granularity={g}"), in_sweep=True)
        for g in ("per_tensor", "adaptive")
    ]
    assert [s["status"] for s in statuses] == ["ok", "skipped"]
    assert statuses[0]["run_id"] == statuses[1]["run_id"]


def test_failed_job_in_a_sweep_records_and_returns(fake_layers, make_cfg, monkeypatch, tmp_path):
    def broken(cfg):
        raise RuntimeError("boom in the model")

    monkeypatch.setitem(TASKS, "evaluate", broken)
    cfg = make_cfg("precision=w8a8", "granularity=adaptive")
    status = run_config(cfg, output_dir=tmp_path / "j", in_sweep=True)
    assert status["status"] == "failed" and "boom in the model" in status["error"]
    assert json.loads((tmp_path / "j" / "status.json").read_text())["status"] == "failed"
    with pytest.raises(RuntimeError, match="boom"):
        run_config(cfg, output_dir=tmp_path / "k", in_sweep=False)
    assert json.loads((tmp_path / "k" / "status.json").read_text())["status"] == "failed"


def test_invalid_config_fails_before_any_work(fake_layers, make_cfg, calls):
    with pytest.raises(ConfigError, match="granularity=adaptive is impossible with precision=fp16"):
        run_config(make_cfg("precision=fp16", "granularity=adaptive"))
    assert calls.build == 0


def test_other_tasks_get_the_run_columns_filled(fake_layers, make_cfg, monkeypatch, tmp_path):
    def sensitivity(cfg):
        return pd.DataFrame(
            {"layer": ["a", "b"], "metric": "dsc", "value": [0.5, 0.6], "case": "all", "class": 0}
        )

    monkeypatch.setitem(TASKS, "evaluate", sensitivity)
    cfg = make_cfg("precision=w4a4", "granularity=adaptive")
    status = run_config(cfg)
    rows = collect(tmp_path / "results" / "adhoc")
    assert set(ROW_COLUMNS) <= set(rows.columns) and list(rows["layer"]) == ["a", "b"]
    assert set(rows["run_id"]) == {status["run_id"]} and set(rows["precision"]) == {"w4a4"}


def test_context_is_the_same_for_equal_configs(make_cfg):
    a = context_of(make_cfg("precision=w8a8", "granularity=adaptive"))
    b = context_of(make_cfg("precision=w8a8", "granularity=adaptive", "report.plot=true"))
    c = context_of(make_cfg("precision=w8a8", "granularity=per_tensor"))
    assert a.run_id == b.run_id and a.run_id != c.run_id


def test_rows_carry_the_whole_spec_and_the_quantization_table(fake_layers, make_cfg, tmp_path):
    status = run_config(
        make_cfg("precision=w4a4", "granularity=per_tensor", "+quant.keep_first_last=true")
    )
    rows = collect(tmp_path / "results" / "adhoc")
    spec = QuantSpec("w4a4", "per_tensor", keep_first_last=True).to_dict()
    for key in ("act_mapping", "keep_first_last", "dynamic", "position_scales", "exclude"):
        assert set(rows[key]) == {spec[key]}, key
    table_file = tmp_path / "results" / "adhoc" / "runs" / f"{status['run_id']}.quant.csv"
    table = pd.read_csv(table_file)
    assert set(rows["quant_table_hash"]) == {quant_table_hash(table)}
    # the fake network's first and last convolutions stay in float, by data flow
    kept = table[table["execution"].str.contains("keep_first_last", na=False)]
    assert sorted(kept["module"]) == ["body.0", "head"]
    record = json.loads(table_file.with_name(f"{status['run_id']}.json").read_text())
    assert record["spec"]["keep_first_last"] is True


def test_retrained_weights_make_a_finished_run_again(fake_layers, make_cfg, tmp_path):
    """The config hash names the checkpoint, not what it holds: rows made with replaced weights
    must be remade, not kept (records without a digest, from before, still count as done)."""
    weights = tmp_path / "net.pt"
    weights.write_bytes(b"first weights")
    cfg = make_cfg("precision=w8a8", "granularity=adaptive", f"model.checkpoint={weights}")
    first = run_config(cfg)
    exp = tmp_path / "results" / "adhoc"
    record_path = exp / "runs" / f"{first['run_id']}.json"
    first_digest = json.loads(record_path.read_text())["weights"]
    assert first["status"] == "ok" and first_digest == content_digest(weights)
    assert run_config(cfg)["status"] == "skipped"
    weights.write_bytes(b"retrained weights")
    again = run_config(cfg)
    assert again["status"] == "ok" and again["run_id"] == first["run_id"]
    new_digest = json.loads(record_path.read_text())["weights"]
    assert new_digest != first_digest
    assert set(collect(exp)["weights"]) == {new_digest}
    legacy = json.loads(record_path.read_text())
    del legacy["weights"]
    record_path.write_text(json.dumps(legacy))
    assert run_config(cfg)["status"] == "skipped"
