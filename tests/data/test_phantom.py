"""The embedded phantom: deterministic, atomic, anatomically sized, readable as nnU-Net raw."""

from __future__ import annotations

import hashlib
import json
import threading

import nibabel as nib
import numpy as np
import pytest

from benchmark.data import (
    PHANTOM_LABELS,
    DatasetError,
    calibration_patches,
    generate_phantom,
    open_dataset,
)
from benchmark.data.phantom_anatomy import synthesize_case

SMALL = {"n_cases": 3, "inplane_voxels": 32}


def _digest(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
    a = generate_phantom(tmp_path / "a", seed=5, **SMALL)
    b = generate_phantom(tmp_path / "b", seed=5, **SMALL)
    c = generate_phantom(tmp_path / "c", seed=6, **SMALL)
    assert _digest(a) == _digest(b)
    assert _digest(a)["labelsTr/phantom_000.nii.gz"] != _digest(c)["labelsTr/phantom_000.nii.gz"]
    # Case i depends only on (seed, i): a worker pool gives the same files as a serial run.
    d = generate_phantom(tmp_path / "d", seed=5, n_cases=4, inplane_voxels=32, workers=2)
    assert (
        _digest(d)["imagesTr/phantom_002_0000.nii.gz"]
        == _digest(a)["imagesTr/phantom_002_0000.nii.gz"]
    )


def test_layout_labels_and_headers(tmp_path):
    folder = generate_phantom(tmp_path, seed=0, **SMALL)
    meta = json.loads((folder / "dataset.json").read_text())
    assert folder.name == "Dataset900_Phantom"
    assert meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == 3
    assert {v: k for k, v in meta["labels"].items()} == PHANTOM_LABELS
    img = nib.load(folder / "imagesTr" / "phantom_001_0000.nii.gz")
    lab = nib.load(folder / "labelsTr" / "phantom_001.nii.gz")
    assert np.allclose(img.affine, lab.affine) and img.shape == lab.shape
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert img.get_data_dtype() == np.int16
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".Dataset900_Phantom.") and p.is_dir()
    ]


def test_anatomy_default_grid():
    # Default size: every organ present, sizes ordered large (liver) to small (adrenal ~1 cm).
    hu, label, affine = synthesize_case(np.random.default_rng(np.random.SeedSequence([0, 0])))
    assert hu.shape[:2] == (96, 96) and 33 <= hu.shape[2] <= 47
    sx, sz = -affine[0, 0], affine[2, 2]
    assert 2.7 < sx < 3.4 and 3.2 <= sz <= 4.6
    voxel_ml = sx * sx * sz / 1000
    volume_ml = {PHANTOM_LABELS[k]: (label == k).sum() * voxel_ml for k in range(1, 9)}
    assert volume_ml["liver"] > 500 and 80 < volume_ml["spleen"] < 600
    assert 60 < volume_ml["kidney_left"] < 400 and 10 < volume_ml["pancreas"] < 150
    assert 0.3 < volume_ml["adrenal_right"] < 8 and 0.3 < volume_ml["adrenal_left"] < 8
    # HU ranges like CT: air, fat, organs, contrast-enhanced aorta, bone.
    assert hu.min() <= -900 and hu.max() >= 400
    liver, aorta = hu[label == 1].mean(), hu[label == 6].mean()
    assert 40 < liver < 90 and aorta > liver + 50
    # Overlapping contrast: spleen within 25 HU of liver.
    assert abs(hu[label == 2].mean() - liver) < 25


def test_existing_folder_reused_or_refused(tmp_path):
    folder = generate_phantom(tmp_path, seed=1, **SMALL)
    stamp = (folder / "dataset.json").stat().st_mtime_ns
    assert generate_phantom(tmp_path, seed=1, **SMALL) == folder
    assert (folder / "dataset.json").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="delete it or choose another"):
        generate_phantom(tmp_path, seed=2, **SMALL)


def test_concurrent_callers_generate_once(tmp_path):
    results, errors = [], []

    def call():
        try:
            results.append(generate_phantom(tmp_path, seed=3, n_cases=2, inplane_voxels=24))
        except Exception as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "Dataset900_Phantom"
    ]


def test_open_dataset_phantom_end_to_end(tmp_path):
    cfg = {
        "name": "phantom",
        "format": "phantom",
        "n_cases": 4,
        "inplane_voxels": 32,
        "target_spacing_mm": [12.0, 9.0, 9.0],
        "split": {"fractions": [0.5, 0.25, 0.25]},
    }
    ds = open_dataset(cfg)
    assert ds.root.parent.parent == tmp_path / "cache" / "phantom"  # root: null -> cache
    assert ds.num_classes == 9 and ds.modality == "CT" and ds.normalization_schemes == ("ct",)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [2, 1, 1]
    case = ds.prepare(ds.split("test")[0])
    assert case.image.shape[0] == 1 and case.label.shape[1:] == (32, 32)
    assert set(np.unique(case.label)) <= set(range(9))
    (batch,) = calibration_patches(ds, "train", n=2, roi_size=(8, 16, 16), batch_size=2)
    assert tuple(batch.shape) == (2, 1, 8, 16, 16)


@pytest.mark.slow
def test_default_phantom_set(tmp_path):
    folder = generate_phantom(tmp_path)
    assert len(list((folder / "labelsTr").glob("*.nii.gz"))) == 30
    labels = nib.load(folder / "labelsTr" / "phantom_029.nii.gz").get_fdata()
    assert set(np.unique(labels)) == set(range(9))
