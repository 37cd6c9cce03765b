"""``open_dataset``: one object that lists, splits and prepares the cases of a dataset.

Preprocessed cases are cached as ``.npz`` files (no pickles) under
``<cache>/preprocessed/<name>-<key>/``, where ``key`` hashes everything that changes the
arrays: the dataset folder and its ``dataset.json``, target spacing, normalisation, the split
(CT statistics come from the train split) and :data:`PREPROCESS_VERSION`. Each file is written
atomically, so parallel workers may prepare the same case without harm.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.data.cache import atomic_write, cache_root, load_npz, save_npz, stable_hash
from benchmark.data.colin27 import COLIN27_FOLDER, ensure_colin27
from benchmark.data.config import DataConfig
from benchmark.data.errors import DatasetJsonError, SplitError
from benchmark.data.integrity import ensure_verified
from benchmark.data.phantom import PHANTOM_FOLDER, check_generation_root, ensure_phantom
from benchmark.data.preprocess import (
    ChannelStats,
    PreparedCase,
    compute_intensity_stats,
    preprocess_case,
)
from benchmark.data.reader import CaseHeader, DatasetIndex, check_headers, read_dataset
from benchmark.data.splits import SPLITS, make_splits

__all__ = ["PREPROCESS_VERSION", "SegmentationDataset", "open_dataset"]

# Bump when preprocessing changes its output, so stale caches are not reused.
PREPROCESS_VERSION = 1
# Generated formats and the folder each writes under ``data.root``.
_GENERATED = {"phantom": PHANTOM_FOLDER, "colin27": COLIN27_FOLDER}


def open_dataset(cfg: Mapping[str, Any] | DataConfig, verify: bool = True) -> SegmentationDataset:
    """Open (for ``phantom`` / ``colin27``: generate on first use) the dataset of a data config.

    Args:
        cfg: the content of ``conf/data/<name>.yaml`` (``dict``, ``DictConfig`` or
            :class:`DataConfig`).
        verify: read every case once up front (:mod:`benchmark.data.integrity`; the result is
            cached by file size and time, so later opens only look at the files' stat). Without
            it, a broken case is found when it is prepared.

    Returns:
        The dataset, with every case's NIfTI headers already checked.

    Raises:
        DataConfigError: the config is invalid, or ``data.root`` of a generated dataset is a
            folder the generator must not write into (a real dataset, a missing path, ...).
        DatasetError: a subclass naming the file or key at fault (see ``benchmark.data.errors``).
    """
    config = DataConfig.from_mapping(cfg)
    if config.format in _GENERATED and config.root is not None:
        check_generation_root(
            Path(config.root).expanduser(), config.format, _GENERATED[config.format]
        )
    if config.format == "phantom":
        root, fmt = ensure_phantom(config), "nnunet_raw"
    elif config.format == "colin27":
        root, fmt = ensure_colin27(config), "nnunet_raw"
    else:
        root, fmt = Path(str(config.root)).expanduser(), config.format
    index = read_dataset(root, fmt)
    if config.expected_num_classes is not None and len(index.labels) != config.expected_num_classes:
        raise DatasetJsonError(
            f"{root / 'dataset.json'} declares {len(index.labels)} labels {index.labels} but "
            f"data.expected_num_classes is {config.expected_num_classes}; is data.root the right "
            "dataset?"
        )
    dataset = SegmentationDataset(config, index)  # header errors first, one at a time
    if verify:
        ensure_verified(index, config.cache_dir)
    return dataset


class SegmentationDataset:
    """A labelled 3D segmentation dataset with deterministic splits and cached preprocessing.

    Attributes:
        name: dataset id from the config.
        root: the dataset folder.
        labels: ``{id: name}``, background (0) included.
        num_classes: ``len(labels)``.
        in_channels: number of image channels.
        channel_names: modality per channel (``("CT",)``).
        modality: channel names joined by ``+`` (``"CT"``, ``"FLAIR+T1w+t1gd+T2w"``).
        config: the validated :class:`DataConfig`.
    """

    def __init__(self, config: DataConfig, index: DatasetIndex):
        self.config = config
        self.index = index
        self.name = config.name
        self.root = index.root
        self.labels: dict[int, str] = dict(index.labels)
        self.num_classes = len(self.labels)
        self.channel_names = index.channel_names
        self.in_channels = len(index.channel_names)
        self.modality = "+".join(index.channel_names)
        n = self.in_channels
        self.headers: dict[str, CaseHeader] = {
            cid: check_headers(case, n) for cid, case in {**index.training, **index.test}.items()
        }

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset(name={self.name!r}, root={str(self.root)!r}, "
            f"cases={len(self.headers)}, classes={self.num_classes}, modality={self.modality!r})"
        )

    @property
    def normalization_schemes(self) -> tuple[str, ...]:
        """Per channel ``ct`` or ``zscore`` after resolving ``normalization: auto``."""
        mode = self.config.normalization
        if mode == "auto":
            return tuple(
                "ct" if c.strip().upper() == "CT" else "zscore" for c in self.channel_names
            )
        return (mode,) * self.in_channels

    @cached_property
    def _splits(self) -> dict[str, list[str]]:
        sc = self.config.split
        splits_file = sc.splits_file
        if splits_file == "auto":
            auto = self.root / "splits_final.json"
            splits_file = str(auto) if auto.is_file() else None
        return make_splits(
            list(self.index.training), list(self.index.test), sc.seed, sc.fractions, splits_file
        )

    def split(self, name: str) -> list[str]:
        """Sorted case ids of ``train``, ``val`` or ``test`` (deterministic; see ``splits``).

        Raises:
            SplitError: unknown split name.
        """
        if name not in SPLITS:
            raise SplitError(f"unknown split {name!r}; use one of {list(SPLITS)}")
        return list(self._splits[name])

    @property
    def case_ids(self) -> list[str]:
        """All labelled case ids (training and test), sorted."""
        return sorted(self.headers)

    @cached_property
    def cache_dir(self) -> Path:
        """Folder of this dataset's preprocessed cases and intensity statistics."""
        meta_file = self.root / "dataset.json"
        key = stable_hash(
            {
                "root": str(self.root.resolve()),
                "dataset_json": meta_file.read_text() if meta_file.is_file() else "",
                "target_spacing_mm": self.config.target_spacing_mm,
                "normalization": self.normalization_schemes,
                "split": asdict(self.config.split),
                "version": PREPROCESS_VERSION,
            }
        )
        return cache_root(self.config.cache_dir) / "preprocessed" / f"{self.name}-{key}"

    def intensity_stats(self) -> list[ChannelStats] | None:
        """Dataset foreground statistics per channel (train split), computed once and cached.

        ``None`` when no channel uses CT normalisation.
        """
        if "ct" not in self.normalization_schemes:
            return None
        path = self.cache_dir / "intensity_stats.json"
        if path.is_file():
            return [ChannelStats(**c) for c in json.loads(path.read_text())["channels"]]
        train = self.split("train")
        stats = compute_intensity_stats(
            [self.index.case(c) for c in train], self.in_channels, self.labels
        )
        record = {"cases": train, "channels": [asdict(s) for s in stats]}
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        return stats

    def prepare(self, case_id: str) -> PreparedCase:
        """The preprocessed case (computed on first use, then read from the cache).

        Raises:
            KeyError: unknown case id.
            DatasetError: its files are unreadable, mismatched or hold undeclared labels.
        """
        files = self.index.case(case_id)
        path = self.cache_dir / f"{case_id}.npz"
        if path.is_file():
            return _from_arrays(case_id, load_npz(path))
        case = preprocess_case(
            files,
            self.labels,
            self.normalization_schemes,
            self.config.target_spacing_mm,
            self.intensity_stats(),
        )
        save_npz(path, _to_arrays(case))
        return case


def _to_arrays(case: PreparedCase) -> dict[str, np.ndarray]:
    return {
        "image": case.image.numpy(),
        "label_preprocessed": case.label_preprocessed,
        "label": case.label,
        "spacing_mm": np.asarray(case.spacing_mm),
        "spacing_preprocessed_mm": np.asarray(case.spacing_preprocessed_mm),
        "affine": case.affine,
        "affine_preprocessed": case.affine_preprocessed,
    }


def _from_arrays(case_id: str, a: dict[str, np.ndarray]) -> PreparedCase:
    return PreparedCase(
        case_id=case_id,
        image=torch.from_numpy(a["image"]),
        label_preprocessed=a["label_preprocessed"],
        label=a["label"],
        spacing_mm=tuple(float(s) for s in a["spacing_mm"]),
        spacing_preprocessed_mm=tuple(float(s) for s in a["spacing_preprocessed_mm"]),
        affine=a["affine"],
        affine_preprocessed=a["affine_preprocessed"],
    )
