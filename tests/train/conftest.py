"""Small phantom dataset and a tiny PlainConvUNet config shared by the trainer tests."""

from __future__ import annotations

import copy

import pytest

from benchmark.data import open_dataset

# 8 cases of 32^2 x (33-47) voxels resampled to 8 x 9 x 9 mm: about 19 x 33 x 33 voxels each.
SMALL_PHANTOM = {
    "name": "phantom",
    "format": "phantom",
    "root": None,
    "target_spacing_mm": [8.0, 9.0, 9.0],
    "normalization": "auto",
    "split": {"seed": 0, "fractions": [0.5, 0.25, 0.25], "splits_file": None},
    "n_cases": 8,
    "seed": 0,
    "inplane_voxels": 32,
    "cache_dir": None,
    "expected_num_classes": 9,
}

# Three-stage PlainConvUNet (about 20 k parameters); strides 1-2-2 need patches divisible by 4.
TINY_MODEL = {
    "name": "test_unet",
    "display_name": "test U-Net",
    "framework": "nnUNet",
    "family": "cnn",
    "published_params_m": None,
    "patch_size": [16, 32, 32],
    "net": {
        "_target_": "benchmark.models.nnunet.build_nnunet",
        "n_stages": 3,
        "features_per_stage": [8, 16, 32],
        "kernel_sizes": 3,
        "strides": [1, 2, 2],
        "n_conv_per_stage": 1,
        "n_conv_per_stage_decoder": 1,
    },
    "checkpoint": None,
    "checkpoint_format": "state_dict",
}


@pytest.fixture(scope="session")
def small_data_cfg(tmp_path_factory) -> dict:
    cfg = copy.deepcopy(SMALL_PHANTOM)
    cfg["cache_dir"] = str(tmp_path_factory.mktemp("phantom_cache"))
    return cfg


@pytest.fixture(scope="session")
def small_dataset(small_data_cfg):
    return open_dataset(small_data_cfg)


def make_cfg(data_cfg: dict, **trainer) -> dict:
    """A composed-config stand-in: tiny model, small phantom, quiet short training."""
    base = {
        "epochs": 2,
        "iterations_per_epoch": 2,
        "batch_size": 2,
        "val_every": 1,
        "progress": False,
        "max_val_cases": 1,
    }
    base.update(trainer)
    return {"model": copy.deepcopy(TINY_MODEL), "data": copy.deepcopy(data_cfg), "trainer": base}
