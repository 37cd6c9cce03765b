"""The cases of a dataset as a MONAI bundle sees them: the bundle's own transforms, our labels.

A bundle brings its preprocessing, inferer and postprocessing (:class:`benchmark.models.bundle.
MonaiBundle`); the dataset (files, splits, ground truth on the original grid) is the data
config's. This adapter joins the two so the pipeline can score, calibrate and cache a bundle like
any other model. Calibration crops of a bundle's input are uniform over the volume: the bundle's
transforms apply to the image only, so no label exists on its grid to bias crops with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["BundleCase", "BundleCases"]


@dataclass
class BundleCase:
    """One case: the bundle's preprocessed item and the ground truth on the original grid."""

    case_id: str
    item: Any
    image: torch.Tensor
    label_preprocessed: np.ndarray
    _prepared: Any

    @property
    def label(self) -> np.ndarray:
        return self._prepared.label

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self._prepared.spacing_mm

    file_ending = ".nii.gz"

    def write_segmentation(self, segmentation: np.ndarray, path: str | Path) -> Path:
        """Write a label map of this case as NIfTI on its original grid."""
        return self._prepared.write_segmentation(segmentation, path)


class BundleCases:
    """``split`` / ``prepare`` over a dataset, each case preprocessed by the bundle."""

    def __init__(self, dataset: Any, bundle: Any):
        self.dataset, self.bundle = dataset, bundle
        self.name, self.root, self.labels = dataset.name, dataset.root, dataset.labels
        self.num_classes, self.in_channels = dataset.num_classes, dataset.in_channels

    def split(self, name: str) -> list[str]:
        return self.dataset.split(name)

    def prepare(self, case_id: str) -> BundleCase:
        files = self.dataset.index.case(case_id)
        item = self.bundle.preprocess([str(p) for p in files.images])
        image = self.bundle.network_input(item)
        return BundleCase(
            case_id=case_id,
            item=item,
            image=image,
            label_preprocessed=np.zeros(tuple(image.shape[1:]), dtype=np.int16),
            _prepared=self.dataset.prepare(case_id),
        )
