"""Preprocessing of one case with MONAI transforms, and its inverse for predictions.

Pipeline (nnU-Net's order: normalise at the original spacing, then resample):

1. ``LoadImage`` (nibabel) of the image channels and the label, channel first.
2. Intensity normalisation per channel:

   * **CT** (nnU-Net ``CTNormalization``): clip to the 0.5 / 99.5 percentiles of the training
     foreground, then ``(x - mean) / std`` with the foreground mean and std (computed once per
     dataset by :func:`compute_intensity_stats`). One MONAI ``ScaleIntensityRange`` does both:
     the linear map sending ``lo -> (lo - mean) / std`` and ``hi -> (hi - mean) / std`` *is*
     the z-score, and ``clip=True`` is the clipping.
   * **z-score** (nnU-Net ``ZScoreNormalization``): per case ``(x - mean) / std`` over the whole
     channel (MONAI ``NormalizeIntensity``).
3. ``Orientation`` to RAS and ``Spacing`` to the target spacing (trilinear for the image,
   nearest for the label).
4. Arrays are transposed from MONAI's ``(i, j, k)`` to ``[D, H, W] = (k, j, i)``, the order
   nnU-Net and this project's model patch sizes use.

:meth:`PreparedCase.restore` maps probabilities back with MONAI ``SpatialResample`` from the
preprocessed affine to the original one, which undoes orientation and spacing in one step.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    LoadImage,
    NormalizeIntensity,
    Orientation,
    ScaleIntensityRange,
    Spacing,
    SpatialResample,
)

from benchmark.data.builder import write_nifti
from benchmark.data.errors import GeometryMismatchError, ImageReadError, UnknownLabelError
from benchmark.data.reader import CaseFiles

__all__ = [
    "ChannelStats",
    "PreparedCase",
    "compute_intensity_stats",
    "preprocess_case",
]

# nnU-Net pools at most 1e8 foreground voxels over the dataset; a per-case cap keeps this cheap.
_MAX_FOREGROUND_SAMPLES_PER_CASE = 1_000_000
_STATS_SEED = 1234  # nnU-Net's seed for the same sampling


@dataclass(frozen=True)
class ChannelStats:
    """Foreground intensity statistics of one channel over the training cases (nnU-Net's)."""

    mean: float
    std: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass
class PreparedCase:
    """One case, preprocessed for a network and kept on its original grid for scoring.

    Attributes:
        case_id: the case id.
        image: ``[C, D, H, W]`` float32, RAS-oriented, resampled and normalised.
        label_preprocessed: ``[D, H, W]`` int16 label on the image's grid (nearest resampling).
        label: ``[D, H, W]`` int16 label on the original grid, ``(k, j, i)`` of the file.
        spacing_mm: original voxel size, same axis order as ``label``.
        spacing_preprocessed_mm: voxel size of ``image``, ``[D, H, W]``.
        affine: ``4 x 4`` original voxel ``(i, j, k)`` to world (RAS mm) matrix.
        affine_preprocessed: the same for the preprocessed grid, voxel ``(i, j, k)`` =
            ``image[:, k, j, i]``.
    """

    case_id: str
    image: torch.Tensor
    label_preprocessed: np.ndarray
    label: np.ndarray
    spacing_mm: tuple[float, float, float]
    spacing_preprocessed_mm: tuple[float, float, float]
    affine: np.ndarray
    affine_preprocessed: np.ndarray

    def restore(self, probs: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Resample class probabilities from the preprocessed grid back to the original one.

        Args:
            probs: ``[K, D, H, W]`` on the grid of ``image`` (e.g. sliding-window softmax).
            mode: ``bilinear`` (trilinear; probabilities stay in [0, 1] and sum to 1) or
                ``nearest``.

        Returns:
            ``[K, *label.shape]`` float32 on the CPU.
        """
        if probs.ndim != 4 or tuple(probs.shape[1:]) != tuple(self.image.shape[1:]):
            raise ValueError(
                f"restore({self.case_id!r}): probs must be [K, {', '.join(map(str, self.image.shape[1:]))}]"
                f" (the preprocessed grid), got {tuple(probs.shape)}"
            )
        src = MetaTensor(
            probs.detach().float().cpu().permute(0, 3, 2, 1),
            meta={"affine": torch.as_tensor(self.affine_preprocessed, dtype=torch.float64)},
        )
        out = SpatialResample(mode=mode, padding_mode="border", dtype=torch.float32)(
            src,
            dst_affine=torch.as_tensor(self.affine, dtype=torch.float64),
            spatial_size=tuple(int(s) for s in self.label.shape[::-1]),
        )
        return out.as_tensor().permute(0, 3, 2, 1).contiguous()

    #: NIfTI, whatever the dataset's own files are (MONAI read them as such).
    file_ending = ".nii.gz"

    def write_segmentation(self, segmentation: np.ndarray, path: str | Path) -> Path:
        """Write a ``[D, H, W]`` label map of this case as NIfTI on its original grid."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        volume = np.ascontiguousarray(segmentation.transpose(2, 1, 0)).astype(np.uint8)
        tmp = path.with_name(f".{path.name}.tmp.nii.gz")
        write_nifti(tmp, volume, self.affine)
        os.replace(tmp, path)
        return path


def _load(files: Sequence[str], what: str) -> MetaTensor:
    """Load NIfTI file(s) channel-first, turning any failure into :class:`ImageReadError`."""
    loader = LoadImage(image_only=True, ensure_channel_first=True, reader="NibabelReader")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return loader(list(files) if len(files) > 1 else files[0])
    except Exception as exc:  # truncated gzip, bad header, short data: many exception types
        raise ImageReadError(
            f"cannot read the voxel data of {what} {', '.join(map(str, files))}: {exc}; the file is "
            "corrupt or truncated, re-export or re-download it"
        ) from exc


def _check_label_values(label: np.ndarray, labels: dict[int, str], path: str) -> None:
    values = np.unique(label)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise UnknownLabelError(f"label file {path} holds non-integer values {values[:5]}")
    unknown = sorted(int(v) for v in values if int(v) not in labels)
    if unknown:
        raise UnknownLabelError(
            f"label file {path} holds values {unknown} that dataset.json 'labels' does not declare "
            f"(declared: {sorted(labels)}); add them to dataset.json or fix the label"
        )


def compute_intensity_stats(
    cases: Sequence[CaseFiles], n_channels: int, labels: dict[int, str]
) -> list[ChannelStats]:
    """Foreground (label > 0) intensity statistics per channel, pooled over ``cases``.

    As nnU-Net's dataset fingerprint: mean and std of the raw foreground intensities and their
    0.5 / 99.5 percentiles. Voxels are subsampled (seeded) to at most 1e6 per case.

    Raises:
        ImageReadError, UnknownLabelError: a file cannot be read or holds undeclared labels.
    """
    rng = np.random.default_rng(_STATS_SEED)
    pooled: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    for case in cases:
        try:
            label = np.asarray(nib.load(str(case.label)).dataobj)
        except Exception as exc:
            raise ImageReadError(
                f"cannot read the voxel data of label {case.label}: {exc}"
            ) from exc
        label = label.reshape(label.shape[:3])
        _check_label_values(label, labels, str(case.label))
        fg = np.flatnonzero(label > 0)
        if fg.size > _MAX_FOREGROUND_SAMPLES_PER_CASE:
            fg = np.sort(rng.choice(fg, _MAX_FOREGROUND_SAMPLES_PER_CASE, replace=False))
        image = _load([str(p) for p in case.images], "image").numpy()
        for c in range(n_channels):
            pooled[c].append(image[c].reshape(-1)[fg])
    stats = []
    for c in range(n_channels):
        values = np.concatenate(pooled[c]).astype(np.float64)
        if values.size == 0:
            raise UnknownLabelError(
                "the training labels hold no foreground voxels, so CT normalisation statistics "
                "cannot be computed; check labelsTr or use normalization=zscore"
            )
        lo, hi = np.percentile(values, [0.5, 99.5])
        stats.append(ChannelStats(float(values.mean()), float(values.std()), float(lo), float(hi)))
    return stats


def _normalize(image: MetaTensor, schemes: Sequence[str], stats: Sequence[ChannelStats] | None):
    channels = []
    for c, scheme in enumerate(schemes):
        x = image[c : c + 1].float()
        if scheme == "ct":
            if stats is None:
                raise ValueError("CT normalisation needs the dataset intensity statistics")
            s = stats[c]
            std = max(s.std, 1e-8)
            lo, hi = s.percentile_00_5, s.percentile_99_5
            if hi <= lo:  # constant foreground: the map degenerates to subtracting the mean
                x = x.clamp(lo, hi) - s.mean
            else:
                x = ScaleIntensityRange(
                    a_min=lo,
                    a_max=hi,
                    b_min=(lo - s.mean) / std,
                    b_max=(hi - s.mean) / std,
                    clip=True,
                )(x)
        else:
            x = NormalizeIntensity(channel_wise=True)(x)
        channels.append(x)
    return torch.cat(channels, dim=0)


def preprocess_case(
    case: CaseFiles,
    labels: dict[int, str],
    schemes: Sequence[str],
    target_spacing_mm: Sequence[float],
    stats: Sequence[ChannelStats] | None = None,
) -> PreparedCase:
    """Load, check, normalise, reorient and resample one case.

    Args:
        case: the case's files.
        labels: declared label ids (values outside raise).
        schemes: per channel ``"ct"`` or ``"zscore"``.
        target_spacing_mm: ``[D, H, W]`` voxel size after resampling.
        stats: per channel dataset statistics (needed for ``"ct"`` channels).

    Raises:
        ImageReadError: voxel data cannot be read.
        GeometryMismatchError: image and label grids disagree.
        UnknownLabelError: the label holds undeclared values.
    """
    label = _load([str(case.label)], "label")
    image = _load([str(p) for p in case.images], "image")
    if label.shape[0] != 1 or tuple(image.shape[1:]) != tuple(label.shape[1:]):
        raise GeometryMismatchError(
            f"case {case.case_id!r}: image {tuple(image.shape)} and label {tuple(label.shape)} "
            f"({case.label}) do not share one 3D grid"
        )
    if image.shape[0] != len(schemes):
        raise GeometryMismatchError(
            f"case {case.case_id!r}: {image.shape[0]} image channels, expected {len(schemes)}"
        )
    label_np = label[0].numpy()
    _check_label_values(label_np, labels, str(case.label))
    affine = np.asarray(label.affine, dtype=np.float64)
    image = _normalize(image, schemes, stats)
    image.affine = label.affine  # one grid for both (headers were checked to agree)
    pixdim = tuple(float(s) for s in target_spacing_mm[::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        orient = Orientation(axcodes="RAS")
        image_p = Spacing(pixdim=pixdim, mode="bilinear", padding_mode="border")(orient(image))
        label_p = Spacing(pixdim=pixdim, mode="nearest", padding_mode="zeros")(orient(label))
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return PreparedCase(
        case_id=case.case_id,
        image=image_p.as_tensor().float().permute(0, 3, 2, 1).contiguous(),
        label_preprocessed=np.ascontiguousarray(
            np.rint(label_p[0].numpy()).astype(np.int16).transpose(2, 1, 0)
        ),
        label=np.ascontiguousarray(label_np.astype(np.int16).transpose(2, 1, 0)),
        spacing_mm=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        spacing_preprocessed_mm=tuple(float(s) for s in target_spacing_mm),
        affine=affine,
        affine_preprocessed=np.asarray(image_p.affine, dtype=np.float64),
    )
