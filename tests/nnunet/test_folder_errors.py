"""Bad nnU-Net folders and contradicting settings fail before any work, naming file and fix."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from benchmark.config import ConfigError, build_point
from benchmark.data import SplitError
from benchmark.models import CheckpointError, open_nnunet_folder
from benchmark.points.errors import PointError
from benchmark.points.sources import open_source

pytestmark = pytest.mark.slow


@pytest.fixture
def folder(nnunet_training, tmp_path):
    """A private copy of the trained results folder that a test may break."""
    return shutil.copytree(
        nnunet_training.results, tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    )


def _edit_json(path, edit):
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def test_the_folder_alone_sets_network_patch_and_mirroring(nnunet_training):
    trained = open_nnunet_folder(nnunet_training.results)
    plans = json.loads((nnunet_training.results / "plans.json").read_text())
    assert trained.patch_size == plans["configurations"]["3d_fullres"]["patch_size"]
    assert (trained.fold, trained.configuration, trained.mirroring_axes) == (
        "0",
        "3d_fullres",
        (0, 1, 2),
    )
    network = trained.build_network()
    stored = torch.load(trained.checkpoint_file, weights_only=False)["network_weights"]
    assert all(torch.equal(network.state_dict()[k], v) for k, v in stored.items())


def test_folder_without_plans_is_named(folder):
    (folder / "plans.json").unlink()
    with pytest.raises(
        CheckpointError, match=r"no plans\.json; an nnU-Net v2 results folder holds"
    ):
        open_nnunet_folder(folder)


def test_missing_fold_lists_the_folds_there(folder):
    with pytest.raises(
        CheckpointError, match=r"fold_3/checkpoint_final\.pth does not exist; .*\['0'\]"
    ):
        open_nnunet_folder(folder, fold=3)


def test_configuration_the_plans_lack_is_named(folder):
    _edit_json(folder / "plans.json", lambda p: p["configurations"].pop("3d_fullres"))
    with pytest.raises(
        Exception, match=r"configuration '3d_fullres' not found; available: \['2d'\]"
    ):
        open_nnunet_folder(folder)


def test_label_count_that_differs_from_dataset_json_is_named(folder):
    _edit_json(folder / "dataset.json", lambda d: d["labels"].pop("adrenal_left"))
    with pytest.raises(CheckpointError, match="predicts 9 classes but .*dataset.json declares 8"):
        open_nnunet_folder(folder).build_network()


def test_raw_dataset_missing_split_cases_is_named(folder_cfg, nnunet_training, tmp_path):
    raw = shutil.copytree(nnunet_training.raw, tmp_path / "raw" / nnunet_training.raw.name)
    splits = json.loads((nnunet_training.preprocessed / "splits_final.json").read_text())
    gone = splits[0]["val"][0]
    (raw / "imagesTr" / f"{gone}_0000.nii.gz").unlink()
    (raw / "labelsTr" / f"{gone}.nii.gz").unlink()
    _edit_json(raw / "dataset.json", lambda d: d.update(numTraining=d["numTraining"] - 1))
    cfg = build_point(folder_cfg("precision=fp32", "granularity=none", f"data.root={raw}"))
    with pytest.raises(
        SplitError, match=f"lists cases that .* lacks: \\['{gone}'\\]; point data.root"
    ):
        open_source(cfg)


def test_roi_that_contradicts_the_plans_names_both(folder_cfg):
    cfg = build_point(
        folder_cfg("precision=fp32", "granularity=none", "inference.roi_size=[16,32,32]")
    )
    with pytest.raises(
        PointError, match=r"inference.roi_size=\[16, 32, 32\] contradicts .*patch size is"
    ):
        open_source(cfg)


def test_training_cases_are_scored_only_when_asked(folder_cfg):
    with pytest.raises(ConfigError, match="evaluation.allow_training_cases=true"):
        build_point(folder_cfg("precision=fp32", "granularity=none", "evaluation.split=train"))
    cfg = build_point(
        folder_cfg(
            "precision=fp32",
            "granularity=none",
            "evaluation.split=train",
            "evaluation.allow_training_cases=true",
        )
    )
    source = open_source(cfg)
    assert source.columns["training_cases_scored"] is True
    assert source.dataset.split("train") and not set(source.dataset.split("train")) & set(
        source.dataset.split("val")
    )


def test_split_defaults_to_the_folds_validation_cases(folder_cfg, nnunet_training):
    cfg = build_point(folder_cfg("precision=fp32", "granularity=none"))
    assert cfg.evaluation.split == "val"
    splits = json.loads((nnunet_training.preprocessed / "splits_final.json").read_text())
    source = open_source(cfg)
    assert source.dataset.split("val") == sorted(splits[0]["val"])
    assert source.dataset.split("train") == sorted(splits[0]["train"])
