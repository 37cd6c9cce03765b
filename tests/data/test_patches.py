"""calibration_patches: deterministic, ROI-sized, padded, foreground-biased, never from test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmark.data import SplitError, calibration_patches, open_dataset


@pytest.fixture
def ds(tmp_path, kit):
    root = kit.write_nnunet(tmp_path, n_cases=8)
    return open_dataset(kit.nnunet_cfg(root, split={"fractions": [0.5, 0.25, 0.25]}))


def test_shapes_batches_and_determinism(ds):
    a = calibration_patches(ds, "train", n=5, roi_size=(8, 8, 8), seed=3, batch_size=2)
    assert [tuple(t.shape) for t in a] == [(2, 1, 8, 8, 8), (2, 1, 8, 8, 8), (1, 1, 8, 8, 8)]
    assert all(t.dtype == torch.float32 for t in a)
    b = calibration_patches(ds, "train", n=5, roi_size=(8, 8, 8), seed=3, batch_size=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = calibration_patches(ds, "train", n=5, roi_size=(8, 8, 8), seed=4, batch_size=2)
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_volume_smaller_than_roi_is_padded(ds):
    (patch,) = calibration_patches(ds, "val", n=1, roi_size=(20, 24, 24), seed=0)
    assert tuple(patch.shape) == (1, 1, 20, 24, 24)


def test_patches_are_crops_of_the_prepared_split(ds):
    # Every patch must occur in one of the split's preprocessed volumes (val here).
    vols = [ds.prepare(c).image[0] for c in ds.split("val")]
    for (patch,) in calibration_patches(ds, "val", n=4, roi_size=(6, 6, 6), seed=1):
        windows = [v.unfold(0, 6, 1).unfold(1, 6, 1).unfold(2, 6, 1) for v in vols]
        assert any((w == patch[0]).flatten(3).all(-1).any() for w in windows)


def test_foreground_bias(tmp_path, kit):
    # A 2^3 organ in a 16^3 volume: an unbiased 4^3 crop touches it ~6% of the time; with
    # pos:neg = 2:1 centres about 2/3 of the crops must hold it.
    folder = tmp_path / "Dataset003_Dot"
    aff = kit.affine_for((2.0, 2.0, 2.0), flip=(False, False, False))
    for i in range(3):
        label = np.zeros((16, 16, 16), np.uint8)
        label[6 + i : 8 + i, 5:7, 9:11] = 1
        image = np.where(label > 0, 100.0, 0.0) + np.random.default_rng(i).normal(0, 1, label.shape)
        kit.save(folder / "imagesTr" / f"d{i}_0000.nii.gz", image.astype(np.float32), aff)
        kit.save(folder / "labelsTr" / f"d{i}.nii.gz", label, aff)
    meta = {
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "dot": 1},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    cfg = kit.nnunet_cfg(
        folder, target_spacing_mm=[2.0, 2.0, 2.0], split={"fractions": [1.0, 0.0, 0.0]}
    )
    patches = calibration_patches(open_dataset(cfg), "train", n=30, roi_size=(4, 4, 4), seed=0)
    with_fg = sum(float(p.max()) > 5.0 for p in patches)  # z-scored: the dot is ~20 sd bright
    assert with_fg >= 14


def test_test_split_is_refused(ds):
    with pytest.raises(SplitError, match="test"):
        calibration_patches(ds, "test", n=1, roi_size=(4, 4, 4))
    with pytest.raises(ValueError, match="roi_size"):
        calibration_patches(ds, "train", n=1, roi_size=(4, 4))


def test_patches_are_cropped_while_iterated_and_replayed_identically(ds, monkeypatch):
    # A calibration over many patches must not hold them all: nothing is cropped before the
    # first batch is asked for, and each batch crops only its own patches.
    prepared = []
    real_prepare = ds.prepare
    monkeypatch.setattr(ds, "prepare", lambda case: prepared.append(case) or real_prepare(case))
    patches = calibration_patches(ds, "train", n=5, roi_size=(8, 8, 8), seed=3, batch_size=2)
    assert len(patches) == 3 and prepared == []
    stream = iter(patches)
    first = next(stream)
    assert tuple(first.shape) == (2, 1, 8, 8, 8) and len(prepared) == 2
    rest = list(stream)
    assert len(prepared) == 5 and [tuple(t.shape)[0] for t in rest] == [2, 1]
    again = list(patches)
    assert all(torch.equal(x, y) for x, y in zip([first, *rest], again, strict=True))
    assert torch.equal(patches[-1], rest[-1]) and torch.equal(patches[0], first)
    with pytest.raises(IndexError, match="batch 3 of 3"):
        patches[3]
