"""The cases of an nnU-Net v2 training, preprocessed and exported by nnU-Net's own code.

For a model that is an nnU-Net results folder, the harness's MONAI preprocessing would be a
different model input: nnU-Net reads with the plans' reader (SimpleITK axis order), crops to the
nonzero region, normalises with the intensity statistics stored in the plans, and resamples with
its own spline / separate-z rules. So here the plans' preprocessor class
(``DefaultPreprocessor.run_case``, exactly what ``nnUNetPredictor`` calls) prepares each case, and
nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape`` takes the logits back to
the original grid (resampling, un-cropping, un-transposing). Ground truth is read with the same
reader, so scored arrays are aligned as nnU-Net's evaluator aligns them.

Cases follow the training: ``train`` and ``val`` are the fold's lists in ``splits_final.json``
(fold ``all`` trained on every case, so its ``val`` is empty); ``test`` is the labelled
``imagesTs``/``labelsTs`` of the raw dataset.

Ignore label: voxels whose ground truth is the ignore label are set to background in both the
prediction and the ground truth before scoring, which leaves every class's DSC as nnU-Net's
evaluator computes it (it masks those voxels); surface distances then treat them as background.
Region-based trainings (sigmoid outputs, overlapping regions) are refused with a clear error.

Preprocessed cases are cached as ``.npz`` + ``.json`` (properties; no pickles) under
``<cache>/nnunet_preprocessed/<dataset>-<key>/``, keyed by the plans, configuration, dataset.json,
raw folder and :data:`NNUNET_CASES_VERSION`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.data.cache import atomic_write, cache_root, load_npz, save_npz, stable_hash
from benchmark.data.errors import DatasetError, SplitError
from benchmark.data.reader import DatasetIndex
from benchmark.data.splits import SPLITS, read_splits_file

__all__ = ["NNUNET_CASES_VERSION", "NnUNetCase", "NnUNetCases"]

# Bump when the cached arrays change meaning.
NNUNET_CASES_VERSION = 1


@dataclass
class NnUNetCase:
    """One case as nnU-Net feeds it to the network, and its ground truth on the original grid.

    Attributes:
        case_id: the case id.
        image: ``[C, D, H, W]`` float32 preprocessed input (transposed, cropped, resampled,
            normalised) exactly as ``nnUNetPredictor`` builds it.
        label: ``[D, H, W]`` ground truth on the original grid, read by the plans' reader.
        label_preprocessed: the ground truth on ``image``'s grid (for calibration crops).
        spacing_mm: voxel size of ``label`` in its axis order, mm.
        properties: nnU-Net's per-case properties (crop box, shapes, reader geometry).
        ignore_mask: ``[D, H, W]`` voxels whose ground truth is the ignore label (already set
            to background in ``label``; the prediction must be too), or ``None``.
    """

    case_id: str
    image: torch.Tensor
    label: np.ndarray
    label_preprocessed: np.ndarray
    spacing_mm: tuple[float, float, float]
    properties: dict[str, Any]
    ignore_mask: np.ndarray | None
    _owner: NnUNetCases

    def restore(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits on the preprocessed grid -> class probabilities ``[K, D, H, W]`` on the
        original grid, by nnU-Net's export (resample logits, softmax, un-crop, un-transpose)."""
        # nnunetv2 pulls in a large import tree that runs of other models never need
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape,
        )

        owner = self._owner
        _, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits,
            owner.plans_manager,
            owner.configuration_manager,
            owner.label_manager,
            self.properties,
            return_probabilities=True,
        )
        return torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))

    @property
    def file_ending(self) -> str:
        """The dataset's file ending (``.nii.gz``), as nnU-Net names its predictions."""
        return self._owner.file_ending

    def write_segmentation(self, segmentation: np.ndarray, path: str | Path) -> Path:
        """Write a label map of this case with the plans' writer (same geometry as the input)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the writer picks the format from the file ending, so the temporary name keeps it
        tmp = path.with_name(f".{path.name}.tmp{self._owner.file_ending}")
        self._owner.reader_writer.write_seg(
            segmentation.astype(np.uint8), str(tmp), self.properties
        )
        os.replace(tmp, path)
        return path


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class NnUNetCases:
    """The labelled cases of an nnU-Net training's raw dataset, split by the training's fold.

    Attributes:
        name: dataset id for result rows (the data config's ``name``).
        root: the raw dataset folder.
        labels: ``{id: name}`` from the training's ``dataset.json`` (background included,
            ``ignore`` left out).
        num_classes, in_channels: network output and input channels.
        ignore_label: the ``ignore`` label id, or ``None``.
    """

    def __init__(
        self,
        name: str,
        plans: Mapping[str, Any],
        dataset_json: Mapping[str, Any],
        configuration: str,
        fold: str,
        index: DatasetIndex,
        splits_file: str | Path,
        cache_dir: str | Path | None = None,
    ):
        labels = dict(dataset_json["labels"])
        if any(isinstance(v, (list, tuple)) for v in labels.values()):
            raise DatasetError(
                f"{plans['dataset_name']}: region-based training (labels {labels}) is not supported; "
                "its outputs are sigmoid regions, not classes"
            )
        self.name = name
        self.plans = dict(plans)
        self.dataset_json = dict(dataset_json)
        self.configuration = configuration
        self.fold = str(fold)
        self.index = index
        self.root = index.root
        self.splits_file = Path(splits_file)
        self.ignore_label = labels.pop("ignore", None)
        self.labels = {int(v): str(k) for k, v in sorted(labels.items(), key=lambda kv: kv[1])}
        self.num_classes = len(self.labels)
        self.in_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
        self.file_ending = str(dataset_json.get("file_ending", ".nii.gz"))
        self._cache_base = cache_root(cache_dir)
        self._check_cases()

    @cached_property
    def plans_manager(self) -> Any:
        # nnunetv2 pulls in a large import tree that runs of other models never need
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        return PlansManager(self.plans)

    @cached_property
    def configuration_manager(self) -> Any:
        return self.plans_manager.get_configuration(self.configuration)

    @cached_property
    def label_manager(self) -> Any:
        return self.plans_manager.get_label_manager(self.dataset_json)

    @cached_property
    def reader_writer(self) -> Any:
        return self.plans_manager.image_reader_writer_class()

    @cached_property
    def _splits(self) -> dict[str, list[str]]:
        known = sorted(self.index.training)
        if self.fold == "all":
            train, val = known, []
        else:
            train, val = read_splits_file(self.splits_file, int(self.fold))
        return {"train": sorted(train), "val": sorted(val), "test": sorted(self.index.test)}

    def _check_cases(self) -> None:
        listed = set(self._splits["train"]) | set(self._splits["val"])
        missing = sorted(listed - set(self.index.training))
        if missing:
            raise SplitError(
                f"{self.splits_file} fold {self.fold} lists cases that {self.root} lacks: "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; point data.root at the raw "
                f"dataset {self.plans['dataset_name']} the model was trained on"
            )

    def split(self, name: str) -> list[str]:
        """Sorted case ids of ``train``/``val`` (the fold's) or ``test`` (``imagesTs``)."""
        if name not in SPLITS:
            raise SplitError(f"unknown split {name!r}; use one of {list(SPLITS)}")
        return list(self._splits[name])

    @cached_property
    def cache_dir(self) -> Path:
        """Folder of this training's preprocessed cases."""
        key = stable_hash(
            {
                "plans": self.plans,
                "configuration": self.configuration,
                "dataset_json": self.dataset_json,
                "root": str(self.root.resolve()),
                "version": NNUNET_CASES_VERSION,
            }
        )
        return self._cache_base / "nnunet_preprocessed" / f"{self.name}-{key}"

    def _preprocess(self, files: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """nnU-Net's preprocessing of the image (what the network sees) and of the label on the
        same grid (only for foreground-biased calibration crops; the image does not depend on
        it). Foreground sampling locations are dropped: nothing here samples with them."""
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        data, seg, properties = preprocessor.run_case(
            [str(p) for p in files.images],
            str(files.label),
            self.plans_manager,
            self.configuration_manager,
            self.dataset_json,
        )
        properties.pop("class_locations", None)
        label = np.clip(np.asarray(seg[0]), 0, None).astype(
            np.int16
        )  # -1 marks outside the crop mask
        return np.ascontiguousarray(data, dtype=np.float32), label, _json_ready(properties)

    def prepare(self, case_id: str) -> NnUNetCase:
        """The case preprocessed by nnU-Net (computed once, then read from the cache)."""
        files = self.index.case(case_id)
        arrays_path = self.cache_dir / f"{case_id}.npz"
        props_path = self.cache_dir / f"{case_id}.json"
        if arrays_path.is_file() and props_path.is_file():
            arrays = load_npz(arrays_path)
            data, label_preprocessed = arrays["image"], arrays["label_preprocessed"]
            properties = json.loads(props_path.read_text())
        else:
            data, label_preprocessed, properties = self._preprocess(files)
            save_npz(arrays_path, {"image": data, "label_preprocessed": label_preprocessed})
            atomic_write(props_path, lambda tmp: tmp.write_text(json.dumps(properties)))
        seg, seg_props = self.reader_writer.read_seg(str(files.label))
        label = np.asarray(seg[0])
        ignore = None if self.ignore_label is None else label == self.ignore_label
        if ignore is not None:
            label = np.where(ignore, 0, label)
        return NnUNetCase(
            case_id=case_id,
            image=torch.from_numpy(data),
            label=label.astype(np.int16),
            label_preprocessed=label_preprocessed,
            spacing_mm=tuple(float(s) for s in seg_props["spacing"]),
            properties=properties,
            ignore_mask=ignore,
            _owner=self,
        )
