"""The optional Colin27 + AAL dataset: clear error without mricron-data, exact labels with it."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest

import benchmark.data.colin27 as colin27
from benchmark.data import DatasetNotFoundError, open_dataset

needs_mricron = pytest.mark.skipif(
    not colin27.colin27_available(),
    reason="Debian's mricron-data is not installed (apt-get install mricron-data)",
)


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="apt-get install mricron-data"):
        colin27.generate_colin27(tmp_path, templates_dir=tmp_path / "nothing")
    monkeypatch.setattr(colin27, "MRICRON_TEMPLATES", tmp_path / "nothing")
    assert not colin27.colin27_available()
    with pytest.raises(DatasetNotFoundError, match="mricron-data"):
        open_dataset({"name": "colin27", "format": "colin27"})
    assert not (tmp_path / "cache" / "colin27").exists() or not any(
        (tmp_path / "cache" / "colin27").rglob("*.nii.gz")
    )


@needs_mricron
def test_subjects_are_deterministic_deformed_and_exactly_labelled(tmp_path):
    a = colin27.generate_colin27(tmp_path / "a", n_cases=2, seed=0, voxel_mm=4.0, workers=1)
    b = colin27.generate_colin27(tmp_path / "b", n_cases=2, seed=0, voxel_mm=4.0, workers=1)
    name = "labelsTr/colin27_001.nii.gz"
    assert (
        hashlib.sha256((a / name).read_bytes()).digest()
        == hashlib.sha256((b / name).read_bytes()).digest()
    )
    atlas = np.asarray(nib.load(colin27.MRICRON_TEMPLATES / "aal.nii.gz").dataobj)
    labs = [np.asarray(nib.load(a / f"labelsTr/colin27_00{i}.nii.gz").dataobj) for i in (0, 1)]
    assert labs[0].shape == (46, 55, 46)
    for lab in labs:
        # Nearest-neighbour labels: only atlas ids, no blends; most regions survive 4 mm voxels.
        assert set(np.unique(lab)) <= set(np.unique(atlas))
        assert len(np.unique(lab)) > 100
    assert (labs[0] != labs[1]).mean() > 0.02  # different random deformations
    img = np.asarray(nib.load(a / "imagesTr/colin27_000_0000.nii.gz").dataobj).astype(float)
    # Labelled grey matter is bright on T1; the unlabelled rest (air, skull, CSF, white matter
    # outside AAL) is darker on average: image and labels share one warp.
    assert img[labs[0] > 0].mean() > 2 * img[labs[0] == 0].mean()


@needs_mricron
def test_open_dataset_colin27(tmp_path):
    cfg = {
        "name": "colin27",
        "format": "colin27",
        "n_cases": 3,
        "target_spacing_mm": [6.0, 6.0, 6.0],
        "split": {"fractions": [0.34, 0.33, 0.33]},
        "expected_num_classes": 117,
    }
    ds = open_dataset(cfg)
    assert (
        ds.num_classes == 117 and ds.labels[1] == "Precentral_L" and ds.labels[116] == "Vermis_10"
    )
    assert ds.modality == "T1" and ds.normalization_schemes == ("zscore",)
    case = ds.prepare(ds.split("train")[0])
    assert case.label.shape == (91, 109, 91) and case.spacing_mm == pytest.approx((2.0, 2.0, 2.0))
    assert tuple(case.image.shape) == (1, 31, 37, 31)
