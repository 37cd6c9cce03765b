"""Preprocessing (orientation, spacing, normalisation), the on-disk cache and restore()."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from benchmark.data import open_dataset


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def _one_hot(label: np.ndarray, k: int) -> torch.Tensor:
    return (
        torch.nn.functional.one_hot(torch.from_numpy(label.astype(np.int64)), k)
        .permute(3, 0, 1, 2)
        .float()
    )


def test_shapes_spacing_and_orientation(tiny_nnunet, kit):
    ds = open_dataset(kit.nnunet_cfg(tiny_nnunet))
    case = ds.prepare("tiny_tr00")
    # Original: 16 x 16 x 12 voxels of 1.5 x 1.5 x 3 mm (i, j, k) -> [D, H, W] = (12, 16, 16).
    assert case.label.shape == (12, 16, 16)
    assert case.spacing_mm == pytest.approx((3.0, 1.5, 1.5))
    # Target [3, 2, 2] mm: extents 36 x 24 x 24 mm -> 12 x 12 x 12 voxels.
    assert tuple(case.image.shape) == (1, 12, 12, 12)
    assert case.image.dtype == torch.float32
    assert case.label_preprocessed.shape == (12, 12, 12)
    assert case.spacing_preprocessed_mm == (3.0, 2.0, 2.0)
    # RAS: positive diagonal, the file's LPS flips undone.
    assert np.allclose(np.diag(case.affine_preprocessed)[:3], [2.0, 2.0, 3.0])
    assert np.allclose(np.diag(case.affine)[:3], [-1.5, -1.5, 3.0])


def test_lps_and_ras_files_of_one_anatomy_give_one_preprocessed_volume(tmp_path, kit):
    rng = np.random.default_rng(1)
    image, label = kit.make_volume((16, 16, 12), rng)
    lps = kit.affine_for((1.5, 1.5, 3.0), flip=(True, True, False), origin=(10.0, 20.0, 0.0))
    # The same world content stored on an RAS grid: flip i and j, move the origin to the far corner.
    ras = kit.affine_for(
        (1.5, 1.5, 3.0), flip=(False, False, False), origin=(10 - 15 * 1.5, 20 - 15 * 1.5, 0.0)
    )
    roots = []
    for name, aff, img, lab in (
        ("lps", lps, image, label),
        ("ras", ras, image[::-1, ::-1].copy(), label[::-1, ::-1].copy()),
    ):
        folder = tmp_path / name / "Dataset001_X"
        for i in range(2):
            kit.save(folder / "imagesTr" / f"c{i}_0000.nii.gz", img, aff)
            kit.save(folder / "labelsTr" / f"c{i}.nii.gz", lab, aff)
        meta = {
            "channel_names": {"0": "MR"},
            "labels": {"background": 0, "a": 1, "b": 2},
            "numTraining": 2,
            "file_ending": ".nii.gz",
        }
        (folder / "dataset.json").write_text(json.dumps(meta))
        roots.append(folder)
    a = open_dataset(kit.nnunet_cfg(roots[0], split={"fractions": [0.5, 0.5, 0.0]})).prepare("c0")
    b = open_dataset(kit.nnunet_cfg(roots[1], split={"fractions": [0.5, 0.5, 0.0]})).prepare("c0")
    assert torch.allclose(a.image, b.image, atol=1e-4)
    assert np.array_equal(a.label_preprocessed, b.label_preprocessed)
    assert np.allclose(a.affine_preprocessed, b.affine_preprocessed)


def _identity_cfg(root, kit, **over):
    # Target spacing = file spacing on an RAS file: orientation and resampling are no-ops.
    return kit.nnunet_cfg(root, target_spacing_mm=[3.0, 1.5, 1.5], **over)


def test_ct_normalisation_matches_nnunet_formula(tmp_path, kit):
    root = kit.write_nnunet(tmp_path, n_cases=6, flip=(False, False, False))
    ds = open_dataset(_identity_cfg(root, kit))
    train = ds.split("train")
    fg = []
    for cid in train:
        img = nib.load(root / "imagesTr" / f"{cid}_0000.nii.gz").get_fdata()
        lab = nib.load(root / "labelsTr" / f"{cid}.nii.gz").get_fdata()
        fg.append(img[lab > 0])
    fg = np.concatenate(fg)
    lo, hi = np.percentile(fg, [0.5, 99.5])
    (stats,) = ds.intensity_stats()
    assert stats.mean == pytest.approx(fg.mean(), rel=1e-5)
    assert stats.std == pytest.approx(fg.std(), rel=1e-5)
    assert (stats.percentile_00_5, stats.percentile_99_5) == pytest.approx((lo, hi), rel=1e-5)
    record = json.loads((ds.cache_dir / "intensity_stats.json").read_text())
    assert record["cases"] == train  # statistics never see val or test cases
    cid = ds.split("test")[0]
    raw = nib.load(root / "imagesTr" / f"{cid}_0000.nii.gz").get_fdata()
    expected = (np.clip(raw, lo, hi) - fg.mean()) / fg.std()
    case = ds.prepare(cid)
    assert np.allclose(case.image[0].numpy(), expected.transpose(2, 1, 0), atol=1e-4)


def test_zscore_is_per_case(tmp_path, kit):
    root = kit.write_nnunet(tmp_path, n_cases=4, flip=(False, False, False))
    ds = open_dataset(_identity_cfg(root, kit, normalization="zscore"))
    image = ds.prepare("tiny_tr01").image
    assert float(image.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(image.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)


def test_restore_is_exact_on_an_identity_grid(tmp_path, kit):
    root = kit.write_nnunet(tmp_path, n_cases=4, flip=(False, False, False))
    case = open_dataset(_identity_cfg(root, kit)).prepare("tiny_tr00")
    restored = case.restore(_one_hot(case.label_preprocessed, 3))
    assert np.array_equal(restored.argmax(0).numpy(), case.label)


def test_restore_round_trip_across_orientation_and_spacing(tmp_path, kit):
    # Two balls (radius 9 and 6 mm) on an LPS grid of 0.8 x 0.9 x 2.5 mm, resampled to 1.4 mm.
    shape, spacing = (40, 36, 20), (0.8, 0.9, 2.5)
    aff = kit.affine_for(spacing)
    world = np.stack(
        np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    )
    label = np.zeros(shape, np.uint8)
    for k, centre, radius in ((1, (14.0, 15.0, 22.0), 9.0), (2, (20.0, 16.0, 27.0), 6.0)):
        label[np.linalg.norm(world - np.array(centre)[:, None, None, None], axis=0) < radius] = k
    folder = tmp_path / "Dataset002_Balls"
    for i in range(3):
        kit.save(folder / "imagesTr" / f"b{i}_0000.nii.gz", label * 50.0 + i, aff)
        kit.save(folder / "labelsTr" / f"b{i}.nii.gz", label, aff)
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    cfg = kit.nnunet_cfg(
        folder, target_spacing_mm=[1.4, 1.4, 1.4], split={"fractions": [0.4, 0.3, 0.3]}
    )
    case = open_dataset(cfg).prepare("b1")
    # MONAI sizes the grid by the centre-to-centre extent: 47.5 / 1.4 + 1 -> 35, 31.5 -> 23, 31.2 -> 23.
    assert case.image.shape[1:] == (35, 23, 23)
    probs = case.restore(_one_hot(case.label_preprocessed, 3))
    assert tuple(probs.shape) == (3, *case.label.shape) == (3, 20, 36, 40)
    assert torch.allclose(probs.sum(0), torch.ones(case.label.shape), atol=1e-4)
    pred = probs.argmax(0).numpy()
    for k in (1, 2):
        assert _dice(pred == k, case.label == k) > 0.9
    with pytest.raises(ValueError, match="preprocessed grid"):
        case.restore(probs)


def test_prepare_is_cached_and_keyed_by_config(tiny_nnunet, kit):
    ds = open_dataset(kit.nnunet_cfg(tiny_nnunet))
    first = ds.prepare("tiny_tr02")
    path = ds.cache_dir / "tiny_tr02.npz"
    assert path.is_file() and not list(ds.cache_dir.glob("*.tmp"))
    again = open_dataset(kit.nnunet_cfg(tiny_nnunet)).prepare("tiny_tr02")
    assert torch.equal(first.image, again.image) and np.array_equal(first.label, again.label)
    assert again.affine_preprocessed.shape == (4, 4)
    other = open_dataset(kit.nnunet_cfg(tiny_nnunet, target_spacing_mm=[3.0, 3.0, 3.0]))
    assert other.cache_dir != ds.cache_dir
    assert other.prepare("tiny_tr02").image.shape != first.image.shape
