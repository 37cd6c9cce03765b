"""MONAI transformer segmentation networks (SwinUNETR, UNETR) behind the registry's builder signature.

The registry passes ``in_channels``/``num_classes``; MONAI names the latter ``out_channels``. These thin
builders translate the names and keep the MONAI classes themselves, so MONAI state dicts and bundles
load unchanged.

References:
    Hatamizadeh et al., "Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in
    MRI Images", BrainLes 2021 (arXiv:2201.01266).
    Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image Segmentation", WACV 2022
    (arXiv:2103.10504).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.networks.nets import UNETR, SwinUNETR

__all__ = ["build_swinunetr", "build_unetr"]


def build_swinunetr(
    in_channels: int,
    num_classes: int,
    feature_size: int = 48,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int | Sequence[int] = 7,
    use_v2: bool = False,
    **kwargs: Any,
) -> SwinUNETR:
    """MONAI ``SwinUNETR`` for 3D inputs.

    Args:
        in_channels: input channels C.
        num_classes: output channels K (MONAI's ``out_channels``).
        feature_size: embedding width of the first stage; a multiple of 12 (MONAI's requirement).
            48 is the published BTCV model (about 62 M parameters).
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window in tokens (after the 2x2x2 patch embedding).
        use_v2: SwinUNETR-V2 residual convolution blocks.
        **kwargs: further ``SwinUNETR`` arguments (``drop_rate``, ``use_checkpoint``, ...).

    Returns:
        The network; inputs ``[B, C, D, H, W]`` need every spatial size divisible by 32.
    """
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=num_classes,
        feature_size=feature_size,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        window_size=window_size,
        use_v2=use_v2,
        spatial_dims=3,
        **kwargs,
    )


def build_unetr(
    in_channels: int,
    num_classes: int,
    img_size: Sequence[int] = (96, 96, 96),
    feature_size: int = 16,
    hidden_size: int = 768,
    mlp_dim: int = 3072,
    num_heads: int = 12,
    **kwargs: Any,
) -> UNETR:
    """MONAI ``UNETR`` (ViT-B/16 encoder) for 3D inputs.

    Args:
        in_channels: input channels C.
        num_classes: output channels K (MONAI's ``out_channels``).
        img_size: ``[D, H, W]`` input size; fixed, because the position embedding has one entry per
            16^3 patch. Must equal the model's ``patch_size``.
        feature_size: decoder width.
        hidden_size: ViT embedding width.
        mlp_dim: ViT MLP width.
        num_heads: ViT attention heads.
        **kwargs: further ``UNETR`` arguments (``proj_type``, ``dropout_rate``, ...).

    Returns:
        The network (12 transformer layers, as published).
    """
    return UNETR(
        in_channels=in_channels,
        out_channels=num_classes,
        img_size=tuple(img_size),
        feature_size=feature_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_heads=num_heads,
        spatial_dims=3,
        **kwargs,
    )
