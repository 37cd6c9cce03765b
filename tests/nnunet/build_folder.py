"""Build a real nnU-Net v2 results folder from a few phantom cases with nnunetv2's own tools.

Run as ``python build_folder.py ROOT``; the caller sets ``nnUNet_raw``, ``nnUNet_preprocessed``
and ``nnUNet_results`` under ``ROOT`` (nnunetv2 reads them at import time, hence a process of its
own). Steps, as a user runs them: fingerprint + integrity check, the default experiment planner,
the default preprocessor, then nnunetv2's ``nnUNetTrainer`` for a few iterations of fold 0 and its
own ``save_checkpoint``. The planned network is narrowed (``features_per_stage``) before
training so that the whole fixture runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from benchmark.data import generate_phantom

DATASET_ID = 900
CONFIGURATION = "3d_fullres"
FEATURES = [4, 8, 16, 16, 16, 16, 16, 16]


def _narrow_plans(preprocessed: Path) -> None:
    path = preprocessed / "Dataset900_Phantom" / "nnUNetPlans.json"
    plans = json.loads(path.read_text())
    kwargs = plans["configurations"][CONFIGURATION]["architecture"]["arch_kwargs"]
    kwargs["features_per_stage"] = FEATURES[: kwargs["n_stages"]]
    path.write_text(json.dumps(plans, indent=1))


def main(root: Path, n_cases: int, iterations: int) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    raw = Path(os.environ["nnUNet_raw"])
    preprocessed = Path(os.environ["nnUNet_preprocessed"])
    generate_phantom(raw, n_cases=n_cases, seed=3, inplane_voxels=48, workers=1)
    extract_fingerprints([DATASET_ID], check_dataset_integrity=True, num_processes=1)
    plan_experiments([DATASET_ID])
    _narrow_plans(preprocessed)
    preprocess([DATASET_ID], configurations=(CONFIGURATION,), num_processes=(1,))
    folder = preprocessed / "Dataset900_Phantom"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    os.environ["nnUNet_n_proc_DA"] = "0"  # augment in this process: no worker pool to start
    plans["continue_training"] = False  # what nnunetv2's run_training passes for a new training
    torch.manual_seed(0)
    trainer = nnUNetTrainer(plans, CONFIGURATION, 0, dataset_json, device=torch.device("cpu"))
    trainer.num_epochs = 1
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = 1
    trainer.run_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
