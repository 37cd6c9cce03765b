"""End to end: the sensitivity preset through the Hydra entry point, then the plots CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.run.conftest import CONF

REPO = CONF.parent


@pytest.mark.slow
def test_sensitivity_smoke_preset_writes_layer_rows_and_figures(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "benchmark.run",
        "experiment=sensitivity_smoke",
        "model.checkpoint=null",  # random weights: independent of the shipped checkpoint
        "sensitivity.units=[encoder.stages.0,decoder.seg_layers.*]",
        "sensitivity.modes=[one_layer,all_but_one]",
        "sensitivity.stats_granularities=[]",
        "sensitivity.stats_patches=1",
        "calibration.n=1",
        f"paths.results_dir={tmp_path / 'results'}",
        f"paths.log_dir={tmp_path / 'outputs'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "run.progress=false",
    ]
    subprocess.run(command, cwd=REPO, env=env, check=True, timeout=900)
    path = tmp_path / "results" / "sensitivity_smoke" / "results.parquet"
    rows = pd.read_parquet(path)
    units = rows[rows["mode"] == "one_layer"]["layer"].unique().tolist()
    assert units == ["encoder.stages.0", "decoder.seg_layers.3"]
    assert set(rows["mode"]) >= {"reference", "all", "all_but_one", "activation_shift"}
    assert (rows["experiment"] == "sensitivity_smoke").all()
    figures = tmp_path / "figures"
    subprocess.run(
        [sys.executable, "-m", "benchmark.plots", str(path), "--out", str(figures)],
        cwd=REPO,
        env=env,
        check=True,
        timeout=300,
    )
    assert (figures / "layer_sensitivity_dsc.png").is_file()
    assert (figures / "activation_depth.pdf").is_file()
