"""Random training patches: class-balanced foreground crops plus light augmentation (MONAI).

Sampling follows nnU-Net's foreground oversampling: a share ``foreground_fraction`` of the
patches is centred on a voxel of a foreground class drawn uniformly among the classes present in
the case (so a 1 cm adrenal is as likely a centre as the liver), the rest on a background voxel,
which for abdominal volumes is close to a uniformly random position. MONAI's
``RandCropByLabelClassesd`` does exactly this given per-class ratios; the ratios are set per case
because a class absent from a case must get ratio 0.

Every patch is a pure function of ``(seed, epoch, index)``: its transforms are re-seeded from a
``numpy.random.SeedSequence`` of the three numbers. The patch stream therefore does not depend
on the number of loader workers, nor on what happened in earlier epochs, which is what makes a
resumed run equal to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    RandCropByLabelClassesd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPad,
)
from monai.transforms.utils import map_classes_to_indices
from torch.utils.data import Dataset

__all__ = ["PatchDataset", "TrainingVolume", "make_training_volume"]


@dataclass(frozen=True)
class TrainingVolume:
    """One preprocessed training case padded to at least the patch size.

    Attributes:
        case_id: the dataset's case id.
        image: ``[C, D, H, W]`` float32, zero-padded (symmetrically, like MONAI's sliding window)
            to at least the patch size.
        label: ``[1, D, H, W]`` int64 on the same grid (padding is background).
        class_indices: per class ``k`` of ``0..K-1``, the flat indices of its voxels.
    """

    case_id: str
    image: torch.Tensor
    label: torch.Tensor
    class_indices: tuple[np.ndarray, ...]


def make_training_volume(
    case_id: str,
    image: torch.Tensor,
    label: np.ndarray | torch.Tensor,
    patch_size: Sequence[int],
    num_classes: int,
) -> TrainingVolume:
    """Pad a preprocessed case to the patch size and index the voxels of each class.

    Args:
        case_id: the case's id (for messages).
        image: ``[C, D, H, W]`` preprocessed image.
        label: ``[D, H, W]`` integer label map on the preprocessed grid.
        patch_size: ``[D, H, W]`` training patch size.
        num_classes: K, background included.

    Returns:
        The padded :class:`TrainingVolume`.

    Raises:
        ValueError: image and label grids differ, or the label holds values outside ``0..K-1``.
    """
    label = torch.as_tensor(np.asarray(label)).long()
    if image.ndim != 4 or tuple(image.shape[1:]) != tuple(label.shape):
        raise ValueError(
            f"case {case_id!r}: image {tuple(image.shape)} and label {tuple(label.shape)} "
            "must be [C, D, H, W] and [D, H, W] on the same grid"
        )
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        raise ValueError(
            f"case {case_id!r}: label values span [{int(label.min())}, {int(label.max())}], "
            f"outside the {num_classes} classes 0..{num_classes - 1}"
        )
    pad = SpatialPad(spatial_size=[int(s) for s in patch_size], mode="constant")
    image = _plain(pad(image.float())).float().contiguous()
    label = _plain(pad(label[None])).long().contiguous()
    indices = map_classes_to_indices(label, num_classes=num_classes)
    return TrainingVolume(
        case_id=case_id,
        image=image,
        label=label,
        class_indices=tuple(np.asarray(i) for i in indices),
    )


def _plain(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A plain tensor: MONAI's MetaTensor carries metadata the network does not need."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


class PatchDataset(Dataset):
    """``iterations_per_epoch * batch_size`` random patches per epoch from in-memory volumes.

    Item ``i`` of epoch ``e`` is drawn with the seed ``SeedSequence([seed, e, i])``; call
    :meth:`set_epoch` before each epoch.

    Args:
        volumes: training cases from :func:`make_training_volume`.
        patch_size: ``[D, H, W]``.
        length: patches per epoch.
        seed: base seed.
        foreground_fraction: share of patches centred on a foreground voxel.
        flip_prob: probability of mirroring each axis in ``flip_axes``.
        flip_axes: spatial axes (0 = D, 1 = H, 2 = W) that may be mirrored.
        intensity_prob: probability of each of the intensity scale and shift augmentations.
        intensity_scale: ``x * (1 + u)``, ``u ~ U(-scale, scale)``.
        intensity_shift: ``x + u``, ``u ~ U(-shift, shift)`` (units of the normalised image).

    Items are ``(image [C, *patch], label [1, *patch] int64)`` plain tensors.
    """

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        patch_size: Sequence[int],
        length: int,
        seed: int = 0,
        foreground_fraction: float = 0.67,
        flip_prob: float = 0.0,
        flip_axes: Sequence[int] = (0, 1, 2),
        intensity_prob: float = 0.3,
        intensity_scale: float = 0.1,
        intensity_shift: float = 0.1,
    ):
        if not volumes:
            raise ValueError("PatchDataset needs at least one training volume")
        self.volumes = list(volumes)
        self.patch_size = [int(s) for s in patch_size]
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        augment = []
        if flip_prob > 0:
            augment += [
                RandFlipd(keys=("image", "label"), prob=flip_prob, spatial_axis=int(a))
                for a in flip_axes
            ]
        if intensity_prob > 0:
            augment += [
                RandScaleIntensityd(keys="image", factors=intensity_scale, prob=intensity_prob),
                RandShiftIntensityd(keys="image", offsets=intensity_shift, prob=intensity_prob),
            ]
        self._crops = [self._crop_for(v, foreground_fraction) for v in self.volumes]
        self._augment = Compose(augment) if augment else None

    def _crop_for(self, volume: TrainingVolume, foreground_fraction: float) -> Compose:
        """Class-balanced crop for one case (ratios are per case: absent classes get 0)."""
        present = [len(i) > 0 for i in volume.class_indices]
        n_fg = sum(present[1:])
        if n_fg == 0 or foreground_fraction == 0.0:
            ratios = [1.0] + [0.0] * (len(present) - 1)
        elif foreground_fraction == 1.0:
            ratios = [0.0] + [float(p) for p in present[1:]]
        else:
            # P(background) = r0 / (r0 + n_fg) = 1 - foreground_fraction.
            r0 = n_fg * (1.0 - foreground_fraction) / foreground_fraction
            ratios = [r0 if present[0] else 0.0] + [float(p) for p in present[1:]]
        return Compose(
            [
                RandCropByLabelClassesd(
                    keys=("image", "label"),
                    label_key="label",
                    spatial_size=self.patch_size,
                    ratios=ratios,
                    num_classes=len(present),
                    num_samples=1,
                    indices_key="class_indices",
                    allow_smaller=False,
                )
            ]
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the patch stream of ``epoch`` (0-based)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        seeds = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(3)
        case = int(seeds[0] % len(self.volumes))
        volume = self.volumes[case]
        crop = self._crops[case]
        crop.set_random_state(seed=int(seeds[1]))
        sample = crop(
            {
                "image": volume.image,
                "label": volume.label,
                "class_indices": list(volume.class_indices),
            }
        )[0]
        if self._augment is not None:
            self._augment.set_random_state(seed=int(seeds[2]))
            sample = self._augment(sample)
        image = _plain(sample["image"]).float().contiguous()
        label = _plain(sample["label"]).long().contiguous()
        return image, label
