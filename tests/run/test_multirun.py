"""Real multiruns through the CLI (slow): sweeps, launchers, kill and resume, the smoke preset.

The sweeps use tiny_nnunet with random weights on a coarse 6-case phantom (32-voxel patches,
one sliding window per case) so each job takes seconds; the smoke test runs the shipped preset.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark.models import shipped_weights_path
from benchmark.results import ROW_COLUMNS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "model=tiny_nnunet",
    "model.checkpoint=null",
    "model.patch_size=[32,32,32]",
    "data.inplane_voxels=32",
    "data.n_cases=6",
    "data.target_spacing_mm=[8.0,10.0,10.0]",
    "data.expected_num_classes=null",
    "evaluation.max_cases=1",
    "calibration.n=2",
    "run.progress=false",
    "report.table=false",
]
SWEEP = ["precision=fp32,w8a8,w4a4", "granularity=per_tensor,adaptive"]
# fp32 x 2 granularities collapse to one run
EXPECTED_RUNS = 1 + 2 * 2
# the launcher tests need only show that jobs run and are collected through the plugin
LAUNCHER_SWEEP = ["precision=fp32,w4a4", "granularity=adaptive"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _command(tmp: Path, *extra: str, sweep: list[str] = SWEEP) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmark.run",
        "-m",
        *SMALL,
        *sweep,
        f"paths.results_dir={tmp / 'results'}",
        f"paths.log_dir={tmp / 'outputs'}",
        "hydra.sweep.dir=" + str(tmp / "sweep"),
        *extra,
    ]


def _env(cache_dir: Path) -> dict[str, str]:
    return {**os.environ, "MEDQBENCH_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str], cache_dir: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(
        cmd, cwd=REPO, env=_env(cache_dir), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _check_results(results_dir: Path, expected_runs: int) -> pd.DataFrame:
    table = pd.read_parquet(results_dir / "results.parquet")
    assert set(ROW_COLUMNS) <= set(table.columns)
    assert table["run_id"].nunique() == expected_runs
    assert not table.duplicated(["run_id", "case", "class", "metric"]).any()
    per_run = table.groupby("run_id").size()
    fp32 = table[table["precision"] == "fp32"]["run_id"].iloc[0]
    # every quantized run has the fp32 run's rows plus its dsc_fp32 rows
    assert (per_run.drop(fp32) > per_run[fp32]).all()
    return table


def test_sweep_runs_the_cross_product_and_collects(tmp_path, cache_dir):
    done = _run(_command(tmp_path, "hydra/launcher=basic"), cache_dir)
    table = _check_results(tmp_path / "results" / "adhoc", EXPECTED_RUNS)
    assert set(zip(table["precision"], table["granularity"], strict=True)) == {
        ("fp32", "none"),
        ("w8a8", "per_tensor"),
        ("w8a8", "adaptive"),
        ("w4a4", "per_tensor"),
        ("w4a4", "adaptive"),
    }
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("status.json")]
    assert sorted(s["status"] for s in statuses) == ["ok"] * EXPECTED_RUNS + ["skipped"]
    subdirs = {p.parent.name for p in (tmp_path / "sweep").rglob("status.json")}
    # one folder per job, named by its options (not by job number)
    assert len(subdirs) == 6 and all(
        s.startswith("model=tiny_nnunet,") and "precision=" in s for s in subdirs
    )
    for run_id in table["run_id"].unique():
        assert (tmp_path / "results" / "adhoc" / "runs" / f"{run_id}.yaml").is_file()
    # a second launch finds every run done and changes nothing
    before = (tmp_path / "results" / "adhoc" / "runs").stat().st_mtime_ns
    _run(_command(tmp_path, "hydra.sweep.dir=" + str(tmp_path / "sweep2")), cache_dir)
    again = [
        json.loads(p.read_text())["status"] for p in (tmp_path / "sweep2").rglob("status.json")
    ]
    assert (
        set(again) == {"skipped"}
        and (tmp_path / "results" / "adhoc" / "runs").stat().st_mtime_ns == before
    )
    assert "Launching 6 jobs" in done.stdout + done.stderr


def test_killed_sweep_resumes_without_missing_or_duplicate_rows(tmp_path, cache_dir):
    runs = tmp_path / "results" / "adhoc" / "runs"
    proc = subprocess.Popen(
        _command(tmp_path),
        cwd=REPO,
        env=_env(cache_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not list(runs.glob("*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(runs.glob("*.parquet")))
    assert 1 <= finished < EXPECTED_RUNS
    _run(_command(tmp_path, "hydra.sweep.dir=" + str(tmp_path / "sweep_restart")), cache_dir)
    _check_results(tmp_path / "results" / "adhoc", EXPECTED_RUNS)
    restarted = [
        json.loads(p.read_text())["status"]
        for p in (tmp_path / "sweep_restart").rglob("status.json")
    ]
    assert restarted.count("skipped") >= finished  # finished runs were not recomputed


def test_joblib_launcher_runs_jobs_in_parallel_workers(tmp_path, cache_dir):
    cmd = _command(
        tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", sweep=LAUNCHER_SWEEP
    )
    done = _run(cmd, cache_dir)
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr
    _check_results(tmp_path / "results" / "adhoc", 2)


def test_submitit_local_launcher(tmp_path, cache_dir):
    _run(_command(tmp_path, "hydra/launcher=submitit_local", sweep=LAUNCHER_SWEEP), cache_dir)
    _check_results(tmp_path / "results" / "adhoc", 2)
    assert list((tmp_path / "sweep" / ".submitit").iterdir())


SMOKE_MODELS = ("tiny_nnunet", "tiny_swinunetr")


@pytest.mark.skipif(
    not all(shipped_weights_path(m).is_file() for m in SMOKE_MODELS),
    reason="the shipped weights benchmark/models/weights/tiny_*.pt are not built yet "
    "(python -m benchmark.train)",
)
def test_smoke_experiment(tmp_path, cache_dir):
    """The preset as documented: shipped weights, 14 runs, two cases, the table on stdout (and
    the end-of-sweep figure when asked)."""
    cmd = [
        sys.executable,
        "-m",
        "benchmark.run",
        "experiment=smoke",
        f"paths.results_dir={tmp_path / 'results'}",
        f"paths.log_dir={tmp_path / 'outputs'}",
        "run.progress=false",
        "report.plot=true",
    ]
    done = _run(cmd, cache_dir, timeout=1800)
    table = pd.read_parquet(tmp_path / "results" / "smoke" / "results.parquet")
    assert (tmp_path / "results" / "smoke" / "dsc_bars.png").stat().st_size > 0
    assert table["run_id"].nunique() == 14 and set(table["model"]) == set(SMOKE_MODELS)
    assert table["case"].nunique() == 2
    assert not table.duplicated(["run_id", "case", "class", "metric"]).any()
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| Framework | Architecture") and "DSC (Δ%)" in lines[0]
    assert len(lines) == 1 + 14  # header + one line per run
    # trained weights: FP32 segments the phantom organs far above chance (random initial
    # weights score about 0.01-0.05 mean DSC on these two cases)
    fp32 = table[(table["precision"] == "fp32") & (table["metric"] == "dsc") & (table["class"] > 0)]
    assert set(fp32["model"]) == set(SMOKE_MODELS)
    assert (fp32.groupby("model")["value"].mean() > 0.2).all()
