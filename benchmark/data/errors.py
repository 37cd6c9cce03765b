"""Exceptions raised for unusable datasets: each names the file or key at fault and the fix.

All derive from :class:`DatasetError`, so callers that only want "this dataset cannot be used"
catch one type, while tests and the runner can tell the causes apart.
"""

from __future__ import annotations

__all__ = [
    "DataConfigError",
    "DatasetError",
    "DatasetJsonError",
    "DatasetNotFoundError",
    "EmptyDatasetError",
    "GeometryMismatchError",
    "ImageReadError",
    "MissingFileError",
    "SplitError",
    "UnknownLabelError",
]


class DatasetError(Exception):
    """Base class: the dataset (or its configuration) cannot be used as given."""


class DataConfigError(DatasetError, ValueError):
    """A ``conf/data`` value is missing, of the wrong type or outside its allowed values."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset root folder does not exist."""


class EmptyDatasetError(DatasetError):
    """The dataset folder exists but holds no usable cases."""


class DatasetJsonError(DatasetError):
    """``dataset.json`` is missing, unreadable, or lacks / misstates a required key."""


class MissingFileError(DatasetError, FileNotFoundError):
    """An image or label file that ``dataset.json`` or the folder layout promises is absent."""


class ImageReadError(DatasetError):
    """A NIfTI file exists but its header or voxel data cannot be read (corrupt or truncated)."""


class GeometryMismatchError(DatasetError):
    """Image channels and label of one case disagree in shape or affine (voxel-to-world map)."""


class UnknownLabelError(DatasetError):
    """A label volume holds values that ``dataset.json`` does not declare."""


class SplitError(DatasetError):
    """A split is unknown, empty, or a splits file names cases that are not in the dataset."""
