"""Architectures: official state-dict layouts (STU-Net, MedFormer), plans files, Hydra compatibility."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate

from benchmark.models import (
    ModelConfigError,
    build_model,
    count_parameters,
    full_resolution_logits,
    load_model_config,
    load_weights,
)
from benchmark.models.__main__ import main
from benchmark.models.medformer import MedFormer
from benchmark.models.nnunet import build_nnunet, read_plans_architecture
from benchmark.models.stunet import STUNet


def _meta_state(name: str, num_classes: int = 14) -> dict[str, torch.Size]:
    model = build_model(name, in_channels=1, num_classes=num_classes, device="meta")
    return {k: v.shape for k, v in model.state_dict().items()}


def test_stunet_b_has_the_official_key_layout_and_shapes():
    # Names and shapes as in uni-medical/STU-Net nnunet/network_architecture/STUNet.py for the base model.
    model = build_model("stunet_b", in_channels=1, num_classes=105, device="meta")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    expected = {
        "conv_blocks_context.0.0.conv1.weight": (32, 1, 3, 3, 3),
        "conv_blocks_context.0.0.norm1.weight": (32,),
        "conv_blocks_context.0.0.conv3.weight": (32, 1, 1, 1, 1),
        "conv_blocks_context.5.0.conv1.weight": (512, 512, 3, 3, 3),
        "conv_blocks_context.5.0.conv3.bias": (512,),
        "upsample_layers.0.conv.weight": (512, 512, 1, 1, 1),
        "upsample_layers.4.conv.weight": (32, 64, 1, 1, 1),
        "conv_blocks_localization.0.0.conv1.weight": (512, 1024, 3, 3, 3),
        "conv_blocks_localization.4.0.conv3.weight": (32, 64, 1, 1, 1),
        "seg_outputs.0.weight": (105, 512, 1, 1, 1),
        "seg_outputs.4.weight": (105, 32, 1, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(shapes[key]) == shape, key
    # 11 residual blocks x 10 tensors (conv1/norm1/conv2/norm2/conv3, weight+bias) + 5 upsample + 5 heads x 2.
    assert len(shapes) == 11 * 10 + 5 * 2 + 5 * 2
    # TotalSegmentator's 105 classes: the published counts are exact to 0.01 M.
    assert count_parameters(model) / 1e6 == pytest.approx(58.26, abs=0.01)


def test_stunet_large_stacks_depth_two_blocks_without_projection():
    shapes = _meta_state("stunet_l")
    assert "conv_blocks_context.2.1.conv2.weight" in shapes
    assert "conv_blocks_context.2.1.conv3.weight" not in shapes  # identity shortcut in the repeat
    assert "conv_blocks_context.2.2.conv1.weight" not in shapes


def test_stunet_deep_supervision_returns_every_decoder_scale_finest_first():
    net = STUNet(1, 2, depth=[1, 1, 1], dims=[4, 8, 8], deep_supervision=True).eval()
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.inference_mode():
        outs = net(x)
        assert [tuple(o.shape) for o in outs] == [(1, 2, 8, 8, 8), (1, 2, 4, 4, 4)]
        net.deep_supervision = False
        assert torch.equal(net(x), outs[0])
        assert full_resolution_logits(outs) is outs[0]
        assert full_resolution_logits(outs[1]) is outs[1]


def test_stunet_residual_block_adds_identity_shortcut():
    net = STUNet(
        1,
        2,
        depth=[2, 1],
        dims=[4, 4],
        pool_op_kernel_sizes=[[1, 2, 2]],
        conv_kernel_sizes=[[1, 3, 3], 3],
    )
    block = net.conv_blocks_context[0][1]
    for p in (block.conv1.weight, block.conv1.bias, block.conv2.weight, block.conv2.bias):
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 4, 4, 4, 4).abs()
    # With zero convolutions the block reduces to LeakyReLU(IN(0) + x) = x for x >= 0.
    torch.testing.assert_close(block(x), x)
    assert tuple(net.conv_blocks_context[0][0].conv1.weight.shape) == (4, 1, 1, 3, 3)
    with torch.inference_mode():
        assert net(torch.randn(1, 1, 2, 8, 8)).shape == (1, 2, 2, 8, 8)


def test_stunet_rejects_inconsistent_stage_lists():
    with pytest.raises(ValueError, match=r"depth=\[1, 1\], dims=\[4, 8, 16\]"):
        STUNet(1, 2, depth=[1, 1], dims=[4, 8, 16])


def test_official_stunet_checkpoint_loads_through_registry(tmp_path):
    cfg = load_model_config("tiny_stunet")
    source = build_model(cfg, 1, 3)
    # nnU-Net v1 trainer layout of the official checkpoints.
    torch.save(
        {"epoch": 1000, "state_dict": source.state_dict(), "optimizer_state_dict": {}},
        tmp_path / "model_final_checkpoint.model",
    )
    cfg.checkpoint = str(tmp_path / "model_final_checkpoint.model")
    target = load_weights(build_model(cfg, 1, 3), cfg)
    assert all(
        torch.equal(a, b)
        for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True)
    )


def test_medformer_has_the_official_key_layout_and_shapes():
    # Names and shapes as in yhygao/CBIM-Medical-Image-Segmentation model/dim3 with config/bcv.
    shapes = _meta_state("medformer")
    expected = {
        "inc.conv1.weight": (32, 1, 1, 3, 3),
        "inc.conv2.conv1.conv.weight": (32, 32, 1, 3, 3),
        "down1.patch_merging.reduction.depthwise.weight": (128, 1, 1, 3, 3),
        "down1.patch_merging.reduction.pointwise.weight": (64, 128, 1, 1, 1),
        "down1.conv_blocks.1.conv2.conv.weight": (64, 64, 1, 3, 3),
        "down2.map_gen.semantic_proj.weight": (64, 128, 3, 3, 3),
        "down2.trans_blocks.blocks.1.attn.feat_qv.pointwise.weight": (256, 128, 1, 1, 1),
        "down4.trans_blocks.blocks.5.attn.map_qv.weight": (640, 320, 1, 1, 1),
        "down4.trans_blocks.blocks.0.feedforward.expand_proj.conv.weight": (1280, 320, 1, 1, 1),
        "down4.trans_blocks.blocks.0.feedforward.se.excitation.0.weight": (320, 1280, 1, 1, 1),
        "map_fusion.in_proj.0.weight": (320, 128, 1, 1, 1),
        "map_fusion.fusion.layers.1.0.fn.to_qkv.weight": (960, 320),
        "map_fusion.fusion.layers.1.1.fn.fc2.bias": (320,),
        "map_fusion.fusion.layers.0.0.norm.weight": (320,),
        "up1.map_reduction.weight": (256, 576, 1, 1, 1),
        "up1.trans_blocks.blocks.0.shortcut.conv.weight": (256, 576, 1, 1, 1),
        "up3.map_reduction.weight": (64, 128, 1, 1, 1),
        "up3.conv_blocks.0.shortcut.conv.weight": (64, 192, 1, 3, 3),
        "outc.weight": (14, 32, 1, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(shapes[key]) == shape, key
    assert not any(".norm1." in k or "patch_merging.norm" in k for k in shapes)  # affine-free IN


def _small_medformer(**kw) -> MedFormer:
    """A MedFormer with a few thousand parameters, in-plane-only pooling (anisotropic like BTCV)."""
    return MedFormer(
        1,
        2,
        base_chan=4,
        map_size=[1, 2, 2],
        conv_num=[1, 0, 0, 0, 0, 0, 1, 1],
        trans_num=[0, 1, 1, 1, 1, 1, 0, 0],
        chan_num=[8, 8, 8, 8, 8, 8, 8, 4],
        num_heads=[1, 2, 2, 2, 2, 2, 1, 1],
        fusion_depth=1,
        fusion_dim=8,
        fusion_heads=2,
        kernel_size=[[1, 3, 3], [1, 3, 3], [1, 3, 3], [1, 3, 3], [1, 3, 3]],
        scale=[[1, 2, 2]] * 4,
        **kw,
    )


def test_medformer_aux_head_only_in_training():
    model = _small_medformer(aux_loss=True)
    x = torch.randn(1, 1, 2, 32, 32)
    outs = model(x)
    assert isinstance(outs, list) and [tuple(o.shape) for o in outs] == [(1, 2, 2, 32, 32)] * 2
    with torch.inference_mode():
        assert model.eval()(x).shape == (1, 2, 2, 32, 32)


def test_medformer_bidirectional_attention_matches_explicit_softmaxes():
    block = _small_medformer().down2.trans_blocks.blocks[0].attn
    feat, smap = torch.randn(1, 8, 2, 4, 4), torch.randn(1, 8, 1, 2, 2)
    heads, dim_head = block.heads, block.dim_head
    fq, fv = block.feat_qv(feat).chunk(2, dim=1)
    mq, mv = block.map_qv(smap).chunk(2, dim=1)

    # Official channel split: (dim_head heads), heads innermost.
    def split(t):
        return t.reshape(1, dim_head, heads, -1).permute(0, 2, 3, 1)

    def merge(t, shape):
        return t.permute(0, 3, 1, 2).reshape(1, dim_head * heads, *shape)

    sim = split(fq) @ split(mq).transpose(-1, -2) / dim_head**0.5  # [1, heads, voxels, tokens]
    feat_ref = block.feat_out(merge(sim.softmax(-1) @ split(mv), (2, 4, 4)))
    map_ref = block.map_out(merge(sim.softmax(-2).transpose(-1, -2) @ split(fv), (1, 2, 2)))
    feat_out, map_out = block(feat, smap)
    torch.testing.assert_close(feat_out, feat_ref)
    torch.testing.assert_close(map_out, map_ref)


def test_dataparallel_medformer_state_dict_loads(tmp_path):
    cfg = load_model_config("tiny_medformer")
    source = build_model(cfg, 1, 3)
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, tmp_path / "best.pth")
    cfg.checkpoint, cfg.checkpoint_format = str(tmp_path / "best.pth"), "medformer"
    torch.manual_seed(1)
    target = load_weights(build_model(cfg, 1, 3), cfg)
    assert all(
        torch.equal(a, b)
        for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True)
    )


def test_nnunet_from_plans_file_via_registry(tmp_path):
    plans_path = tmp_path / "nnUNetPlans.json"
    explicit = build_nnunet(1, 3, n_stages=3, features_per_stage=[4, 8, 16], strides=[1, 2, 2])
    arch_kwargs = {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": arch_kwargs,
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    plans_path.write_text(json.dumps({"configurations": {"3d_fullres": {"architecture": arch}}}))
    cfg = load_model_config("nnunet")
    cfg.net.plans = str(plans_path)
    from_plans = build_model(cfg, 1, 3, device="meta")
    assert {k: v.shape for k, v in from_plans.state_dict().items()} == {
        k: v.shape for k, v in explicit.state_dict().items()
    }
    assert from_plans.decoder.deep_supervision is False


def test_plans_errors_name_the_configuration(tmp_path):
    plans = {
        "configurations": {
            "2d": {"architecture": {}},
            "3d_fullres": {"UNet_class_name": "PlainConvUNet"},
        }
    }
    with pytest.raises(
        ModelConfigError, match=r"'3d_lowres' not found; available: \['2d', '3d_fullres'\]"
    ):
        read_plans_architecture(plans, "3d_lowres")
    with pytest.raises(ModelConfigError, match="older than 2.3"):
        read_plans_architecture(plans, "3d_fullres")
    with pytest.raises(ModelConfigError, match="Cannot read nnU-Net plans"):
        read_plans_architecture(tmp_path / "missing.json", "3d_fullres")


# tiny_swinunetr is left out: MONAI's SwinUNETR cannot be built under a meta default device and a
# CPU build costs seconds; tiny_unetr covers the MONAI builder module.
@pytest.mark.parametrize("name", ["tiny_nnunet", "tiny_stunet", "tiny_unetr", "tiny_medformer"])
def test_net_node_is_hydra_instantiable_to_the_same_network(name):
    cfg = load_model_config(name)
    with torch.device("meta"):
        via_hydra = instantiate(dict(cfg.net), in_channels=1, num_classes=2)
    ours = build_model(cfg, 1, 2, device="meta")
    assert type(via_hydra) is type(ours)
    assert {k: v.shape for k, v in via_hydra.state_dict().items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }


def test_cli_prints_every_model_with_parameters(capsys):
    main([])
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["name", "display_name", "framework", "family"]
    assert "STU-Net-H" in out and "1457.05" in out
