"""A small real MONAI bundle, model-zoo style, around the shipped tiny SwinUNETR and its phantom data.

``configs/inference.json`` follows the layout of MONAI's model-zoo segmentation bundles
(spleen_ct_segmentation, swin_unetr_btcv_segmentation): ``network_def`` / ``network``,
``preprocessing``, ``dataset`` / ``dataloader``, ``inferer``, ``postprocessing`` (softmax,
``Invertd``, argmax, ``SaveImaged``), ``initialize`` and ``run``. The zoo's ``run`` is
``@evaluator.run()``, an ignite ``SupervisedEvaluator``; here ``run`` spells out the same loop
(collate, inferer, decollate, postprocessing per item) as a config expression, so that
``python -m monai.bundle run`` works without pytorch-ignite.

The transforms reproduce how the shipped weights were trained (benchmark/models/weights/
tiny_swinunetr.json): RAS orientation, the target spacing, nnU-Net's CT clip + z-score (as one
``ScaleIntensityRanged``) and the harness's ``[C, D, H, W]`` = ``(k, j, i)`` axis order
(``Transposed``), so the bundle's predictions are the trained model's, not noise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from benchmark.models import load_model_config, shipped_weights_path

MODEL = "tiny_swinunetr"


def training_record() -> dict[str, Any]:
    """What the shipped weights were trained on: labels, patch size, spacing, overlap."""
    return json.loads(shipped_weights_path(MODEL).with_suffix(".json").read_text())


def network_def(in_channels: int, num_classes: int) -> dict[str, Any]:
    """MONAI ``SwinUNETR`` with the tiny settings of ``conf/model/tiny_swinunetr.yaml``."""
    net = load_model_config(MODEL).net
    return {
        "_target_": "SwinUNETR",
        "in_channels": in_channels,
        "out_channels": num_classes,
        "feature_size": int(net.feature_size),
        "depths": [int(d) for d in net.depths],
        "num_heads": [int(h) for h in net.num_heads],
        "window_size": int(net.window_size),
        "use_v2": bool(net.use_v2),
        "spatial_dims": 3,
    }


def inference_config(
    in_channels: int,
    num_classes: int,
    ct_stats: Mapping[str, float],
    target_spacing_mm: list[float],
    roi_size: list[int],
    overlap: float,
) -> dict[str, Any]:
    """The ``configs/inference.json`` content.

    Args:
        ct_stats: foreground ``mean``, ``std``, ``percentile_00_5``, ``percentile_99_5``.
        target_spacing_mm: ``[D, H, W]`` (the harness's order); MONAI's ``pixdim`` is reversed.
    """
    lo, hi = ct_stats["percentile_00_5"], ct_stats["percentile_99_5"]
    mean, std = ct_stats["mean"], ct_stats["std"]
    preprocessing = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {
            "_target_": "Spacingd",
            "keys": "image",
            "pixdim": list(target_spacing_mm[::-1]),
            "mode": "bilinear",
            "padding_mode": "border",
        },
        {
            "_target_": "ScaleIntensityRanged",
            "keys": "image",
            "a_min": lo,
            "a_max": hi,
            "b_min": (lo - mean) / std,
            "b_max": (hi - mean) / std,
            "clip": True,
        },
        {"_target_": "Transposed", "keys": "image", "indices": [0, 3, 2, 1]},
        {"_target_": "EnsureTyped", "keys": "image"},
    ]
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {
            "_target_": "Invertd",
            "keys": "pred",
            "transform": "@preprocessing",
            "orig_keys": "image",
            "meta_key_postfix": "meta_dict",
            "nearest_interp": False,
            "to_tensor": True,
        },
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "seg",
            "output_dtype": "$numpy.uint8",
            "resample": False,
            "separate_folder": False,
            "print_log": False,
        },
    ]
    return {
        "imports": ["$import glob"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data/phantom",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def(in_channels, num_classes),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing},
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(roi_size),
            "sw_batch_size": 2,
            "overlap": overlap,
            "mode": "gaussian",
        },
        "postprocessing": {"_target_": "Compose", "transforms": postprocessing},
        "checkpoint": "$torch.load(@bundle_root + '/models/model.pt', map_location=@device, "
        "weights_only=True)",
        "initialize": ["$@network.load_state_dict(@checkpoint)", "$@network.eval()"],
        "run": [
            "$torch.no_grad()(lambda: [@postprocessing(item) for batch in @dataloader for item in "
            "monai.data.decollate_batch({**batch, 'pred': @inferer(batch['image'].to(@device), "
            "@network)})])()"
        ],
    }


def metadata(labels: Mapping[int, str], in_channels: int) -> dict[str, Any]:
    """``configs/metadata.json`` in the model zoo's schema (the parts a reader uses)."""
    return {
        "version": "0.1.0",
        "monai_version": "1.6.1",
        "name": "Phantom abdominal CT segmentation (tiny SwinUNETR)",
        "task": "Abdominal organ segmentation",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": in_channels,
                    "spatial_shape": [64, 64, 64],
                    "dtype": "float32",
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(labels),
                    "dtype": "float32",
                    "channel_def": {str(k): v for k, v in labels.items()},
                }
            },
        },
    }


def write_bundle(folder: Path, ct_stats: Mapping[str, float]) -> Path:
    """Write the bundle of the shipped tiny SwinUNETR into ``folder`` and return ``folder``."""
    record = training_record()
    labels = {int(k): v for k, v in record["labels"].items()}
    config = inference_config(
        in_channels=1,
        num_classes=len(labels),
        ct_stats=ct_stats,
        target_spacing_mm=list(record["data_config"]["target_spacing_mm"]),
        roi_size=list(record["patch_size"]),
        overlap=float(record["val_overlap"]),
    )
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata(labels, 1), indent=2))
    state = torch.load(shipped_weights_path(MODEL), map_location="cpu", weights_only=True)
    torch.save(state, folder / "models" / "model.pt")
    return folder
