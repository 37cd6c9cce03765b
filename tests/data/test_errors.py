"""Each kind of bad input raises its own DatasetError naming the file or key; nothing is cached."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from benchmark.data import (
    DatasetJsonError,
    DatasetNotFoundError,
    EmptyDatasetError,
    GeometryMismatchError,
    ImageReadError,
    MissingFileError,
    UnknownLabelError,
    open_dataset,
)


def _no_cached_arrays(tmp_path):
    return not list((tmp_path / "cache").rglob("*.npz")) and not list(
        (tmp_path / "cache").rglob("*.tmp")
    )


def test_missing_root(tmp_path, kit):
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        open_dataset(kit.nnunet_cfg(tmp_path / "nowhere"))


def test_empty_folder(tmp_path, kit):
    (tmp_path / "Dataset001_Empty").mkdir()
    with pytest.raises(EmptyDatasetError, match="Dataset001_Empty is empty"):
        open_dataset(kit.nnunet_cfg(tmp_path / "Dataset001_Empty"))


def test_missing_dataset_json(tiny_nnunet, kit):
    (tiny_nnunet / "dataset.json").unlink()
    with pytest.raises(DatasetJsonError, match=r"dataset\.json is missing"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))


@pytest.mark.parametrize("key", ["labels", "channel_names", "file_ending", "numTraining"])
def test_missing_dataset_json_key(tiny_nnunet, kit, key):
    meta = json.loads((tiny_nnunet / "dataset.json").read_text())
    del meta[key]
    (tiny_nnunet / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetJsonError, match=f"lacks the key '{key}'"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))


def test_invalid_json_and_bad_values(tiny_nnunet, kit):
    path = tiny_nnunet / "dataset.json"
    meta = json.loads(path.read_text())
    path.write_text("{not json")
    with pytest.raises(DatasetJsonError, match="not valid JSON"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))
    path.write_text(json.dumps({**meta, "numTraining": 7}))
    with pytest.raises(DatasetJsonError, match="numTraining is 7 but 6"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))
    path.write_text(json.dumps({**meta, "labels": {"background": 0, "kidney": [1, 2]}}))
    with pytest.raises(DatasetJsonError, match="region-based"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))
    path.write_text(json.dumps({**meta, "file_ending": ".mha"}))
    with pytest.raises(DatasetJsonError, match="file_ending '.mha' is not supported"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))
    path.write_text(json.dumps(meta))
    with pytest.raises(DatasetJsonError, match="declares 3 labels"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet, expected_num_classes=14))


def test_missing_label_file(tiny_nnunet, kit):
    (tiny_nnunet / "labelsTr" / "tiny_tr03.nii.gz").unlink()
    with pytest.raises(MissingFileError, match=r"tiny_tr03\.nii\.gz"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))


def test_missing_msd_file(tiny_msd, kit):
    (tiny_msd / "imagesTr" / "tiny_2.nii.gz").unlink()
    with pytest.raises(MissingFileError, match=r"training\[2\]"):
        open_dataset(kit.nnunet_cfg(tiny_msd, format="msd"))


def test_garbage_nifti_fails_at_open(tiny_nnunet, kit):
    (tiny_nnunet / "imagesTr" / "tiny_tr01_0000.nii.gz").write_bytes(b"this is not a NIfTI file")
    with pytest.raises(ImageReadError, match=r"tiny_tr01_0000\.nii\.gz"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))


def test_truncated_nifti_fails_at_prepare_and_writes_nothing(tmp_path, tiny_nnunet, kit):
    path = tiny_nnunet / "imagesTr" / "tiny_tr01_0000.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))  # header intact, voxels cut short
    # headers are fine; the voxels are checked when the case is prepared
    ds = open_dataset(kit.nnunet_cfg(tiny_nnunet, normalization="zscore"), verify=False)
    with pytest.raises(ImageReadError, match=r"tiny_tr01_0000\.nii\.gz"):
        ds.prepare("tiny_tr01")
    assert _no_cached_arrays(tmp_path)


def test_shape_mismatch(tiny_nnunet, kit):
    aff = kit.affine_for((1.5, 1.5, 3.0))
    kit.save(tiny_nnunet / "labelsTr" / "tiny_tr02.nii.gz", np.zeros((16, 16, 10), np.uint8), aff)
    with pytest.raises(GeometryMismatchError, match=r"tiny_tr02.*\(16, 16, 12\).*\(16, 16, 10\)"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))


def test_affine_mismatch(tiny_nnunet, kit):
    aff = kit.affine_for((1.5, 1.5, 3.0), origin=(12.0, -20.0, 5.0))  # shifted by 2 mm
    kit.save(tiny_nnunet / "labelsTr" / "tiny_tr02.nii.gz", np.zeros((16, 16, 12), np.uint8), aff)
    with pytest.raises(GeometryMismatchError, match=r"affine of image .*tiny_tr02_0000"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))


def test_channel_count_mismatch(tiny_msd, kit):
    meta = json.loads((tiny_msd / "dataset.json").read_text())
    meta["modality"] = {"0": "FLAIR", "1": "T1w", "2": "T2w"}
    (tiny_msd / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(GeometryMismatchError, match="declares 3"):
        open_dataset(kit.nnunet_cfg(tiny_msd, format="msd"))


def test_undeclared_label_value(tmp_path, tiny_nnunet, kit):
    aff = kit.affine_for((1.5, 1.5, 3.0))
    label = np.zeros((16, 16, 12), np.uint8)
    label[2:5, 2:5, 2:5] = 7
    kit.save(tiny_nnunet / "labelsTr" / "tiny_tr04.nii.gz", label, aff)
    ds = open_dataset(kit.nnunet_cfg(tiny_nnunet, normalization="zscore"), verify=False)
    with pytest.raises(UnknownLabelError, match=r"tiny_tr04\.nii\.gz holds values \[7\]"):
        ds.prepare("tiny_tr04")
    assert _no_cached_arrays(tmp_path)


def test_undeclared_label_in_ct_statistics(tiny_nnunet, kit):
    # CT statistics read every training label first; the same check applies there.
    aff = kit.affine_for((1.5, 1.5, 3.0))
    label = np.full((16, 16, 12), 9, np.uint8)
    for cid in [f"tiny_tr{i:02d}" for i in range(6)]:
        kit.save(tiny_nnunet / "labelsTr" / f"{cid}.nii.gz", label, aff)
    ds = open_dataset(kit.nnunet_cfg(tiny_nnunet), verify=False)
    with pytest.raises(UnknownLabelError, match=r"holds values \[9\]"):
        ds.prepare(ds.split("test")[0])
