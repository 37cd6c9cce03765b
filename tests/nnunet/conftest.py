"""A real nnU-Net v2 results folder (nnunetv2's planner, preprocessor and trainer) on phantom cases."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import benchmark.config  # noqa: F401  (registers the schemas)

CONF = Path(__file__).resolve().parents[2] / "conf"
BUILD = Path(__file__).with_name("build_folder.py")
N_CASES, ITERATIONS = 6, 3


@dataclass(frozen=True)
class NnUNetTraining:
    raw: Path  # nnUNet_raw/Dataset900_Phantom
    preprocessed: Path  # nnUNet_preprocessed/Dataset900_Phantom
    results: Path  # the results folder (the model)
    root: Path


@pytest.fixture(scope="session")
def nnunet_training(tmp_path_factory) -> NnUNetTraining:
    root = tmp_path_factory.mktemp("nnunet")
    env = {
        **os.environ,
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_compile": "false",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(BUILD), str(root), str(N_CASES), str(ITERATIONS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    name = "Dataset900_Phantom"
    return NnUNetTraining(
        raw=root / "raw" / name,
        preprocessed=root / "preprocessed" / name,
        results=root / "results" / name / "nnUNetTrainer__nnUNetPlans__3d_fullres",
        root=root,
    )


@pytest.fixture
def folder_cfg(nnunet_training, tmp_path):
    """``make(*overrides)``: a config that runs the trained folder on its raw phantom cases."""

    def make(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                "config",
                overrides=[
                    "model=nnunet",
                    f"model.checkpoint={nnunet_training.results}",
                    "data=phantom",
                    "data.format=nnunet_raw",
                    f"data.root={nnunet_training.raw}",
                    "data.expected_num_classes=9",
                    f"data.split.splits_file={nnunet_training.preprocessed / 'splits_final.json'}",
                    f"data.cache_dir={tmp_path / 'data_cache'}",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                    f"paths.results_dir={tmp_path / 'results'}",
                    "run.progress=false",
                    *overrides,
                ],
            )

    return make
