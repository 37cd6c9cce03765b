"""A single run's summary line, interrupted jobs' status.json, and locks that clean up after themselves.

Runs here are real (tiny nnU-Net, a few small phantom cases); interruptions are real signals
sent to a job in a child process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import benchmark.config  # noqa: F401  (registers the schemas)
from benchmark.config import ConfigError
from benchmark.data.cache import file_lock
from benchmark.pipeline import job as job_module
from benchmark.pipeline.summary import fp32_baseline, fp32_command
from benchmark.points import cache
from benchmark.results import run_path
from benchmark.run import TASKS
from tests.runs import run_config

CONF = Path(__file__).resolve().parents[2] / "conf"
ROOT = Path(__file__).resolve().parents[2]


def _overrides(tmp: Path) -> list[str]:
    return [
        "model=tiny_nnunet",
        "model.patch_size=[32,32,32]",
        "data.n_cases=6",
        "data.inplane_voxels=32",
        "data.target_spacing_mm=[12,9,9]",
        f"data.cache_dir={tmp / 'cache'}",
        f"paths.results_dir={tmp / 'results'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"paths.log_dir={tmp / 'outputs'}",
        "run.progress=false",
        "calibration.n=2",
        "evaluation.probability_metrics=false",
    ]


def _cfg(tmp: Path, *extra: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=_overrides(tmp) + list(extra))


def _locks(folder: Path) -> list[Path]:
    return list(folder.rglob("*.lock"))


def _mean(path: Path, other: Path | None = None) -> tuple[float, float]:
    """Mean DSC of a run file (and of ``other`` on the same case/class pairs)."""
    keys = ["case", "class"]
    rows = pd.read_parquet(path).query("metric == 'dsc'")[keys + ["value"]]
    if other is None:
        return float(rows["value"].mean()), float("nan")
    base = pd.read_parquet(other).query("metric == 'dsc'")[keys + ["value"]]
    both = rows.merge(base, on=keys, suffixes=("", "_fp32")).dropna()
    return float(both["value"].mean()), float(both["value_fp32"].mean())


def test_a_single_run_prints_its_drop_from_fp32_or_how_to_get_it(tmp_path, capsys):
    exp = tmp_path / "results" / "adhoc"
    quantized = run_config(_cfg(tmp_path, "precision=w8a8", "granularity=adaptive"))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    dsc, _ = _mean(run_path(exp, quantized["run_id"]))
    assert line.startswith("tiny_nnunet w8a8 adaptive on phantom (test, 2 cases): ")
    assert f"DSC {dsc:.3f}, NSD@2mm " in line and "agreement with FP32 predictions DSC" in line
    assert "no FP32 run of this model and data" in line
    command = line.split("add it with ", 1)[1]
    assert command == (
        "python -m benchmark.run model=tiny_nnunet data=phantom experiment_name=adhoc "
        "precision=fp32 granularity=none"
    )

    fp32 = run_config(_cfg(tmp_path, "precision=fp32", "granularity=none"))
    assert capsys.readouterr().out.strip().endswith("(the FP32 baseline itself)")

    again = run_config(_cfg(tmp_path, "precision=w8a8", "granularity=adaptive"))
    assert again["status"] == "skipped"  # the summary of the finished run, read back
    line = capsys.readouterr().out.strip().splitlines()[-1]
    q, f = _mean(run_path(exp, quantized["run_id"]), run_path(exp, fp32["run_id"]))
    assert np.isfinite(q) and np.isfinite(f)
    assert f"DSC {q:.3f} vs FP32 {f:.3f} ({100 * (q - f):+.2f} pt, " in line
    # another data config has no baseline here, though the model is the same
    other = benchmark.config.build_point(_cfg(tmp_path, "precision=w8a8", "data.seed=1"))
    assert fp32_baseline(exp, other) is None
    assert not _locks(tmp_path)


def test_the_fp32_command_keeps_the_run_options_but_the_quantization_point(tmp_path):
    cfg = _cfg(tmp_path, "precision=w4a4")
    overrides = [
        "model=tiny_unetr",
        "precision=w4a4",
        "granularity=adaptive",
        "observer=percentile",
        "+quant.act_mapping=symmetric",
        "calibration.n=8",
        "data.root=/data/my dir",
        "experiment_name=study",
    ]
    assert fp32_command(cfg, overrides) == (
        "python -m benchmark.run model=tiny_unetr 'data.root=/data/my dir' experiment_name=study "
        "precision=fp32 granularity=none"
    )


def test_ctrl_c_is_recorded_and_leaves_no_lock(tmp_path, monkeypatch):
    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setitem(TASKS, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_config(_cfg(tmp_path, "precision=w8a8"), output_dir=tmp_path / "job")
    status = json.loads((tmp_path / "job" / "status.json").read_text())
    assert status["status"] == "interrupted" and "Ctrl-C" in status["error"]
    assert not _locks(tmp_path)


def test_a_failed_run_leaves_no_lock(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        run_config(_cfg(tmp_path, f"data.root={tmp_path / 'nowhere'}"), output_dir=tmp_path / "job")
    assert json.loads((tmp_path / "job" / "status.json").read_text())["status"] == "failed"
    assert not _locks(tmp_path)


_CHILD = """
import sys, time
from hydra import compose, initialize_config_dir
from benchmark.pipeline import job as job_module
from benchmark.run import TASKS
from tests.runs import run_config

def task(context):
    open({started!r}, "w").close()
    time.sleep(600)


TASKS["evaluate"] = task
with initialize_config_dir(version_base="1.3", config_dir={conf!r}):
    cfg = compose("config", overrides={overrides!r})
run_config(cfg, output_dir={out!r})
"""


def _start_job(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "outputs" / "adhoc" / "runs" / "killed"
    started = tmp_path / "started"
    script = _CHILD.format(
        conf=str(CONF), overrides=_overrides(tmp_path), out=str(out), started=str(started)
    )
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if started.is_file():  # the job is inside its task
            return child, out / "status.json"
        time.sleep(0.2)
    child.kill()
    pytest.fail(f"the child job did not start (exit {child.poll()})")


def test_sigterm_is_recorded_as_interrupted(tmp_path):
    child, status = _start_job(tmp_path)
    child.send_signal(signal.SIGTERM)
    assert child.wait(60) == 128 + signal.SIGTERM
    record = json.loads(status.read_text())
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"]
    assert not _locks(tmp_path)


def test_a_killed_job_is_marked_interrupted_by_the_next_start(tmp_path):
    child, status = _start_job(tmp_path)
    try:
        assert job_module.mark_interrupted(tmp_path / "outputs") == []  # alive: left alone
        assert json.loads(status.read_text())["status"] == "running"
    finally:
        child.kill()
        child.wait(60)
    assert json.loads(status.read_text())["status"] == "running"  # SIGKILL: nothing ran
    with pytest.raises(ConfigError):  # the next start, even one that fails validation
        run_config(_cfg(tmp_path, "precision=fp16", "granularity=adaptive"))
    record = json.loads(status.read_text())
    assert record["status"] == "interrupted" and "without recording a result" in record["error"]
    assert not _locks(tmp_path)


def test_file_lock_excludes_and_removes_its_file(tmp_path):
    path = tmp_path / "entry.lock"
    inside, most = [0], [0]

    def work():
        for _ in range(15):
            with file_lock(path, timeout_s=30):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and not path.exists()
    with file_lock(path):
        with pytest.raises(TimeoutError, match="entry.lock is locked by another process"):
            with file_lock(path, timeout_s=0):
                pass
    assert not path.exists()


def test_locks_left_by_killed_processes_are_removed_by_the_next_user(tmp_path):
    entry = tmp_path / "ranges" / "a.pt"
    stale = tmp_path / "ranges" / ".locks" / "b.pt.lock"
    stale.parent.mkdir(parents=True)
    stale.write_text("")  # what a SIGKILLed holder leaves: the file, no flock
    held = tmp_path / "ranges" / ".locks" / "c.pt.lock"
    with file_lock(held):  # a live holder
        with cache.locked(entry):
            assert (tmp_path / "ranges" / ".locks" / "a.pt.lock").is_file()
        assert not stale.exists() and held.exists()
    assert sorted(p.name for p in stale.parent.iterdir()) == []
