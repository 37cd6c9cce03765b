"""nnU-Net 3d_fullres networks (PlainConvUNet) from explicit settings or an nnU-Net v2 plans file.

The network class is ``dynamic_network_architectures``' ``PlainConvUNet``, the one nnU-Net v2
trains, so state dicts of nnU-Net trained-model folders load without renaming. The building from a
plans file goes through nnunetv2's own ``get_network_from_plans`` so that new architecture classes and
plans layouts keep working.

Reference: Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical
image segmentation", Nature Methods 18, 203-211 (2021).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from benchmark.models.errors import ModelConfigError

__all__ = ["build_nnunet", "build_nnunet_from_plans", "read_plans_architecture"]

_NORMS: dict[str, type[nn.Module]] = {
    "instance": nn.InstanceNorm3d,
    "batch": nn.BatchNorm3d,
}
_NONLINS: dict[str, type[nn.Module]] = {"leaky_relu": nn.LeakyReLU, "relu": nn.ReLU}


def build_nnunet(
    in_channels: int,
    num_classes: int,
    n_stages: int = 6,
    features_per_stage: Sequence[int] = (32, 64, 128, 256, 320, 320),
    kernel_sizes: int | Sequence[int | Sequence[int]] = 3,
    strides: int | Sequence[int | Sequence[int]] = (1, 2, 2, 2, 2, 2),
    n_conv_per_stage: int | Sequence[int] = 2,
    n_conv_per_stage_decoder: int | Sequence[int] = 2,
    conv_bias: bool = True,
    norm: str = "instance",
    nonlin: str = "leaky_relu",
    deep_supervision: bool = False,
    plans: str | None = None,
    configuration: str = "3d_fullres",
) -> nn.Module:
    """Build an nnU-Net PlainConvUNet, from ``plans`` when given, else from the explicit settings.

    Args:
        in_channels: input channels C.
        num_classes: output channels K (background included).
        n_stages: resolution stages (encoder depth, bottleneck included).
        features_per_stage: channels per stage, capped at 320 in nnU-Net plans.
        kernel_sizes: conv kernel per stage, an int or ``[k_d, k_h, k_w]`` per stage.
        strides: downsampling stride per stage (first is 1), an int or ``[s_d, s_h, s_w]``.
        n_conv_per_stage: conv-norm-nonlin blocks per encoder stage.
        n_conv_per_stage_decoder: blocks per decoder stage (``n_stages - 1`` entries).
        conv_bias: convolutions with bias (nnU-Net v2 plans: true).
        norm: ``instance`` (nnU-Net default, ``eps=1e-5, affine=True``) or ``batch``.
        nonlin: ``leaky_relu`` (slope 0.01, nnU-Net default) or ``relu``.
        deep_supervision: return the list of all decoder outputs (training only); off for inference,
            where only the full-resolution logits ``[B, K, D, H, W]`` are wanted.
        plans: path to an nnU-Net v2 ``nnUNetPlans.json``; when given, every architecture setting
            above except ``deep_supervision`` comes from ``plans[configurations][configuration]``.
        configuration: plans configuration name (``3d_fullres``).

    Returns:
        The network (He-initialised, as nnU-Net does).

    Raises:
        ModelConfigError: unknown ``norm``/``nonlin`` or an unreadable plans file.
    """
    if plans is not None:
        return build_nnunet_from_plans(
            plans, configuration, in_channels, num_classes, deep_supervision=deep_supervision
        )
    if norm not in _NORMS:
        raise ModelConfigError(f"nnU-Net: norm={norm!r} is not one of {sorted(_NORMS)}.")
    if nonlin not in _NONLINS:
        raise ModelConfigError(f"nnU-Net: nonlin={nonlin!r} is not one of {sorted(_NONLINS)}.")
    if len(features_per_stage) != n_stages:
        raise ModelConfigError(
            f"nnU-Net: features_per_stage has {len(features_per_stage)} entries but n_stages={n_stages}."
        )
    norm_kwargs = {"eps": 1e-5, "affine": True}
    nonlin_kwargs = {"inplace": True}
    return PlainConvUNet(
        input_channels=in_channels,
        n_stages=n_stages,
        features_per_stage=list(features_per_stage),
        conv_op=nn.Conv3d,
        kernel_sizes=kernel_sizes,
        strides=strides,
        n_conv_per_stage=n_conv_per_stage,
        num_classes=num_classes,
        n_conv_per_stage_decoder=n_conv_per_stage_decoder,
        conv_bias=conv_bias,
        norm_op=_NORMS[norm],
        norm_op_kwargs=norm_kwargs,
        nonlin=_NONLINS[nonlin],
        nonlin_kwargs=nonlin_kwargs,
        deep_supervision=deep_supervision,
    )


def read_plans_architecture(
    plans: str | Path | Mapping[str, Any], configuration: str
) -> dict[str, Any]:
    """Return the ``architecture`` entry of one configuration of an nnU-Net v2 plans file.

    Resolves ``inherits_from`` chains (``3d_cascade_fullres`` inherits ``3d_fullres``) as nnU-Net does.

    Args:
        plans: path to ``plans.json``/``nnUNetPlans.json`` or its parsed content.
        configuration: configuration name, e.g. ``3d_fullres``.

    Returns:
        ``{"network_class_name": str, "arch_kwargs": dict, "_kw_requires_import": list}``.

    Raises:
        ModelConfigError: unreadable file, unknown configuration, or a pre-2.3 plans layout without
            an ``architecture`` entry.
    """
    if isinstance(plans, Mapping):
        content, source = plans, "plans"
    else:
        source = str(plans)
        try:
            content = json.loads(Path(plans).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ModelConfigError(f"Cannot read nnU-Net plans {source}: {err}") from err
    configs = content.get("configurations", {})
    merged: dict[str, Any] = {}
    name, seen = configuration, []
    while name is not None:
        if name not in configs:
            raise ModelConfigError(
                f"{source}: configuration {name!r} not found; available: {sorted(configs)}."
            )
        if name in seen:
            raise ModelConfigError(f"{source}: cyclic inherits_from chain {seen + [name]}.")
        seen.append(name)
        merged = {**configs[name], **merged}
        name = configs[name].get("inherits_from")
    arch = merged.get("architecture")
    if not isinstance(arch, Mapping) or "network_class_name" not in arch:
        raise ModelConfigError(
            f"{source}: configuration {configuration!r} has no 'architecture' entry; plans written by "
            "nnU-Net older than 2.3 must be re-planned (nnUNetv2_plan_experiment) first."
        )
    return {
        "network_class_name": arch["network_class_name"],
        "arch_kwargs": dict(arch["arch_kwargs"]),
        "_kw_requires_import": list(arch.get("_kw_requires_import", [])),
    }


def build_nnunet_from_plans(
    plans: str | Path | Mapping[str, Any],
    configuration: str,
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = False,
) -> nn.Module:
    """Build the network an nnU-Net v2 plans file describes, through nnunetv2 itself.

    Args:
        plans: path to the plans JSON or its parsed content.
        configuration: configuration name (``3d_fullres``).
        in_channels: input channels C (``len(dataset.json["channel_names"])``).
        num_classes: output channels K (``len(dataset.json["labels"])`` without regions).
        deep_supervision: keep nnU-Net's multi-scale outputs (off for inference).

    Returns:
        The network, e.g. a ``PlainConvUNet`` or ``ResidualEncoderUNet``.
    """
    # Imported here: nnunetv2 pulls in a large import tree that explicit-settings users never need.
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = read_plans_architecture(plans, configuration)
    return get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        in_channels,
        num_classes,
        allow_init=True,
        deep_supervision=deep_supervision,
    )
