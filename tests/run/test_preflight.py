"""A sweep with an invalid point stops before its first job, naming the point and the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_invalid_sweep_point_stops_the_sweep_before_any_job(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "benchmark.run",
        "-m",
        "precision=w8a8,w4a4",
        # the valid points come first in the cross product: they must not run either
        "calibration.split=train,test",
        f"paths.results_dir={tmp_path / 'results'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    done = subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 of 4 sweep points cannot run; nothing was started" in done.stderr
    assert "calibration.split='test' is not one of ['train', 'val']" in done.stderr
    assert "precision=w4a4 calibration.split=test" in done.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
    assert not list((tmp_path / "sweep").rglob("status.json"))
