"""A results folder without its FP32 run: the report scores the cached FP32 predictions, or says
why it cannot and which run adds the baseline."""

from __future__ import annotations

import io
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import benchmark.config  # noqa: F401  (registers the schemas)
from benchmark.points.records import point_from_yaml
from benchmark.points.sources import fp32_cache_dir
from benchmark.report.__main__ import main as report_main
from benchmark.report.baseline import cached_baselines
from benchmark.results import collect
from tests.runs import run_config

CONF = Path(__file__).resolve().parents[2] / "conf"


def _config(tmp: Path, *overrides: str):
    """The shipped tiny nnU-Net on one case of a small phantom, every file under ``tmp``."""
    base = [
        "model=tiny_nnunet",
        "model.patch_size=[32,32,32]",
        "inference=fast",
        "data.n_cases=4",
        "data.inplane_voxels=32",
        f"data.cache_dir={tmp / 'cache'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"paths.results_dir={tmp / 'results'}",
        f"paths.log_dir={tmp / 'outputs'}",
        "experiment_name=nofp32",
        "run.progress=false",
        "calibration.n=2",
        "evaluation.max_cases=1",
        "evaluation.probability_metrics=false",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=base + list(overrides))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, str]:
    """An experiment folder with an FP32 and a W4A4 run, and the table printed from it."""
    tmp = tmp_path_factory.mktemp("sweep")
    for precision, granularity in (("fp32", "none"), ("w4a4", "per_tensor")):
        status = run_config(_config(tmp, f"precision={precision}", f"granularity={granularity}"))
        assert status["status"] == "ok", status
    folder = tmp / "results" / "nofp32"
    collect(folder)
    return folder, _table(folder)


def _table(folder: Path) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert report_main([str(folder)]) == 0
    return out.getvalue()


def _without_fp32(folder: Path, into: Path) -> Path:
    """A copy of the experiment folder whose FP32 run files are gone."""
    copy = into / "nofp32"
    shutil.copytree(folder, copy)
    for path in (copy / "runs").glob("tiny_nnunet-fp32-*"):
        path.unlink()
    (copy / "results.parquet").unlink()
    collect(copy)
    assert "fp32" not in set(pd.read_parquet(copy / "results.parquet")["precision"])
    return copy


def _w4a4_line(table: str) -> list[str]:
    line = next(line for line in table.splitlines() if "W4A4" in line)
    return [cell.strip() for cell in line.split("|")]


def test_the_cached_predictions_give_the_fp32_runs_baseline(sweep, tmp_path, capsys):
    folder, with_fp32 = sweep
    copy = _without_fp32(folder, tmp_path)
    capsys.readouterr()
    assert report_main([str(copy)]) == 0
    captured = capsys.readouterr()
    # the drop of the quantized run is the one its FP32 run gives, to the last printed digit
    assert _w4a4_line(captured.out) == _w4a4_line(with_fp32)
    assert "%" in _w4a4_line(captured.out)[-2]
    assert "FP32 (cached)" in captured.out
    assert "cached FP32 predictions" in captured.err and "scored against the ground truth" in (
        captured.err
    )


def test_the_cache_key_is_the_one_the_run_wrote(sweep):
    """The report finds the folder run_point filled, not a folder of its own making."""
    folder, _ = sweep
    run = next((folder / "runs").glob("tiny_nnunet-w4a4-*.yaml"))
    cases = set(pd.read_parquet(run.with_suffix(".parquet"))["case"])
    written = [p.parent for p in (folder.parents[1] / "cache" / "fp32").rglob("*.npz")]
    assert set(written) == {fp32_cache_dir(point_from_yaml(run.read_text()))}
    assert {p.stem for p in fp32_cache_dir(point_from_yaml(run.read_text())).glob("*.npz")} == cases


def test_without_cache_or_run_config_the_report_says_what_to_run(sweep, tmp_path):
    folder, _ = sweep
    copy = _without_fp32(folder, tmp_path)
    results = pd.read_parquet(copy / "results.parquet")
    run = next((copy / "runs").glob("tiny_nnunet-w4a4-*.yaml"))
    cache = fp32_cache_dir(point_from_yaml(run.read_text()))
    moved = tmp_path / "moved"
    shutil.move(cache, moved)
    try:
        rows, notes = cached_baselines(results, copy)
    finally:
        shutil.move(moved, cache)
    assert rows.empty and len(notes) == 1
    assert "holds 0 of its 1 cases" in notes[0]
    assert (
        "python -m benchmark.run model=tiny_nnunet data=phantom inference=fast precision=fp32 "
        "granularity=none experiment_name=nofp32 evaluation.max_cases=1" in notes[0]
    )
    config = OmegaConf.load(run)
    del config.inference["mirroring"]  # a run config written before that setting existed
    run.write_text(OmegaConf.to_yaml(config))
    rows, notes = cached_baselines(results, copy)
    # the same cache key: an unset mirroring is no mirroring, so the cached baseline is found
    assert not rows.empty and "scored against the ground truth" in notes[0]
    config.model.checkpoint = str(tmp_path / "gone.pt")  # weights deleted since the run
    run.write_text(OmegaConf.to_yaml(config))
    rows, notes = cached_baselines(results, copy)
    assert rows.empty and "cannot be located from" in notes[0] and "gone.pt" in notes[0]
    assert "add the baseline with: python -m benchmark.run model=tiny_nnunet" in notes[0]
    shutil.rmtree(copy / "runs")
    rows, notes = cached_baselines(results, copy)
    assert rows.empty and "no run config" in notes[0] and "precision=fp32" in notes[0]
