"""An nnU-Net v2 results folder as the model: network, configuration, fold and mirroring axes.

A results folder (``<nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>``) holds
``plans.json``, ``dataset.json`` and ``fold_N/<checkpoint>.pth``. Everything that decides how the
trained network predicts comes from there: the network class and its arguments (plans), the
configuration and trainer (the checkpoint's ``init_args`` and ``trainer_name``), and the mirroring
axes the trainer allowed at inference (``inference_allowed_mirroring_axes``).

The network is built with nnunetv2's ``get_network_from_plans`` (dynamic-network-architectures'
classes) rather than through the trainer class: nnunetv2's lookup of a trainer by name imports
every trainer module, some of which need timm. Custom trainers that override
``build_network_architecture`` with a network the plans do not describe are therefore not
supported; their weights fail to load with a message naming the mismatched keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.models.checkpoints import load_state_dict_checked, read_checkpoint_file
from benchmark.models.errors import CheckpointError
from benchmark.models.nnunet import build_nnunet_from_plans, read_plans_architecture

__all__ = ["NnUNetFolder", "is_nnunet_folder", "open_nnunet_folder"]

_LAYOUT = (
    "an nnU-Net v2 results folder holds plans.json, dataset.json and fold_N/checkpoint_final.pth "
    "(<nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>)"
)


def is_nnunet_folder(path: str | Path | None) -> bool:
    """Whether ``path`` is a folder that claims to be an nnU-Net results folder (has plans.json)."""
    return path is not None and (Path(str(path)).expanduser() / "plans.json").is_file()


@dataclass(frozen=True)
class NnUNetFolder:
    """The parts of a results folder that decide a prediction, as plain values.

    Attributes:
        root: the results folder.
        fold: ``"0"`` .. ``"4"`` or ``"all"``.
        checkpoint_file: ``fold_<fold>/<checkpoint name>``.
        configuration: plans configuration the checkpoint was trained with (``3d_fullres``).
        trainer_name: the trainer class name stored in the checkpoint.
        plans: ``plans.json`` content.
        dataset_json: ``dataset.json`` content.
        mirroring_axes: spatial axes the trainer allows mirroring along at inference (``()``
            when it allows none).
    """

    root: Path
    fold: str
    checkpoint_file: Path
    configuration: str
    trainer_name: str
    plans: Mapping[str, Any]
    dataset_json: Mapping[str, Any]
    mirroring_axes: tuple[int, ...]

    @property
    def dataset_name(self) -> str:
        """``DatasetXXX_Name`` as the plans record it."""
        return str(self.plans["dataset_name"])

    @cached_property
    def _configuration(self) -> dict[str, Any]:
        configs = self.plans["configurations"]
        merged: dict[str, Any] = {}
        name: str | None = self.configuration
        while name is not None:
            merged = {**configs[name], **merged}
            name = configs[name].get("inherits_from")
        return merged

    @property
    def patch_size(self) -> list[int]:
        """The configuration's patch size ``[D, H, W]`` (voxels of the preprocessed grid)."""
        return [int(v) for v in self._configuration["patch_size"]]

    @property
    def spacing_mm(self) -> list[float]:
        """The configuration's target spacing, in the preprocessed (transposed) axis order."""
        return [float(v) for v in self._configuration["spacing"]]

    @property
    def normalization_schemes(self) -> list[str]:
        """nnU-Net's normalisation class name per input channel."""
        return list(self._configuration["normalization_schemes"])

    @property
    def in_channels(self) -> int:
        """Input channels, one per ``channel_names`` entry of ``dataset.json``."""
        return len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))

    @property
    def num_outputs(self) -> int:
        """Segmentation heads: one per label (background included); one per region when
        the training is region-based (no background head)."""
        labels = self.dataset_json["labels"]
        regions = any(isinstance(v, (list, tuple)) for v in labels.values())
        foreground = [k for k in labels if k != "ignore"]
        return len(foreground) - 1 if regions else len(foreground)

    def build_network(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained network in eval mode, deep supervision off.

        Raises:
            CheckpointError: the checkpoint does not fit the network the plans describe (for
                example a head with another label count than ``dataset.json``).
        """
        with torch.device(device):
            network = build_nnunet_from_plans(
                dict(self.plans), self.configuration, self.in_channels, self.num_outputs
            )
        weights = _network_weights(read_checkpoint_file(self.checkpoint_file), self.checkpoint_file)
        head = _head_channels(weights)
        if head is not None and head != self.num_outputs:
            raise CheckpointError(
                f"{self.checkpoint_file} predicts {head} classes but {self.root / 'dataset.json'} "
                f"declares {self.num_outputs}; the folder's dataset.json belongs to another training"
            )
        return load_state_dict_checked(network, weights, str(self.checkpoint_file)).eval()


def _network_weights(raw: Any, file: Path) -> dict[str, torch.Tensor]:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("network_weights"), Mapping):
        raise CheckpointError(
            f"{file} has no 'network_weights'; it is not a checkpoint written by an nnU-Net v2 trainer"
        )
    return dict(raw["network_weights"])


def _head_channels(weights: Mapping[str, torch.Tensor]) -> int | None:
    """Output channels of the full-resolution segmentation head (``decoder.seg_layers`` last)."""
    heads = sorted(
        k for k in weights if k.startswith("decoder.seg_layers.") and k.endswith(".weight")
    )
    if not heads:
        return None
    last = max(heads, key=lambda k: int(k.split(".")[2]))
    return int(weights[last].shape[0])


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: no {path.name}; {_LAYOUT}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not readable JSON ({err}); restore it from the training"
        ) from err


def _available_folds(folder: Path, checkpoint_name: str) -> list[str]:
    return sorted(
        p.parent.name.removeprefix("fold_") for p in folder.glob(f"fold_*/{checkpoint_name}")
    )


def open_nnunet_folder(
    folder: str | Path,
    fold: int | str | None = None,
    checkpoint_name: str = "checkpoint_final.pth",
    configuration: str | None = None,
) -> NnUNetFolder:
    """Read an nnU-Net v2 results folder.

    Args:
        folder: the results folder.
        fold: ``0``..``4`` or ``"all"``; ``None`` takes the only fold with ``checkpoint_name``.
        checkpoint_name: ``checkpoint_final.pth`` (nnU-Net's default) or ``checkpoint_best.pth``.
        configuration: expected configuration; an error when the checkpoint says another one.

    Raises:
        CheckpointError: missing files, an unknown or ambiguous fold, a configuration the plans
            lack or that contradicts the checkpoint; each message names the file and the fix.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"model.checkpoint={root} is not a folder; {_LAYOUT}")
    plans = _read_json(root / "plans.json")
    dataset_json = _read_json(root / "dataset.json")
    available = _available_folds(root, checkpoint_name)
    if fold is None:
        if len(available) != 1:
            raise CheckpointError(
                f"{root}: folds with {checkpoint_name}: {available or 'none'}; "
                + ("choose one with model.fold=N" if available else _LAYOUT)
            )
        fold = available[0]
    fold = str(fold)
    file = root / f"fold_{fold}" / checkpoint_name
    if not file.is_file():
        raise CheckpointError(
            f"{file} does not exist; folds with {checkpoint_name} in {root}: {available or 'none'} "
            "(set model.fold / model.checkpoint_name)"
        )
    raw = read_checkpoint_file(file)
    stored = raw.get("init_args", {}).get("configuration") if isinstance(raw, Mapping) else None
    stored = stored or root.name.split("__")[-1]
    if configuration is not None and configuration != stored:
        raise CheckpointError(
            f"model.configuration={configuration} contradicts {file}, trained with {stored}; "
            "leave model.configuration unset"
        )
    read_plans_architecture(plans, stored)  # a configuration the plans lack fails here, named
    if plans["configurations"][stored].get("previous_stage"):
        raise CheckpointError(
            f"{file}: configuration {stored} is a cascade stage that needs the previous stage's "
            "segmentation as input; run the previous stage's folder instead"
        )
    axes = raw.get("inference_allowed_mirroring_axes") if isinstance(raw, Mapping) else None
    return NnUNetFolder(
        root=root,
        fold=fold,
        checkpoint_file=file,
        configuration=stored,
        trainer_name=str(raw.get("trainer_name", "nnUNetTrainer")),
        plans=plans,
        dataset_json=dataset_json,
        mirroring_axes=tuple(int(a) for a in axes) if axes is not None else (),
    )
