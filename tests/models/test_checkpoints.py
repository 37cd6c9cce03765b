"""Checkpoint loading: every supported layout round-trips; mismatches name keys and shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.models import (
    CheckpointError,
    CheckpointMismatchError,
    build_model,
    load_model_config,
    load_weights,
    open_nnunet_folder,
    read_state_dict,
)
from benchmark.models import checkpoints as ckpt_module
from benchmark.models.nnunet import build_nnunet


def _small_nnunet(in_channels: int = 1, num_classes: int = 3) -> nn.Module:
    """A 2-stage PlainConvUNet with a few thousand parameters."""
    return build_nnunet(
        in_channels, num_classes, n_stages=2, features_per_stage=[4, 8], strides=[1, 2]
    )


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _cfg(checkpoint, fmt="auto", name="tiny_nnunet"):
    cfg = load_model_config(name)
    cfg.checkpoint = None if checkpoint is None else str(checkpoint)
    cfg.checkpoint_format = fmt
    return cfg


def test_plain_state_dict_round_trips_into_registry_model(tmp_path):
    cfg = _cfg(tmp_path / "w.pt", "state_dict")
    source = build_model(cfg, 1, 3)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(1)
    target = build_model(cfg, 1, 3)
    assert not _same_weights(source, target)
    assert load_weights(target, cfg) is target
    assert _same_weights(source, target)


def test_null_checkpoint_keeps_initialisation():
    cfg = _cfg(None)
    model = build_model(cfg, 1, 3, device="meta")
    assert load_weights(model, cfg) is model


def test_shipped_loads_weights_folder_file(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_module, "shipped_weights_path", lambda name: tmp_path / f"{name}.pt")
    cfg = _cfg("shipped", "state_dict")
    source = build_model(cfg, 1, 3)
    torch.save(source.state_dict(), tmp_path / "tiny_nnunet.pt")
    target = load_weights(build_model(cfg, 1, 3), cfg)
    assert _same_weights(source, target)


def test_missing_shipped_file_says_how_to_train_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_module, "shipped_weights_path", lambda name: tmp_path / f"{name}.pt")
    cfg = _cfg("shipped", "state_dict")
    with pytest.raises(CheckpointError, match=r"python -m benchmark.train model=tiny_nnunet"):
        load_weights(build_model(cfg, 1, 3, device="meta"), cfg)


def test_shipped_path_is_in_package_weights_folder():
    path = ckpt_module.shipped_weights_path("tiny_nnunet")
    assert path.parent.name == "weights" and path.parent.parent.name == "models"
    assert path.name == "tiny_nnunet.pt"


def test_mismatch_names_missing_unexpected_and_shapes(tmp_path):
    source = _small_nnunet(num_classes=3)
    state = source.state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["decoder.stages.0.convs.0.conv.bias"]
    torch.save(state, tmp_path / "w.pt")
    target = _small_nnunet(num_classes=5)
    with pytest.raises(CheckpointMismatchError) as info:
        ckpt_module.load_state_dict_checked(target, read_state_dict(tmp_path / "w.pt"), "w.pt")
    err = info.value
    assert err.missing == ["decoder.stages.0.convs.0.conv.bias"]
    assert err.unexpected == ["extra.weight"]
    assert {k for k, _, _ in err.mismatched} == {
        "decoder.seg_layers.0.weight",
        "decoder.seg_layers.0.bias",
    }
    message = str(err)
    assert "1 missing key(s)" in message and "1 unexpected key(s)" in message
    assert "2 shape mismatch(es)" in message
    assert (
        "decoder.seg_layers.0.weight: checkpoint (3, 4, 1, 1, 1) vs network (5, 4, 1, 1, 1)"
        in message
    )


def test_mismatch_lists_only_the_first_names_but_counts_all(tmp_path):
    torch.save({f"k{i}": torch.zeros(1) for i in range(25)}, tmp_path / "w.pt")
    with pytest.raises(
        CheckpointMismatchError, match=r"25 unexpected key\(s\) \(first 10:"
    ) as info:
        ckpt_module.load_state_dict_checked(
            _small_nnunet(), read_state_dict(tmp_path / "w.pt"), "w.pt"
        )
    assert len(info.value.unexpected) == 25
    assert "k24" not in str(info.value)


def test_missing_checkpoint_path_is_named(tmp_path):
    cfg = _cfg(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        load_weights(build_model(cfg, 1, 3, device="meta"), cfg)


def test_pickled_code_is_refused(tmp_path):
    torch.save(
        {"state_dict": _small_nnunet().state_dict(), "fn": nn.Identity()}, tmp_path / "evil.pt"
    )
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pt")


@pytest.mark.parametrize(
    ("wrap", "fmt"),
    [
        (lambda s: {"network_weights": s, "epoch": 3}, "stunet"),
        (lambda s: {"state_dict": s, "plot_stuff": [np.float64(0.5)]}, "stunet"),
        (lambda s: {"module." + k: v for k, v in s.items()}, "medformer"),
        (lambda s: {"model_state_dict": {"module." + k: v for k, v in s.items()}}, "medformer"),
        (lambda s: {"_orig_mod." + k: v for k, v in s.items()}, "auto"),
        (lambda s: {"state_dict": s}, "monai"),
        (lambda s: s, "monai"),
    ],
)
def test_wrapped_state_dicts_are_unwrapped(tmp_path, wrap, fmt):
    source = _small_nnunet()
    torch.save(wrap(source.state_dict()), tmp_path / "w.pt")
    target = _small_nnunet()
    ckpt_module.load_state_dict_checked(target, read_state_dict(tmp_path / "w.pt", fmt), "w.pt")
    assert _same_weights(source, target)


def test_monai_bundle_folder_loads_models_model_pt(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs").mkdir()
    (bundle / "configs" / "inference.json").write_text("{}")
    source = _small_nnunet()
    torch.save(source.state_dict(), bundle / "models" / "model.pt")
    for fmt in ("monai_bundle", "auto"):
        target = _small_nnunet()
        ckpt_module.load_state_dict_checked(target, read_state_dict(bundle, fmt), str(bundle))
        assert _same_weights(source, target)


def test_folder_of_the_wrong_format_is_rejected(tmp_path):
    (tmp_path / "models").mkdir()
    torch.save(_small_nnunet().state_dict(), tmp_path / "models" / "model.pt")
    with pytest.raises(CheckpointError, match="format 'nnunet'"):
        read_state_dict(tmp_path, "nnunet")


def _plans(features=(4, 8)) -> dict:
    arch_kwargs = {
        "n_stages": 2,
        "features_per_stage": list(features),
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [2, 2, 2]],
        "n_conv_per_stage": [2, 2],
        "n_conv_per_stage_decoder": [2],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "configurations": {
            "3d_fullres": {
                "patch_size": [16, 16, 16],
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": arch_kwargs,
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
            },
            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
            "3d_fullres_bs4": {"inherits_from": "3d_fullres", "batch_size": 4},
        },
    }


def _nnunet_folder(tmp_path, fold=0, configuration="3d_fullres"):
    """Write a tiny nnU-Net v2 trained-model folder and return it with the network it holds."""
    folder = tmp_path / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    (folder / f"fold_{fold}").mkdir(parents=True)
    plans = _plans()
    (folder / "plans.json").write_text(json.dumps(plans))
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2}}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    net = _small_nnunet(1, 3)
    checkpoint = {
        "network_weights": net.state_dict(),
        "optimizer_state": {},
        "logging": {"mean_fg_dice": [np.float64(0.7)], "epoch_end_timestamps": [1.0]},
        "current_epoch": 1,
        "init_args": {
            "configuration": configuration,
            "fold": fold,
            "plans": plans,
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
    }
    torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder, net


def test_nnunet_folder_builds_network_from_plans_and_loads_weights(tmp_path):
    folder, source = _nnunet_folder(tmp_path)
    model = open_nnunet_folder(folder).build_network()
    assert type(model).__name__ == "PlainConvUNet"
    assert not model.training
    assert _same_weights(source, model)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        assert torch.equal(model(x), source.eval()(x))


def test_nnunet_folder_resolves_inherited_configuration(tmp_path):
    folder, source = _nnunet_folder(tmp_path, configuration="3d_fullres_bs4")
    assert _same_weights(source, open_nnunet_folder(folder).build_network())


def test_nnunet_cascade_stage_is_refused(tmp_path):
    folder, _ = _nnunet_folder(tmp_path, configuration="3d_cascade_fullres")
    with pytest.raises(CheckpointError, match="cascade stage that needs the previous stage"):
        open_nnunet_folder(folder)


def test_nnunet_folder_as_registry_checkpoint(tmp_path):
    folder, source = _nnunet_folder(tmp_path)
    cfg = _cfg(folder, "nnunet")
    cfg.net = {
        "_target_": "benchmark.models.nnunet.build_nnunet",
        "plans": str(folder / "plans.json"),
    }
    model = load_weights(build_model(cfg, 1, 3), cfg)
    assert _same_weights(source, model)


def test_nnunet_folder_with_several_folds_asks_for_one(tmp_path):
    folder, _ = _nnunet_folder(tmp_path, fold=0)
    (folder / "fold_1").mkdir()
    (folder / "fold_1" / "checkpoint_final.pth").write_bytes(
        (folder / "fold_0" / "checkpoint_final.pth").read_bytes()
    )
    with pytest.raises(CheckpointError, match=r"several folds \['fold_0', 'fold_1'\]"):
        read_state_dict(folder)
    assert open_nnunet_folder(folder, fold=1).fold == "1"
    with pytest.raises(
        CheckpointError,
        match=r"folds with checkpoint_final.pth: \['0', '1'\]; choose one with model.fold=N",
    ):
        open_nnunet_folder(folder)


def test_nnunet_folder_missing_dataset_json_is_named(tmp_path):
    folder, _ = _nnunet_folder(tmp_path)
    (folder / "dataset.json").unlink()
    with pytest.raises(
        CheckpointError, match="no dataset.json; an nnU-Net v2 results folder holds"
    ):
        open_nnunet_folder(folder)


def test_folder_of_unknown_layout_is_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="nnU-Net trained-model folder .* or a MONAI bundle"):
        read_state_dict(tmp_path)
