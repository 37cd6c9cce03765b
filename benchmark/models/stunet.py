"""STU-Net: a residual U-Net scaled in depth and width, with the official checkpoints' key layout.

Reference:
    Huang, Z., Wang, H., Deng, Z., Ye, J., Su, Y., Sun, H., He, J., Gu, Y., Gu, L., Zhang, S., Qiao, Y.
    "STU-Net: Scalable and Transferable Medical Image Segmentation Models Empowered by Large-Scale
    Supervised Pre-training", arXiv:2304.06716 (2023). Official code: github.com/uni-medical/STU-Net.

Architecture (paper, Sec. 3): an nnU-Net-like encoder-decoder with six resolution stages. Every stage
is a stack of ``depth[s]`` residual blocks (conv-IN-LeakyReLU-conv-IN, identity or 1x1x1-conv shortcut,
LeakyReLU after the sum). The first block of an encoder stage downsamples with its stride; the decoder
upsamples by nearest-neighbour interpolation followed by a 1x1x1 convolution (weight-free resizing
makes the pre-trained weights transferable across patch sizes), concatenates the skip and runs the
stage's residual blocks. The published scales (channels x depth per stage):

========  ==================================  =====  ==========
model     channels per stage                  depth  parameters
========  ==================================  =====  ==========
S         16, 32, 64, 128, 256, 256           1      14.6 M
B         32, 64, 128, 256, 512, 512          1      58.3 M
L         64, 128, 256, 512, 1024, 1024       2      440.3 M
H         96, 192, 384, 768, 1536, 1536       3      1457.3 M
========  ==================================  =====  ==========

Parameter and buffer names follow the official module tree (``conv_blocks_context``,
``upsample_layers``, ``conv_blocks_localization``, ``seg_outputs``; blocks with ``conv1``/``norm1``/
``conv2``/``norm2``/``conv3``) so that official checkpoints load with ``strict=True``. Unlike the
official class, the forward returns only the full-resolution logits unless ``deep_supervision``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualBlock", "STUNet", "UpsampleNearestConv"]


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


class ResidualBlock(nn.Module):
    """Two 3D convolutions with instance norm and a residual shortcut (STU-Net's basic block).

    ``y = act(IN(conv2(act(IN(conv1(x))))) + shortcut(x))`` where ``shortcut`` is a strided 1x1x1
    convolution when the channels or the resolution change, else the identity.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel of both convolutions, an int or ``[k_d, k_h, k_w]``.
        stride: stride of the first convolution and of the shortcut (downsampling).
        use_1x1conv: add the 1x1x1 projection shortcut (``conv3``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        use_1x1conv: bool = False,
    ) -> None:
        super().__init__()
        kernel = _triple(kernel_size)
        padding = tuple(k // 2 for k in kernel)
        self.conv1 = nn.Conv3d(
            in_channels, out_channels, kernel, stride=_triple(stride), padding=padding
        )
        self.norm1 = nn.InstanceNorm3d(out_channels, affine=True)
        self.act1 = nn.LeakyReLU(inplace=True)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel, padding=padding)
        self.norm2 = nn.InstanceNorm3d(out_channels, affine=True)
        self.act2 = nn.LeakyReLU(inplace=True)
        self.conv3 = (
            nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=_triple(stride))
            if use_1x1conv
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        shortcut = self.conv3(x) if self.conv3 is not None else x
        return self.act2(y + shortcut)


class UpsampleNearestConv(nn.Module):
    """Nearest-neighbour upsampling by ``scale`` followed by a 1x1x1 channel projection."""

    def __init__(self, in_channels: int, out_channels: int, scale: int | Sequence[int]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        self.scale = _triple(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


class STUNet(nn.Module):
    """STU-Net of any scale (see the module docstring for the published S/B/L/H settings).

    Args:
        in_channels: input channels C.
        num_classes: output channels K.
        depth: residual blocks per stage (6 entries).
        dims: channels per stage (6 entries).
        pool_op_kernel_sizes: downsampling factor between consecutive stages (``len(dims) - 1``
            entries); default 2 on every axis.
        conv_kernel_sizes: conv kernel per stage (``len(dims)`` entries); default 3 everywhere.
        deep_supervision: return the logits of every decoder stage, finest first (training only).

    Shapes:
        input ``[B, C, D, H, W]`` with each spatial size divisible by the product of the pooling
        factors on that axis (32 by default); output ``[B, K, D, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: Sequence[int] = (1, 1, 1, 1, 1, 1),
        dims: Sequence[int] = (32, 64, 128, 256, 512, 512),
        pool_op_kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        conv_kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        n_stages = len(dims)
        pools = (
            list(pool_op_kernel_sizes) if pool_op_kernel_sizes is not None else [2] * (n_stages - 1)
        )
        kernels = list(conv_kernel_sizes) if conv_kernel_sizes is not None else [3] * n_stages
        if len(depth) != n_stages or len(kernels) != n_stages or len(pools) != n_stages - 1:
            raise ValueError(
                f"STUNet: need len(depth) == len(dims) == len(conv_kernel_sizes) == "
                f"len(pool_op_kernel_sizes) + 1; got depth={list(depth)}, dims={list(dims)}, "
                f"conv_kernel_sizes={kernels}, pool_op_kernel_sizes={pools}."
            )
        self.deep_supervision = deep_supervision
        self.pool_op_kernel_sizes = [_triple(p) for p in pools]

        def stage(c_in: int, c_out: int, s: int, stride: int | Sequence[int]) -> nn.Sequential:
            blocks = [ResidualBlock(c_in, c_out, kernels[s], stride=stride, use_1x1conv=True)]
            blocks += [ResidualBlock(c_out, c_out, kernels[s]) for _ in range(depth[s] - 1)]
            return nn.Sequential(*blocks)

        self.conv_blocks_context = nn.ModuleList([stage(in_channels, dims[0], 0, 1)])
        for s in range(1, n_stages):
            self.conv_blocks_context.append(stage(dims[s - 1], dims[s], s, pools[s - 1]))
        # Decoder lists run from the coarsest to the finest stage, as in the official code.
        self.upsample_layers = nn.ModuleList(
            UpsampleNearestConv(dims[-1 - u], dims[-2 - u], pools[-1 - u])
            for u in range(n_stages - 1)
        )
        self.conv_blocks_localization = nn.ModuleList(
            stage(2 * dims[-2 - u], dims[-2 - u], n_stages - 2 - u, 1) for u in range(n_stages - 1)
        )
        self.seg_outputs = nn.ModuleList(
            nn.Conv3d(dims[-2 - u], num_classes, kernel_size=1) for u in range(n_stages - 1)
        )
        self.apply(_init_he)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for block in self.conv_blocks_context[:-1]:
            x = block(x)
            skips.append(x)
        x = self.conv_blocks_context[-1](x)
        outputs = []
        for u, (up, block) in enumerate(
            zip(self.upsample_layers, self.conv_blocks_localization, strict=True)
        ):
            x = block(torch.cat((up(x), skips[-1 - u]), dim=1))
            if self.deep_supervision or u == len(self.conv_blocks_localization) - 1:
                outputs.append(self.seg_outputs[u](x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


def _init_he(module: nn.Module) -> None:
    # nnU-Net's InitWeights_He(1e-2), which the official STU-Net applies: Kaiming normal for the
    # LeakyReLU slope, zero biases.
    if isinstance(module, nn.Conv3d):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
