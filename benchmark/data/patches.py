"""ROI-size calibration patches: the inputs a quantized network sees during sliding-window use.

Patches are sampled like nnU-Net / MONAI training patches: pad the volume to at least the ROI,
then ``RandCropByPosNegLabel`` centres two of every three crops on a foreground voxel and one
on a background voxel. A single seeded generator drives the choice of cases and of the crop
MONAI draws, so the same arguments give the same tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd

from benchmark.data.errors import SplitError

if TYPE_CHECKING:
    from benchmark.data.dataset import SegmentationDataset

__all__ = ["calibration_patches"]

_ALLOWED_SPLITS = ("train", "val")


def calibration_patches(
    dataset: SegmentationDataset,
    split: str = "train",
    n: int = 16,
    roi_size: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    batch_size: int = 1,
    with_labels: bool = False,
) -> list[torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic foreground-biased ROI crops from preprocessed cases of one split.

    Cases are visited in a seeded shuffle (cycling when ``n`` exceeds the split), one crop per
    visit, so ``n <= len(split)`` crops come from ``n`` distinct cases.

    Args:
        dataset: an opened dataset.
        split: ``train`` or ``val``; never ``test`` (calibrating on test data leaks it).
        n: number of patches.
        roi_size: ``[D, H, W]`` crop size in preprocessed voxels (the network's patch size).
        seed: seed of the case order and the crop positions.
        batch_size: patches per returned tensor; the last tensor holds the remainder.
        with_labels: also return each crop's label map (for algorithms that train on labels,
            such as QAT); the images are the same crops as without.

    Returns:
        ``ceil(n / batch_size)`` float32 tensors ``[B, C, *roi_size]``, or with ``with_labels``
        ``(image, label)`` pairs with int64 labels ``[B, 1, *roi_size]``.

    Raises:
        SplitError: ``split`` is not train/val, or it is empty.
        ValueError: ``n``, ``batch_size`` or ``roi_size`` are invalid.
    """
    if split not in _ALLOWED_SPLITS:
        raise SplitError(
            f"calibration_patches: split={split!r} is not allowed; use one of {list(_ALLOWED_SPLITS)} "
            "(test cases must stay unseen)"
        )
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != 3 or min(roi) < 1 or n < 1 or batch_size < 1:
        raise ValueError(
            f"calibration_patches: need n >= 1, batch_size >= 1 and a 3D roi_size, got n={n}, "
            f"batch_size={batch_size}, roi_size={roi_size}"
        )
    cases = dataset.split(split)
    if not cases:
        raise SplitError(f"calibration_patches: split {split!r} of {dataset.name!r} is empty")
    rng = np.random.default_rng(seed)
    order = [cases[i] for i in rng.permutation(len(cases))]
    crop = Compose(
        [
            SpatialPadd(keys=("image", "label"), spatial_size=roi, mode="constant"),
            RandCropByPosNegLabeld(
                keys=("image", "label"),
                label_key="label",
                spatial_size=roi,
                pos=2.0,
                neg=1.0,
                num_samples=1,
                allow_smaller=False,
            ),
        ]
    )
    patches, labels = [], []
    for i in range(n):
        case = dataset.prepare(order[i % len(order)])
        # Each crop gets its own seed from the shared generator: the result does not depend
        # on MONAI's internal random-state bookkeeping across calls.
        crop.set_random_state(seed=int(rng.integers(2**31 - 1)))
        sample = crop(
            {
                "image": case.image,
                "label": torch.from_numpy(case.label_preprocessed[None].astype(np.int64)),
            }
        )[0]
        patches.append(torch.as_tensor(sample["image"]).float())
        labels.append(torch.as_tensor(sample["label"]).long())
    images = [torch.stack(patches[i : i + batch_size]) for i in range(0, n, batch_size)]
    if not with_labels:
        return images
    maps = [torch.stack(labels[i : i + batch_size]) for i in range(0, n, batch_size)]
    return list(zip(images, maps, strict=True))
