"""Training patches: shapes, padding, foreground balance and (seed, epoch, index) determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from benchmark.train.patches import PatchDataset, make_training_volume


def _volume(case_id="c0", shape=(10, 24, 24), seed=0, noise=1.0):
    """Image = label + noise; a large class 1 block and a single-voxel class 2 (a tiny organ)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.int64)
    label[2:8, 4:14, 4:14] = 1
    label[5, 20, 20] = 2
    image = torch.from_numpy(noise * rng.normal(size=(1, *shape)).astype(np.float32) + label)
    return make_training_volume(case_id, image, label, (16, 16, 16), num_classes=3)


def test_volume_is_padded_to_the_patch_and_indexed():
    vol = _volume()
    assert vol.image.shape == (1, 16, 24, 24) and vol.label.shape == (1, 16, 24, 24)
    assert vol.image[0, :3].abs().sum() == 0  # symmetric zero padding of 10 -> 16 slices
    assert [len(i) for i in vol.class_indices] == [16 * 24 * 24 - 601, 600, 1]


def test_bad_label_is_rejected():
    with pytest.raises(ValueError, match="outside the 3 classes"):
        make_training_volume("c9", torch.zeros(1, 4, 4, 4), np.full((4, 4, 4), 5), (4, 4, 4), 3)
    with pytest.raises(ValueError, match="same grid"):
        make_training_volume("c9", torch.zeros(1, 4, 4, 4), np.zeros((4, 4, 5)), (4, 4, 4), 3)


def test_foreground_patches_cover_every_present_class():
    ds = PatchDataset([_volume()], (16, 16, 16), length=40, foreground_fraction=1.0)
    hits = [set(torch.unique(label).tolist()) for _, label in (ds[i] for i in range(len(ds)))]
    assert all(h & {1, 2} for h in hits)  # every patch is centred on foreground
    # class-uniform choice: the single-voxel class is a centre about half of the time
    assert 10 <= sum(2 in h for h in hits) <= 30


def test_patch_depends_only_on_seed_epoch_index():
    vols = [_volume("a", seed=0), _volume("b", seed=1)]
    ds = PatchDataset(vols, (16, 16, 16), length=6, seed=5, intensity_prob=1.0)
    ds.set_epoch(3)
    first = [ds[i] for i in range(6)]
    assert first[0][0].shape == (1, 16, 16, 16) and first[0][1].dtype == torch.int64
    ds.set_epoch(0)
    other_epoch = ds[0]
    ds.set_epoch(3)
    for i in reversed(range(6)):  # order of access does not matter
        assert torch.equal(ds[i][0], first[i][0]) and torch.equal(ds[i][1], first[i][1])
    assert not torch.equal(other_epoch[0], first[0][0])
    batched = next(iter(DataLoader(ds, batch_size=6, num_workers=2)))
    assert torch.equal(batched[0], torch.stack([f[0] for f in first]))  # workers change nothing


def test_flips_keep_image_and_label_aligned():
    vol = _volume(noise=0.0)  # image == label voxel for voxel
    ds = PatchDataset([vol], (16, 16, 16), length=20, flip_prob=1.0, intensity_prob=0.0)
    for i in range(len(ds)):
        image, label = ds[i]
        assert torch.equal(image, label.float())
    # with every axis mirrored, the patch is the flipped crop: class 1 sits at the far corner
    image, _ = PatchDataset([vol], (16, 24, 24), length=1, flip_prob=1.0, intensity_prob=0.0)[0]
    assert torch.equal(image, vol.image.flip(1, 2, 3))
