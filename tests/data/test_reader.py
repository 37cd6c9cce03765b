"""Reading nnU-Net raw and MSD folders: labels, modality, spacing, cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.data import open_dataset
from benchmark.data.reader import read_dataset


def test_nnunet_labels_modality_spacing(tiny_nnunet, kit):
    ds = open_dataset(kit.nnunet_cfg(tiny_nnunet))
    assert ds.labels == {0: "background", 1: "organ", 2: "lesion"}
    assert ds.num_classes == 3 and ds.in_channels == 1 and ds.modality == "CT"
    assert ds.case_ids == [f"tiny_tr{i:02d}" for i in range(6)]
    header = ds.headers["tiny_tr00"]
    assert header.shape == (16, 16, 12)
    # [D, H, W] = (k, j, i): the 3 mm slice axis first.
    assert header.spacing_mm == pytest.approx((3.0, 1.5, 1.5))


def test_nnunet_multichannel_and_labelled_test_cases(tmp_path, kit):
    root = kit.write_nnunet(tmp_path, n_cases=4, channels=("T2", "ADC"), n_test=2)
    # An unlabelled test image is ignored: it cannot be scored.
    (root / "imagesTs" / "lonely_0000.nii.gz").write_bytes(
        (root / "imagesTs" / "tiny_ts00_0000.nii.gz").read_bytes()
    )
    index = read_dataset(root, "nnunet_raw")
    assert index.channel_names == ("T2", "ADC")
    assert len(index.training["tiny_tr00"].images) == 2
    assert sorted(index.test) == ["tiny_ts00", "tiny_ts01"]
    ds = open_dataset(kit.nnunet_cfg(root))
    assert ds.in_channels == 2 and ds.modality == "T2+ADC"
    assert ds.normalization_schemes == ("zscore", "zscore")


def test_nnunet_explicit_dataset_key(tiny_nnunet):
    meta = json.loads((tiny_nnunet / "dataset.json").read_text())
    meta["dataset"] = {
        "a": {"images": ["imagesTr/tiny_tr00_0000.nii.gz"], "label": "labelsTr/tiny_tr00.nii.gz"},
        "b": {"images": ["imagesTr/tiny_tr01_0000.nii.gz"], "label": "labelsTr/tiny_tr01.nii.gz"},
    }
    meta["numTraining"] = 2
    (tiny_nnunet / "dataset.json").write_text(json.dumps(meta))
    index = read_dataset(tiny_nnunet, "nnunet_raw")
    assert sorted(index.training) == ["a", "b"]
    assert index.training["a"].label == (tiny_nnunet / "labelsTr" / "tiny_tr00.nii.gz").resolve()


def test_msd_4d_multimodal(tiny_msd, kit):
    cfg = kit.nnunet_cfg(tiny_msd, format="msd", name="msd_tiny")
    ds = open_dataset(cfg)
    assert ds.labels == {0: "background", 1: "edema", 2: "tumour"}
    assert ds.channel_names == ("FLAIR", "T1w") and ds.in_channels == 2
    assert ds.case_ids == [f"tiny_{i}" for i in range(5)]  # the unlabelled test image is not a case
    case = ds.prepare("tiny_0")
    assert case.image.shape[0] == 2
    # Each MR channel is z-scored on its own, so the +500 offset of channel 1 disappears.
    means = case.image.mean(dim=(1, 2, 3)).numpy()
    assert np.all(np.abs(means) < 0.2)


def test_msd_single_channel_ct(tmp_path, kit):
    root = kit.write_msd(tmp_path, n_cases=3, modalities=("CT",))
    ds = open_dataset(kit.nnunet_cfg(root, format="msd", split={"fractions": [0.4, 0.3, 0.3]}))
    assert ds.in_channels == 1 and ds.normalization_schemes == ("ct",)


def test_nnunet_v1_layout_read_as_msd(tiny_msd):
    # nnU-Net v1 used the MSD dataset.json; format nnunet_raw accepts it.
    index = read_dataset(tiny_msd, "nnunet_raw")
    assert index.format == "msd" and len(index.training) == 5
