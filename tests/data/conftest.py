"""Tiny synthetic datasets in nnU-Net raw and MSD layouts, written into ``tmp_path``."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest


def make_volume(shape, rng, n_classes=3):
    """A CT-like image and a label with ``n_classes - 1`` boxes of distinct HU."""
    label = np.zeros(shape, dtype=np.uint8)
    s = np.array(shape)
    for k in range(1, n_classes):
        lo = (s * rng.uniform(0.1, 0.45, 3)).astype(int)
        hi = lo + np.maximum((s * rng.uniform(0.25, 0.45, 3)).astype(int), 2)
        label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = k
    image = (-100 + 60.0 * label + rng.normal(0, 10, shape)).astype(np.float32)
    return image, label


def affine_for(spacing, flip=(True, True, False), origin=(10.0, -20.0, 5.0)):
    aff = np.diag([(-s if f else s) for s, f in zip(spacing, flip, strict=True)] + [1.0])
    aff[:3, 3] = origin
    return aff


def save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_nnunet(
    root: Path,
    n_cases: int = 6,
    channels: tuple[str, ...] = ("CT",),
    shape=(16, 16, 12),
    spacing=(1.5, 1.5, 3.0),
    n_test: int = 0,
    seed: int = 0,
    flip=(True, True, False),
) -> Path:
    """``root/Dataset123_Tiny`` with ``n_cases`` training and ``n_test`` labelled test cases."""
    rng = np.random.default_rng(seed)
    folder = root / "Dataset123_Tiny"
    aff = affine_for(spacing, flip)
    for split, n in (("Tr", n_cases), ("Ts", n_test)):
        for i in range(n):
            cid = f"tiny_{split.lower()}{i:02d}"
            image, label = make_volume(shape, rng)
            for c in range(len(channels)):
                save(folder / f"images{split}" / f"{cid}_{c:04d}.nii.gz", image * (c + 1), aff)
            save(folder / f"labels{split}" / f"{cid}.nii.gz", label, aff)
    meta = {
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def write_msd(
    root: Path,
    n_cases: int = 5,
    modalities=("FLAIR", "T1w"),
    shape=(16, 16, 16),
    spacing=(1.0, 1.0, 1.0),
    seed=0,
) -> Path:
    """``root/Task99_Tiny``: 4D multi-modal images, id -> name labels, an unlabelled test list."""
    rng = np.random.default_rng(seed)
    folder = root / "Task99_Tiny"
    aff = affine_for(spacing, flip=(False, False, False))
    training = []
    for i in range(n_cases):
        image, label = make_volume(shape, rng)
        stack = np.stack([image + 500 * c for c in range(len(modalities))], axis=-1)
        save(folder / "imagesTr" / f"tiny_{i}.nii.gz", stack if len(modalities) > 1 else image, aff)
        save(folder / "labelsTr" / f"tiny_{i}.nii.gz", label, aff)
        training.append(
            {"image": f"./imagesTr/tiny_{i}.nii.gz", "label": f"./labelsTr/tiny_{i}.nii.gz"}
        )
    save(
        folder / "imagesTs" / "tiny_t.nii.gz", np.zeros(shape + (len(modalities),), np.float32), aff
    )
    meta = {
        "name": "Tiny",
        "modality": {str(i): m for i, m in enumerate(modalities)},
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "numTraining": n_cases,
        "numTest": 1,
        "training": training,
        "test": ["./imagesTs/tiny_t.nii.gz"],
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def nnunet_cfg(root: Path, **over) -> dict:
    cfg = {
        "name": "tiny",
        "format": "nnunet_raw",
        "root": str(root),
        "target_spacing_mm": [3.0, 2.0, 2.0],
        "normalization": "auto",
        "split": {"seed": 0, "fractions": [0.5, 0.25, 0.25], "splits_file": None},
    }
    cfg.update(over)
    return cfg


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder, never the user's."""
    monkeypatch.setenv("MEDQBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny_nnunet(tmp_path) -> Path:
    return write_nnunet(tmp_path / "raw")


@pytest.fixture
def tiny_msd(tmp_path) -> Path:
    return write_msd(tmp_path / "raw")


@pytest.fixture
def kit() -> SimpleNamespace:
    """The builders above, for tests that need non-default tiny datasets."""
    return SimpleNamespace(
        write_nnunet=write_nnunet,
        write_msd=write_msd,
        nnunet_cfg=nnunet_cfg,
        save=save,
        affine_for=affine_for,
        make_volume=make_volume,
    )
