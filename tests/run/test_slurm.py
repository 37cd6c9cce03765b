"""A sweep through ``hydra/launcher=submitit_slurm`` on a real single-node Slurm cluster.

``tests/run/slurm/setup_slurm.sh`` installs Debian's munge, slurmctld and slurmd when they are
missing and starts them on this machine; the test runs it (to start the daemons) when Slurm is
installed and skips otherwise, and it runs only against the cluster that script configured,
never a real cluster this machine may belong to. The two points are the smallest of
``test_multirun``: FP32 and W8A8 of tiny_nnunet (random weights) on one coarse phantom case.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.results import ROW_COLUMNS
from tests.run.test_multirun import SMALL

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SETUP = Path(__file__).resolve().parent / "slurm" / "setup_slurm.sh"
CLUSTER = "medqbench"  # ClusterName in the slurm.conf that SETUP writes
TIMEOUT_MIN = 10  # Slurm's time limit of each job
SWEEP_TIMEOUT_S = 300  # the sweep takes 25-45 s on 2 cores
STATE_WAIT_S = 60  # for Slurm to record a task's end after submitit has its result
UNSETTLED = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}
# metrics bounded to [0, 1] and finite whatever the network predicts; hd95 is inf for a class
# that one side leaves empty, and dsc_fp32 is undefined where both sides are empty
UNIT_METRICS = ["dsc", "nsd", "ece", "brier"]


def _tail(text: str, n: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-n:])


def _without_sacct(output: str) -> str:
    """The launcher's output less submitit's warnings that ``sacct`` has no accounting."""
    noise = ("sacct", "accounting storage is disabled")
    kept = [line for line in output.splitlines() if not any(n in line for n in noise)]
    return "\n".join(kept)[-3000:]


def _job_logs(tmp_path: Path) -> str:
    """The end of each job's stderr, and what Slurm still lists, for a failure message."""
    logs = [p.read_text()[-1500:] for p in sorted((tmp_path / "sweep").rglob("*_log.err"))]
    queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
    return "\n".join([*logs, queue])


@pytest.fixture(scope="module")
def partition() -> str:
    """The default partition of the local test cluster, started if it is installed."""
    if shutil.which("sbatch") is None:
        pytest.skip(
            "Slurm is not installed (no sbatch on PATH); `bash tests/run/slurm/setup_slurm.sh` "
            "installs and starts a single-node cluster (root, Debian or Ubuntu)"
        )
    done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"the local Slurm cluster did not start: {_tail(done.stderr)}")
    config = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=True
    ).stdout
    if not re.search(rf"^ClusterName\s*=\s*{CLUSTER}$", config, re.MULTILINE):
        pytest.skip(f"the Slurm on this machine is not the test cluster that {SETUP.name} writes")
    partitions = subprocess.run(
        ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True
    ).stdout.split()
    return next(p.rstrip("*") for p in partitions if p.endswith("*"))


def _array_tasks(submitit_dir: Path) -> tuple[str, dict[str, dict[str, str]]]:
    """The sweep's array job id and ``scontrol`` fields of each of its tasks, by task id.

    submitit returns once a task's result file is written, while Slurm may still list that task
    ``RUNNING`` (its batch script is exiting) or ``COMPLETING``; this waits for a final state.
    """
    (array_id,) = [p.name for p in submitit_dir.iterdir() if p.name.isdigit()]
    deadline = time.monotonic() + STATE_WAIT_S
    while True:
        shown = subprocess.run(
            ["scontrol", "-o", "show", "job", array_id], capture_output=True, text=True, check=True
        ).stdout
        tasks = {}
        for line in shown.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            tasks[fields["ArrayTaskId"]] = fields
        settled = all(f["JobState"] not in UNSETTLED for f in tasks.values())
        if settled or time.monotonic() > deadline:
            return array_id, tasks
        time.sleep(1)


def test_submitit_slurm_sweep_runs_as_a_job_array(tmp_path, partition):
    cmd = [
        sys.executable,
        "-m",
        "benchmark.run",
        "-m",
        *SMALL,
        "precision=fp32,w8a8",
        "granularity=adaptive",
        f"paths.results_dir={tmp_path / 'results'}",
        f"paths.log_dir={tmp_path / 'outputs'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={partition}",
        f"hydra.launcher.timeout_min={TIMEOUT_MIN}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.array_parallelism=1",
    ]
    env = {**os.environ, "MEDQBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        # without accounting, submitit waits for a result file that a killed job never writes
        pytest.fail(f"the sweep did not end in {SWEEP_TIMEOUT_S} s:\n{_job_logs(tmp_path)}")
    assert done.returncode == 0, _without_sacct(done.stdout + done.stderr) + _job_logs(tmp_path)
    assert "Submitit 'slurm' sweep output dir" in done.stderr + done.stdout

    # both points ran as tasks of one Slurm array, on this node, with the launcher's settings
    array_id, tasks = _array_tasks(tmp_path / "sweep" / ".submitit")
    assert sorted(tasks) == ["0", "1"]
    for task_id, fields in tasks.items():
        assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", fields
        assert fields["Partition"] == partition and fields["NumCPUs"] == "1"
        assert fields["TimeLimit"] == f"00:{TIMEOUT_MIN:02d}:00"
        assert fields["ArrayTaskThrottle"] == "1"
        assert fields["NodeList"] == socket.gethostname().split(".")[0]
        assert (tmp_path / "sweep" / ".submitit" / f"{array_id}_{task_id}").is_dir()

    table = pd.read_parquet(tmp_path / "results" / "adhoc" / "results.parquet")
    assert set(ROW_COLUMNS) <= set(table.columns)
    runs = table.groupby("run_id")["precision"].first()
    assert sorted(runs) == ["fp32", "w8a8"]
    assert not table.duplicated(["run_id", "case", "class", "metric"]).any()
    assert table["case"].nunique() == 1
    bounded = table[table["metric"].isin(UNIT_METRICS)]
    assert set(bounded["metric"]) == set(UNIT_METRICS)
    assert bounded.groupby("run_id").size().nunique() == 1  # the same rows for both runs
    assert np.isfinite(bounded["value"]).all() and bounded["value"].between(0, 1).all()
    hd95 = table.loc[table["metric"] == "hd95", "value"]
    assert len(hd95) and not hd95.isna().any() and (hd95 > 0).all()
    timings = table[["calibration_s", "inference_s", "scoring_s"]]
    assert np.isfinite(timings.to_numpy()).all()
    # the W8A8 run is compared with the cached FP32 prediction of the FP32 job
    agreement = table.loc[table["metric"] == "dsc_fp32", "value"].dropna()
    assert len(agreement) and agreement.between(0, 1).all()
    assert set(table.loc[table["metric"] == "dsc_fp32", "precision"]) == {"w8a8"}
