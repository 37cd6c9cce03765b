"""ROI-size calibration patches: the inputs a quantized network sees during sliding-window use.

Patches are sampled like nnU-Net / MONAI training patches: pad the volume to at least the ROI,
then ``RandCropByPosNegLabel`` centres two of every three crops on a foreground voxel and one
on a background voxel. A single seeded generator drives the choice of cases and of the crop
MONAI draws, so the same arguments give the same tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd

from benchmark.data.errors import SplitError

if TYPE_CHECKING:
    from benchmark.data.dataset import SegmentationDataset

__all__ = ["CalibrationPatches", "calibration_patches"]

_ALLOWED_SPLITS = ("train", "val")


class CalibrationPatches:
    """The patches of one :func:`calibration_patches` call, cropped while they are iterated.

    Each iteration replays the same seeded draw, so the patches are the same every time, and
    only one batch is held at a time: a calibration over 256 patches streams them through the
    observers instead of keeping 256 ROI-size crops (and their label maps) in memory. Whoever
    needs them all at once (an algorithm that passes over them repeatedly) takes ``list()``.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        cases: Sequence[str],
        n: int,
        roi: tuple[int, ...],
        seed: int,
        batch_size: int,
        with_labels: bool,
    ):
        self._dataset, self._cases, self._n, self._roi = dataset, cases, n, roi
        self._seed, self._batch_size, self._with_labels = seed, batch_size, with_labels

    def __len__(self) -> int:
        return -(-self._n // self._batch_size)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` (replays the draw up to it: cheap for an example input, not a loop)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)} calibration batches")
        index %= len(self)
        return next(batch for i, batch in enumerate(self) if i == index)

    def __iter__(self) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        patches, labels = [], []
        for image, label in self._crops():
            patches.append(image)
            labels.append(label)
            if len(patches) == self._batch_size:
                yield self._batch(patches, labels)
                patches, labels = [], []
        if patches:
            yield self._batch(patches, labels)

    def _batch(self, patches: list[torch.Tensor], labels: list[torch.Tensor]):
        images = torch.stack(patches)
        return (images, torch.stack(labels)) if self._with_labels else images

    def _crops(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(self._seed)
        order = [self._cases[i] for i in rng.permutation(len(self._cases))]
        crop = Compose(
            [
                SpatialPadd(keys=("image", "label"), spatial_size=self._roi, mode="constant"),
                RandCropByPosNegLabeld(
                    keys=("image", "label"),
                    label_key="label",
                    spatial_size=self._roi,
                    pos=2.0,
                    neg=1.0,
                    num_samples=1,
                    allow_smaller=False,
                ),
            ]
        )
        for i in range(self._n):
            case = self._dataset.prepare(order[i % len(order)])
            # Each crop gets its own seed from the shared generator: the result does not depend
            # on MONAI's internal random-state bookkeeping across calls.
            crop.set_random_state(seed=int(rng.integers(2**31 - 1)))
            sample = crop(
                {
                    "image": case.image,
                    "label": torch.from_numpy(case.label_preprocessed[None].astype(np.int64)),
                }
            )[0]
            yield torch.as_tensor(sample["image"]).float(), torch.as_tensor(sample["label"]).long()


def calibration_patches(
    dataset: SegmentationDataset,
    split: str = "train",
    n: int = 16,
    roi_size: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    batch_size: int = 1,
    with_labels: bool = False,
) -> CalibrationPatches:
    """Deterministic foreground-biased ROI crops from preprocessed cases of one split.

    Cases are visited in a seeded shuffle (cycling when ``n`` exceeds the split), one crop per
    visit, so ``n <= len(split)`` crops come from ``n`` distinct cases. The crops are made while
    the result is iterated (:class:`CalibrationPatches`); bad arguments fail here, at the call.

    Args:
        dataset: an opened dataset.
        split: ``train`` or ``val``; never ``test`` (calibrating on test data leaks it).
        n: number of patches.
        roi_size: ``[D, H, W]`` crop size in preprocessed voxels (the network's patch size).
        seed: seed of the case order and the crop positions.
        batch_size: patches per yielded tensor; the last tensor holds the remainder.
        with_labels: also yield each crop's label map (for algorithms that train on labels,
            such as QAT); the images are the same crops as without.

    Returns:
        ``ceil(n / batch_size)`` float32 tensors ``[B, C, *roi_size]``, or with ``with_labels``
        ``(image, label)`` pairs with int64 labels ``[B, 1, *roi_size]``, re-iterable.

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
    return CalibrationPatches(dataset, cases, n, roi, seed, batch_size, with_labels)
