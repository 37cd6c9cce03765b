"""Official STU-Net checkpoints load through ``load_weights`` exactly as uni-medical/STU-Net saves them.

The published models (``small_ep4k.model`` ... ``huge_ep4k.model``) were trained with nnU-Net v1's
``STUNetTrainer``; fine-tuned ones come from its nnU-Net v2 port. Both trainers save the whole
trainer state around the weights: v1's ``NetworkTrainer.save_checkpoint`` writes ``epoch``,
``state_dict``, ``optimizer_state_dict``, ``lr_scheduler_state_dict``, ``plot_stuff`` (loss curves as
numpy scalars), ``best_stuff`` and ``amp_grad_scaler``; v2's ``nnUNetTrainer.save_checkpoint``
writes ``network_weights``, ``optimizer_state``, ``grad_scaler_state``, ``logging``, ``_best_ema``,
``current_epoch``, ``init_args`` (with a ``torch.device``), ``trainer_name`` and
``inference_allowed_mirroring_axes``. The published files predate numpy 2, so their numpy scalars
are pickled as ``numpy.core.multiarray.scalar``; both namings are exercised.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.models import build_model, load_model_config, load_weights

# The published TotalSegmentator models: 104 organs + background.
TOTALSEG_CLASSES = 105


def _sgd_state(net: nn.Module) -> dict:
    """The optimizer state STUNetTrainer saves: SGD, momentum 0.99, Nesterov, after one step."""
    opt = torch.optim.SGD(net.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    for p in net.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    state = opt.state_dict()
    opt.zero_grad(set_to_none=True)
    return state


def _v1_checkpoint(net: nn.Module) -> dict:
    losses = [np.float64(0.9 - 0.1 * i) for i in range(3)]
    return {
        "epoch": 4000,
        "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
        "optimizer_state_dict": _sgd_state(net),
        "lr_scheduler_state_dict": None,
        "plot_stuff": (losses, losses, [], [np.float64(0.8), np.float64(0.85)]),
        "best_stuff": (3999, np.float64(0.7), np.float64(0.85)),
        "amp_grad_scaler": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
            "_growth_tracker": 17,
        },
    }


def _v2_checkpoint(net: nn.Module) -> dict:
    return {
        "network_weights": net.state_dict(),
        "optimizer_state": _sgd_state(net),
        "grad_scaler_state": {"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5},
        "logging": {
            "mean_fg_dice": [np.float64(0.61), np.float64(0.72)],
            "ema_fg_dice": [0.61, 0.62],
            "dice_per_class_or_region": [[np.float64(0.5), np.float64(0.7)]] * 2,
            "train_losses": [np.float32(-0.3), np.float32(-0.4)],
            "val_losses": [np.float32(-0.2), np.float32(-0.3)],
            "lrs": [0.01, 0.0099],
            "epoch_start_timestamps": [1.7e9, 1.7e9 + 60],
            "epoch_end_timestamps": [1.7e9 + 59, 1.7e9 + 119],
        },
        "_best_ema": np.float64(0.62),
        "current_epoch": 1000,
        "init_args": {
            "plans": {"plans_name": "nnUNetPlans", "configurations": {}},
            "configuration": "3d_fullres",
            "fold": 0,
            "dataset_json": {"channel_names": {"0": "CT"}, "labels": {"background": 0}},
            "unpack_dataset": True,
            "device": torch.device("cuda"),
        },
        "trainer_name": "STUNetTrainer_base_ft",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }


def _save(checkpoint: dict, path: Path, numpy_package: str) -> Path:
    """``torch.save`` with the numpy globals named ``numpy.<numpy_package>.multiarray.*``.

    numpy 1.x pickles its scalars as ``numpy.core.multiarray.scalar``, numpy 2.x as
    ``numpy._core.multiarray.scalar``; the published files are of the first kind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    target = f"numpy.{numpy_package}.multiarray".encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                for name in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
                    data = data.replace(name, target)
                assert target in data
            dst.writestr(info, data)
    path.write_bytes(buffer.getvalue())
    return path


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("numpy_package", ["core", "_core"])
@pytest.mark.parametrize(
    ("layout", "file_name"),
    [(_v1_checkpoint, "fold_0/base_ep4k.model"), (_v2_checkpoint, "fold_0/checkpoint_final.pth")],
)
@pytest.mark.parametrize("fmt", ["stunet", "auto"])
def test_published_stunet_checkpoint_loads_through_load_weights(
    tmp_path, layout, file_name, numpy_package, fmt
):
    cfg = load_model_config("tiny_stunet")
    source = build_model(cfg, 1, 9)
    path = _save(layout(source), tmp_path / file_name, numpy_package)
    cfg.checkpoint, cfg.checkpoint_format = str(path), fmt
    torch.manual_seed(1)
    target = build_model(cfg, 1, 9)
    assert not _same_state(source, target)
    assert load_weights(target, cfg) is target
    assert _same_state(source, target)


@pytest.mark.slow
def test_published_stunet_b_checkpoint_loads_at_full_size(tmp_path):
    cfg = load_model_config("stunet_b")
    source = build_model(cfg, 1, TOTALSEG_CLASSES)
    path = _save(_v1_checkpoint(source), tmp_path / "fold_0" / "base_ep4k.model", "core")
    cfg.checkpoint = str(path)
    torch.manual_seed(1)
    target = load_weights(build_model(cfg, 1, TOTALSEG_CLASSES), cfg)
    assert _same_state(source, target)
    head = target.state_dict()["seg_outputs.4.weight"]
    assert tuple(head.shape) == (TOTALSEG_CLASSES, 32, 1, 1, 1)
