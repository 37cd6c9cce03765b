"""``python -m benchmark.train``: Hydra composition, run folder, record, resume on re-run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cli_trains_records_and_resumes(tmp_path, small_data_cfg, small_dataset):
    run_dir = tmp_path / "run"
    overrides = [
        "model=tiny_nnunet",
        "data.n_cases=8",
        "data.inplane_voxels=32",
        "data.target_spacing_mm=[8.0,9.0,9.0]",
        "data.split.fractions=[0.5,0.25,0.25]",
        f"data.cache_dir={small_data_cfg['cache_dir']}",
        "trainer.patch_size=[16,32,32]",
        "trainer.epochs=1",
        "trainer.iterations_per_epoch=1",
        "trainer.batch_size=1",
        "trainer.max_val_cases=1",
        "trainer.num_threads=1",
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    cmd = [sys.executable, "-m", "benchmark.train", *overrides]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["command"].startswith("python -m benchmark.train model=tiny_nnunet")
    assert "trainer.epochs=1" in record["command"] and record["epochs"] == 1
    assert record["patch_size"] == [16, 32, 32] and record["data_config"]["n_cases"] == 8
    assert (run_dir / "model_final.pt").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    log = (run_dir / "train.log").read_text()
    assert f"mean {record['val_mean_dsc']:.4f}" in log  # the record holds the printed numbers

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming tiny_nnunet from epoch 1" in (run_dir / "train.log").read_text()
    assert (
        json.loads((run_dir / "record.json").read_text())["val_mean_dsc"] == record["val_mean_dsc"]
    )
