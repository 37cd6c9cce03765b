"""Run files, the collector and provenance: atomic, idempotent, schema-checked."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from benchmark.results import (
    RESULTS_FILE,
    ROW_COLUMNS,
    SchemaError,
    collect,
    config_hash,
    git_state,
    provenance,
    run_done,
    write_run_record,
    write_run_rows,
)
from benchmark.results.__main__ import main as results_main


def _rows(run_id: str, n: int = 3, **extra) -> pd.DataFrame:
    base = {c: "x" for c in ROW_COLUMNS}
    base.update(run_id=run_id, value=0.5, tolerance_mm=float("nan"), seed=0, **extra)
    frame = pd.DataFrame([base] * n)
    frame["class"] = range(1, n + 1)
    return frame


def test_write_is_atomic_and_marks_the_run_done(tmp_path):
    assert not run_done(tmp_path, "r1")
    path = write_run_rows(_rows("r1", layer="conv1"), tmp_path, "r1")
    assert path == tmp_path / "runs" / "r1.parquet" and run_done(tmp_path, "r1")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["r1.parquet"]  # no temp file left
    back = pd.read_parquet(path)
    assert list(back.columns[: len(ROW_COLUMNS)]) == list(ROW_COLUMNS) and "layer" in back.columns


def test_missing_columns_are_named(tmp_path):
    with pytest.raises(SchemaError, match=r"missing result column\(s\) \['metric'\]"):
        write_run_rows(_rows("r1").drop(columns="metric"), tmp_path, "r1")
    with pytest.raises(SchemaError, match="run_id"):
        write_run_rows(_rows("other"), tmp_path, "r1")
    assert not run_done(tmp_path, "r1")


def test_collect_rebuilds_from_run_files_only(tmp_path):
    write_run_rows(_rows("a", 2), tmp_path, "a")
    write_run_rows(_rows("b", 3), tmp_path, "b")
    (tmp_path / "runs" / ".c.parquet.123.tmp").write_bytes(b"half a file from a killed job")
    write_run_record(tmp_path, "a", "precision:\n  name: w8a8\n", {"commit": "abc"})
    table = collect(tmp_path)
    assert len(table) == 5 and sorted(table["run_id"].unique()) == ["a", "b"]
    again = collect(tmp_path)
    pd.testing.assert_frame_equal(table, again)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / RESULTS_FILE), table)
    # rewriting a run replaces its rows instead of appending them
    write_run_rows(_rows("a", 2), tmp_path, "a")
    assert len(collect(tmp_path)) == 5


def test_collect_keeps_recorded_runs_that_no_run_file_backs(tmp_path):
    """A clone of committed results has results.parquet but no runs/: one more point must not
    drop the rest, and a run's own file still replaces its recorded rows."""
    write_run_rows(_rows("old", 2), tmp_path, "old")
    write_run_rows(_rows("kept", 3), tmp_path, "kept")
    collect(tmp_path)
    shutil.rmtree(tmp_path / "runs")  # what a fresh clone holds
    write_run_rows(_rows("new", 4), tmp_path, "new")
    write_run_rows(_rows("old", 1), tmp_path, "old")
    table = collect(tmp_path)
    assert table.groupby("run_id").size().to_dict() == {"kept": 3, "new": 4, "old": 1}
    pd.testing.assert_frame_equal(collect(tmp_path), table)
    only = collect(tmp_path, keep_recorded=False)
    assert sorted(only["run_id"].unique()) == ["new", "old"]
    assert results_main(["collect", "--run-files-only", str(tmp_path)]) == 0


def test_an_unreadable_consolidated_file_names_the_way_out(tmp_path):
    write_run_rows(_rows("a", 2), tmp_path, "a")
    (tmp_path / RESULTS_FILE).write_bytes(b"truncated")
    with pytest.raises(ValueError, match="--run-files-only"):
        collect(tmp_path)
    assert len(collect(tmp_path, keep_recorded=False)) == 2


def test_collect_of_an_empty_experiment_has_the_schema(tmp_path):
    (tmp_path / "runs").mkdir()
    table = collect(tmp_path)
    assert len(table) == 0 and list(table.columns) == list(ROW_COLUMNS)
    with pytest.raises(FileNotFoundError, match="run the experiment first"):
        collect(tmp_path / "missing")


def test_collect_command(tmp_path, capsys):
    write_run_rows(_rows("a", 4), tmp_path, "a")
    assert results_main(["collect", str(tmp_path)]) == 0
    assert "4 rows from 1 runs" in capsys.readouterr().out
    assert results_main(["collect", str(tmp_path / "nope")]) == 1


def test_config_hash_is_order_free_and_ignores_hydra():
    a = {"model": {"name": "m", "patch": [1, 2, 3]}, "seed": 0}
    b = {"seed": 0, "model": {"patch": [1, 2, 3], "name": "m"}, "hydra": {"run": {"dir": "x"}}}
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 64
    assert config_hash(a) != config_hash({**a, "seed": 1})


def test_provenance_names_code_machine_and_time(tmp_path):
    record = provenance()
    assert {"commit", "dirty", "created", "package_version", "hardware"} <= set(record)
    assert record["created"].endswith("+00:00") and record["hardware"]
    assert git_state(tmp_path) == ("unknown", None)
