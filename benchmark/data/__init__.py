"""Datasets: nnU-Net raw / MSD readers, built-in generated datasets, MONAI preprocessing, splits.

Built-in datasets: the embedded abdominal CT phantom (always available) and Colin27 + AAL brain
MR subjects (only where Debian's ``mricron-data`` is installed).

Entry point: :func:`open_dataset` with the content of ``conf/data/<name>.yaml``; see
:class:`SegmentationDataset` for splits and :meth:`SegmentationDataset.prepare`, and
:func:`calibration_patches` for quantization calibration inputs.
"""

from __future__ import annotations

from benchmark.data.colin27 import colin27_available, generate_colin27
from benchmark.data.config import DataConfig, SplitConfig
from benchmark.data.dataset import SegmentationDataset, open_dataset
from benchmark.data.errors import (
    DataConfigError,
    DatasetError,
    DatasetJsonError,
    DatasetNotFoundError,
    EmptyDatasetError,
    GeometryMismatchError,
    ImageReadError,
    MissingFileError,
    SplitError,
    UnknownLabelError,
)
from benchmark.data.integrity import DatasetIntegrityError, verify_dataset
from benchmark.data.patches import calibration_patches
from benchmark.data.phantom import generate_phantom
from benchmark.data.phantom_anatomy import PHANTOM_LABELS
from benchmark.data.preprocess import PreparedCase

__all__ = [
    "PHANTOM_LABELS",
    "DataConfig",
    "DataConfigError",
    "DatasetError",
    "DatasetIntegrityError",
    "DatasetJsonError",
    "DatasetNotFoundError",
    "EmptyDatasetError",
    "GeometryMismatchError",
    "ImageReadError",
    "MissingFileError",
    "PreparedCase",
    "SegmentationDataset",
    "SplitConfig",
    "SplitError",
    "UnknownLabelError",
    "calibration_patches",
    "colin27_available",
    "generate_colin27",
    "generate_phantom",
    "open_dataset",
    "verify_dataset",
]
