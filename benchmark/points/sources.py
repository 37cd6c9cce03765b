"""What a run predicts with: its cases, its FP32 network, and how a network scores a case.

Two kinds of model reach the pipeline:

* a registry model (``conf/model/<name>.yaml``, shipped or user weights): cases come from the
  data config and are preprocessed by :mod:`benchmark.data` (MONAI), prediction is MONAI's
  sliding window, optionally mirrored;
* an nnU-Net v2 results folder (``model.checkpoint=FOLDER`` holding ``plans.json``): the folder
  is the model. Network, patch size, spacing, normalisation, resampling, label handling, fold
  and mirroring axes come from it; nnU-Net's own preprocessor, sliding window and export do the
  work (:mod:`benchmark.data.nnunet_cases`, :mod:`benchmark.infer.nnunet_window`), and the
  cases follow the fold's ``splits_final.json``. Settings that contradict the folder are errors;
* a MONAI bundle folder (``configs/inference.json`` + ``models/model.pt``): the bundle's own
  network, transforms, inferer and postprocessing (:mod:`benchmark.models.bundle`) over the data
  config's cases.

Each gives a :class:`ModelSource` with one :meth:`ModelSource.probabilities` call, so evaluation,
calibration and caching do not care which kind they hold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import benchmark.data as data_layer
import benchmark.infer as infer_layer
import benchmark.models as models_layer
from benchmark.data.nnunet_cases import NnUNetCases
from benchmark.infer.nnunet_window import nnunet_logits
from benchmark.models.bundle import MonaiBundle
from benchmark.points import cache
from benchmark.points.bundle_cases import BundleCases
from benchmark.points.errors import PointError
from benchmark.schema import RunPoint

log = logging.getLogger(__name__)

__all__ = [
    "Mirrored",
    "ModelSource",
    "folder_model_kind",
    "fp32_cache_dir",
    "mirroring_axes",
    "open_source",
    "registry_identity",
    "roi_size",
    "weights_digest",
    "weights_path",
    "window_probabilities",
]


def roi_size(point: RunPoint) -> list[int]:
    """Sliding-window and calibration patch size: ``inference.roi_size`` or the model's."""
    roi = (
        point.inference.roi_size if point.inference.roi_size is not None else point.model.patch_size
    )
    return [int(v) for v in roi]


def mirroring_axes(point: RunPoint, default: tuple[int, ...] = ()) -> tuple[int, ...]:
    """``inference.mirroring`` as spatial axes: ``auto`` -> ``default``, ``none`` -> ``()``."""
    value = point.inference.mirroring
    if value == "auto":
        return tuple(default)
    if value in ("none", None):
        return ()
    axes = value
    if not isinstance(axes, (list, tuple)) or not all(a in (0, 1, 2) for a in axes):
        raise PointError(
            f"inference.mirroring={value!r} must be auto, none or a list of axes from [0, 1, 2]"
        )
    return tuple(sorted(set(int(a) for a in axes)))


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """Drop tensor subclasses (MONAI's MetaTensor): their metadata would otherwise travel into
    observed ranges and saved files, which ``torch.load(weights_only=True)`` refuses."""
    return tensor.as_subclass(torch.Tensor)


class Mirrored(nn.Module):
    """Average of a network's logits over flips of the given axes (nnU-Net's test-time
    mirroring, for registry models under MONAI's sliding window)."""

    def __init__(self, network: nn.Module, axes: tuple[int, ...]):
        super().__init__()
        self.network, self.dims = network, [a + 2 for a in axes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        combos = [list(c) for n in range(1, len(self.dims) + 1) for c in combinations(self.dims, n)]
        for dims in combos:
            out = out + torch.flip(self.network(torch.flip(x, dims)), dims)
        return out / (len(combos) + 1)


def window_probabilities(
    inference: Any, network: nn.Module, image: torch.Tensor, roi: list[int], mirroring: tuple
) -> torch.Tensor:
    """MONAI sliding-window probabilities ``[K, D, H, W]`` on the preprocessed grid, with the
    ``inference`` settings and test-time mirroring along ``mirroring``."""
    predictor = Mirrored(network, mirroring) if mirroring else network
    return infer_layer.predict_probabilities(
        predictor.to(inference.device),
        _plain(image),
        roi,
        overlap=float(inference.overlap),
        sw_batch_size=int(inference.sw_batch_size),
        device=inference.device,
        amp=bool(inference.amp),
        mode=inference.mode,
    )


@dataclass
class ModelSource:
    """A run's cases, FP32 network and prediction settings.

    Attributes:
        dataset: ``split(name)`` / ``prepare(case_id)`` / ``labels`` (a
            :class:`benchmark.data.SegmentationDataset` or an nnU-Net training's cases).
        model: the FP32 network in eval mode.
        roi: window and calibration patch size ``[D, H, W]``.
        mirroring: mirrored axes at inference.
        identity: what determines the weights (for cache keys).
        predict: ``(network, case) -> probabilities on the case's original grid``.
        columns: inference settings every row records.
        folder: the nnU-Net results folder, when the model is one.
    """

    dataset: Any
    model: nn.Module
    roi: list[int]
    mirroring: tuple[int, ...]
    identity: dict[str, Any]
    predict: Callable[[nn.Module, Any], torch.Tensor]
    columns: dict[str, Any] = field(default_factory=dict)
    folder: Any = None

    def probabilities(self, network: nn.Module, case: Any) -> torch.Tensor:
        """Class probabilities ``[K, D, H, W]`` of ``network`` on ``case``'s original grid."""
        return self.predict(network, case)

    def labels_of(self, probs: torch.Tensor, case: Any) -> np.ndarray:
        """The label map of restored probabilities (ignore-label voxels set to background)."""
        labels = probs.argmax(0).numpy()
        mask = getattr(case, "ignore_mask", None)
        return np.where(mask, 0, labels) if mask is not None else labels


def _columns(point: RunPoint, roi: list[int], mirroring: tuple[int, ...], fold: Any) -> dict:
    return {
        "mirroring": ",".join(str(a) for a in mirroring) or "none",
        "overlap": float(point.inference.overlap),
        "roi": "x".join(str(v) for v in roi),
        "fold": "none" if fold is None else str(fold),
        "training_cases_scored": point.evaluation.split == "train",
    }


def weights_path(point: RunPoint) -> Path | None:
    """The file or folder the run's weights come from; ``None`` for a random initialisation."""
    checkpoint = point.model.checkpoint
    if checkpoint is None:
        return None
    if checkpoint == "shipped":
        return models_layer.shipped_weights_path(point.model.name)
    return Path(str(checkpoint)).expanduser()


def weights_digest(point: RunPoint) -> str | None:
    """:func:`~benchmark.points.cache.content_digest` of the run's weights, recorded with every
    run so that results made with other (older, retrained) weights can be told apart; for a
    random initialisation, ``init-<seed>``; ``None`` when the checkpoint is missing (loading
    it then raises the error that says how to make it)."""
    path = weights_path(point)
    if path is None:
        return f"init-{int(point.seed)}"
    return cache.content_digest(path) if path.exists() else None


def registry_identity(point: RunPoint) -> dict[str, Any]:
    """What determines a registry network's weights: its config plus the checkpoint's identity."""
    path = weights_path(point)
    weights: Any = (
        {"random_init_seed": int(point.seed)}
        if path is None
        else cache.checkpoint_fingerprint(path)
    )
    model = asdict(point.model)
    for key in ("fold", "checkpoint_name"):
        if model.get(key) is None:  # unset: keys made before these fields stay valid
            model.pop(key, None)
    return {"model": model, "weights": weights}


def fp32_cache_dir(point: RunPoint, source: ModelSource | None = None) -> Path:
    """Cache folder of the FP32 label maps of this model, data and inference settings.

    Every FP32 baseline is made with the same settings as the run that asks for it, so the
    key holds the resolved inference settings (roi, mirroring) and the model's identity.
    """
    if source is None and not _is_folder(point):
        identity, roi, axes, folder = (
            registry_identity(point),
            roi_size(point),
            mirroring_axes(point),
            False,
        )
    else:
        source = source if source is not None else open_source(point)
        identity, roi, axes = source.identity, source.roi, source.mirroring
        folder = source.folder is not None
    inference_key = asdict(point.inference)
    inference_key.pop("name", None)
    inference_key["roi_size"] = roi
    if axes or folder:
        inference_key["mirroring"] = list(axes)
    else:
        inference_key.pop("mirroring", None)  # keys made before mirroring existed stay valid
    data_key = asdict(point.data)
    key = cache.entry_key(identity, data_key, inference_key)
    return cache.cache_root(point.paths.cache_dir) / "fp32" / key


def _registry_source(point: RunPoint) -> ModelSource:
    dataset = data_layer.open_dataset(point.data)
    torch.manual_seed(int(point.seed))  # random-init models (checkpoint: null) are reproducible
    model = models_layer.build_model(asdict(point.model), dataset.in_channels, dataset.num_classes)
    if point.model.checkpoint is not None:
        model = models_layer.load_weights(model, asdict(point.model))
    else:
        log.warning(
            "%s has no checkpoint (model.checkpoint: null): scoring a randomly initialised "
            "network (seed %d); its scores say nothing about quantization",
            point.model.name,
            int(point.seed),
        )
    roi, axes = roi_size(point), mirroring_axes(point)

    def predict(network: nn.Module, case: Any) -> torch.Tensor:
        return case.restore(window_probabilities(point.inference, network, case.image, roi, axes))

    return ModelSource(
        dataset=dataset,
        model=model.eval(),
        roi=roi,
        mirroring=axes,
        identity=registry_identity(point),
        predict=predict,
        columns=_columns(point, roi, axes, None),
    )


def _splits_file(point: RunPoint, dataset_name: str, raw_root: Path) -> Path:
    """The training's ``splits_final.json``: ``data.split.splits_file`` if a path, else
    ``$nnUNet_preprocessed/<dataset>/``, else the raw dataset folder."""
    given = point.data.split.splits_file
    if given not in (None, "auto"):
        return Path(str(given)).expanduser()
    candidates = []
    if os.environ.get("nnUNet_preprocessed"):
        candidates.append(Path(os.environ["nnUNet_preprocessed"]) / dataset_name)
    candidates.append(raw_root)
    for folder in candidates:
        if (folder / "splits_final.json").is_file():
            return folder / "splits_final.json"
    raise PointError(
        f"no splits_final.json of {dataset_name} in {[str(c) for c in candidates]}; set "
        "data.split.splits_file=PATH (nnU-Net writes it to $nnUNet_preprocessed/<dataset>/) or "
        "set nnUNet_preprocessed"
    )


def _check_folder_settings(point: RunPoint, folder: Any, index: Any) -> None:
    roi = point.inference.roi_size
    if roi is not None and [int(v) for v in roi] != folder.patch_size:
        raise PointError(
            f"inference.roi_size={list(roi)} contradicts {folder.root / 'plans.json'}, whose "
            f"{folder.configuration} patch size is {folder.patch_size}; leave inference.roi_size unset"
        )
    trained = {int(v): str(k) for k, v in folder.dataset_json["labels"].items() if k != "ignore"}
    if trained != dict(index.labels):
        raise PointError(
            f"{index.root / 'dataset.json'} labels {index.labels} differ from the training's "
            f"{folder.root / 'dataset.json'} labels {trained}; point data.root at the raw dataset "
            f"{folder.dataset_name}"
        )


def _folder_source(point: RunPoint) -> ModelSource:
    chosen = {"checkpoint_name": point.model.checkpoint_name} if point.model.checkpoint_name else {}
    folder = models_layer.open_nnunet_folder(
        point.model.checkpoint, fold=point.model.fold, **chosen
    )
    raw = data_layer.open_dataset(point.data)
    _check_folder_settings(point, folder, raw.index)
    splits = None if folder.fold == "all" else _splits_file(point, folder.dataset_name, raw.root)
    dataset = NnUNetCases(
        point.data.name,
        folder.plans,
        folder.dataset_json,
        folder.configuration,
        folder.fold,
        raw.index,
        splits if splits is not None else raw.root / "splits_final.json",
        point.data.cache_dir,
    )
    if point.evaluation.split == "val" and not dataset.split("val"):
        raise PointError(
            f"fold {folder.fold} of {folder.root} has no validation cases (fold all trains on "
            "every case); use evaluation.split=test (imagesTs/labelsTs) or another model.fold"
        )
    axes = mirroring_axes(point, folder.mirroring_axes)
    identity = {
        "nnunet_folder": cache.checkpoint_fingerprint(folder.checkpoint_file),
        "plans": folder.plans,
        "dataset_json": folder.dataset_json,
        "configuration": folder.configuration,
        "splits": None if splits is None else cache.checkpoint_fingerprint(splits),
    }
    inf = point.inference

    def predict(network: nn.Module, case: Any) -> torch.Tensor:
        logits = nnunet_logits(
            network.to(inf.device),
            _plain(case.image),
            folder.plans,
            folder.dataset_json,
            folder.configuration,
            axes,
            tile_step_size=1.0 - float(inf.overlap),
            use_gaussian=inf.mode == "gaussian",
            device=inf.device,
        )
        return case.restore(logits)

    return ModelSource(
        dataset=dataset,
        model=folder.build_network(),
        roi=folder.patch_size,
        mirroring=axes,
        identity=identity,
        predict=predict,
        columns=_columns(point, folder.patch_size, axes, folder.fold),
        folder=folder,
    )


def _bundle_source(point: RunPoint) -> ModelSource:
    """A MONAI bundle folder: its own network, transforms and inferer over the data config's
    cases. Mirroring and window settings are the bundle's (its inferer), not ``inference.*``."""
    bundle = MonaiBundle(point.model.checkpoint, device=point.inference.device)
    dataset = data_layer.open_dataset(point.data)
    if bundle.labels is not None and len(bundle.labels) != dataset.num_classes:
        raise PointError(
            f"{bundle.root / 'configs' / 'metadata.json'} declares {len(bundle.labels)} output "
            f"channels but {dataset.root / 'dataset.json'} has {dataset.num_classes} labels; "
            "point data= at the dataset the bundle segments"
        )
    roi = bundle.patch_size or roi_size(point)
    identity = {
        "monai_bundle": cache.checkpoint_fingerprint(bundle.root),
    }
    return ModelSource(
        dataset=BundleCases(dataset, bundle),
        model=bundle.network,
        roi=roi,
        mirroring=(),
        identity=identity,
        predict=lambda network, case: bundle.predict(network, case.item),
        columns=_columns(point, roi, (), None),
    )


def _is_folder(point: RunPoint) -> bool:
    """A results folder (``plans.json``) is the model, whatever the model group says: a folder
    is never a plain state dict."""
    return models_layer.is_nnunet_folder(point.model.checkpoint)


def _is_bundle(point: RunPoint) -> bool:
    """A folder with ``configs/`` and ``models/model.pt`` is a MONAI bundle."""
    checkpoint = point.model.checkpoint
    if checkpoint in (None, "shipped"):
        return False
    folder = Path(str(checkpoint)).expanduser()
    return (folder / "configs").is_dir() and (folder / "models" / "model.pt").is_file()


def folder_model_kind(point: RunPoint) -> str | None:
    """``nnunet_folder`` or ``monai_bundle`` when the checkpoint is a folder that is the model."""
    if _is_folder(point):
        return "nnunet_folder"
    return "monai_bundle" if _is_bundle(point) else None


def open_source(point: RunPoint) -> ModelSource:
    """The :class:`ModelSource` of a validated config: an nnU-Net results folder, a MONAI
    bundle, or a registry model."""
    if _is_folder(point):
        return _folder_source(point)
    if _is_bundle(point):
        return _bundle_source(point)
    return _registry_source(point)
