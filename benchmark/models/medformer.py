"""MedFormer: a hybrid CNN-transformer U-Net with bidirectional attention through semantic maps.

Reference:
    Gao, Y., Zhou, M., Liu, D., Yan, Z., Zhang, S., Metaxas, D. N. "A Data-scalable Transformer for
    Medical Image Segmentation: Architecture, Model Efficiency, and Benchmark", arXiv:2203.00131
    (2022/2023). Official code: github.com/yhygao/CBIM-Medical-Image-Segmentation
    (``model/dim3/medformer.py``, BTCV settings in ``config/bcv/medformer_3d.yaml``).

Architecture (paper Sec. 3): a convolutional stem (``inc``, ``down1``) then three down stages and two
up stages of B-MHA blocks. Each of those stages summarises its feature map into a small *semantic
map* (``map_size`` tokens: a learned soft assignment of voxels to tokens); the B-MHA block lets voxels
attend to the semantic map tokens and the tokens attend back to the voxels, so attention costs
O(voxels x tokens) instead of O(voxels^2). The three encoder semantic maps are fused by a plain
transformer (``map_fusion``) and fed to the decoder. The last two decoder stages are convolutional.

Module names mirror the official code so that official state dicts (also ``module.``-prefixed ones,
see :mod:`benchmark.models.checkpoints`) load with ``strict=True``. With ``norm='in'`` (the published
setting) the instance norms have no affine parameters, as in the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from benchmark.models.medformer_layers import (
    BasicBlock,
    ConvNormAct,
    DepthwiseSeparableConv,
    Kernel,
    MBConv,
    NormFactory,
    SemanticMapFusion,
    SemanticMapGeneration,
    make_norm,
)

__all__ = ["BidirectionAttentionBlock", "MedFormer"]

_ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU}


class _BidirectionAttention(nn.Module):
    def __init__(
        self, feat_dim: int, map_dim: int, out_dim: int, heads: int, dim_head: int, kernel: Kernel
    ):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.feat_qv = DepthwiseSeparableConv(feat_dim, 2 * inner, kernel)
        self.feat_out = DepthwiseSeparableConv(inner, out_dim, kernel)
        self.map_qv = nn.Conv3d(map_dim, 2 * inner, kernel_size=1, bias=False)
        self.map_out = nn.Conv3d(inner, map_dim, kernel_size=1, bias=False)

    def forward(self, feat: torch.Tensor, smap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Channels split as (dim_head, heads), heads innermost, as in the official code's einops pattern.
        split = "b (dh h) d y x -> b h (d y x) dh"
        fq, fv = (rearrange(t, split, h=self.heads) for t in self.feat_qv(feat).chunk(2, dim=1))
        mq, mv = (rearrange(t, split, h=self.heads) for t in self.map_qv(smap).chunk(2, dim=1))
        # One similarity matrix, normalised over tokens for voxels and over voxels for tokens.
        attn = torch.einsum("bhid,bhjd->bhij", fq, mq) * self.dim_head**-0.5
        feat_out = torch.einsum("bhij,bhjd->bhid", attn.softmax(dim=-1), mv)
        map_out = torch.einsum("bhji,bhjd->bhid", attn.softmax(dim=-2), fv)
        merge = "b h (d y x) dh -> b (dh h) d y x"
        d, y, x = feat.shape[-3:]
        md, my, mx = smap.shape[-3:]
        feat_out = self.feat_out(rearrange(feat_out, merge, d=d, y=y, x=x))
        map_out = self.map_out(rearrange(map_out, merge, d=md, y=my, x=mx))
        return feat_out, map_out


class BidirectionAttentionBlock(nn.Module):
    """B-MHA block: bidirectional voxel/semantic-map attention, residual, MBConv feed-forward.

    Shapes: ``x [B, feat_dim, D, H, W]``, ``semantic_map [B, map_dim, *map_size]`` ->
    ``([B, out_dim, D, H, W], [B, map_dim, *map_size])``.
    """

    def __init__(
        self,
        feat_dim: int,
        map_dim: int,
        out_dim: int,
        heads: int,
        dim_head: int,
        norm: NormFactory,
        act: type[nn.Module],
        expansion: int,
        kernel_size: Kernel,
    ) -> None:
        super().__init__()
        self.norm1 = norm(feat_dim)
        self.norm2 = norm(map_dim)
        self.attn = _BidirectionAttention(feat_dim, map_dim, out_dim, heads, dim_head, kernel_size)
        self.shortcut: nn.Module = nn.Sequential()
        if feat_dim != out_dim:
            self.shortcut = ConvNormAct(feat_dim, out_dim, 1, norm=norm, act=act, preact=True)
        self.feedforward = MBConv(out_dim, expansion, kernel_size, norm=norm, act=act)

    def forward(
        self, x: torch.Tensor, semantic_map: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, smap = self.attn(self.norm1(x), self.norm2(semantic_map))
        return self.feedforward(out + self.shortcut(x)), smap + semantic_map


class _BasicLayer(nn.Module):
    def __init__(self, feat_dim: int, map_dim: int, out_dim: int, num_blocks: int, **kw) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            BidirectionAttentionBlock(feat_dim if i == 0 else out_dim, map_dim, out_dim, **kw)
            for i in range(num_blocks)
        )

    def forward(
        self, x: torch.Tensor, smap: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        for block in self.blocks:
            x, smap = block(x, smap)
        return x, smap


class _Inconv(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, kernel: Kernel, norm: NormFactory, act: type[nn.Module]
    ):
        super().__init__()
        pad = [k // 2 for k in kernel] if not isinstance(kernel, int) else kernel // 2
        self.conv1 = nn.Conv3d(in_ch, out_ch, kernel, padding=pad, bias=False)
        self.conv2 = BasicBlock(out_ch, out_ch, kernel, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _PatchMerging(nn.Module):
    # Space-to-channel downsampling: the scale[0] x scale[1] x scale[2] sub-grids are stacked.
    def __init__(
        self, dim: int, out_dim: int, norm: NormFactory, scale: Sequence[int], kernel: Kernel
    ):
        super().__init__()
        self.scale = tuple(scale)
        merged = dim * self.scale[0] * self.scale[1] * self.scale[2]
        self.norm = norm(merged)
        self.reduction = DepthwiseSeparableConv(merged, out_dim, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sd, sh, sw = self.scale
        parts = [
            x[:, :, i::sd, j::sh, k::sw] for i in range(sd) for j in range(sh) for k in range(sw)
        ]
        return self.reduction(self.norm(torch.cat(parts, 1)))


class _DownBlock(nn.Module):
    def __init__(
        self,
        in_ch,
        out_ch,
        conv_num,
        trans_num,
        scale,
        kernel,
        norm,
        act,
        map_size,
        map_generate,
        **kw,
    ):
        super().__init__()
        self.map_generate = map_generate
        if map_generate:
            self.map_gen = SemanticMapGeneration(out_ch, out_ch, map_size)
        self.patch_merging = _PatchMerging(in_ch, out_ch, norm, scale, kernel)
        self.conv_blocks = nn.Sequential(
            *[BasicBlock(out_ch, out_ch, kernel, norm=norm, act=act) for _ in range(conv_num)]
        )
        self.trans_blocks = _BasicLayer(
            out_ch, out_ch, out_ch, trans_num, norm=norm, act=act, kernel_size=kernel, **kw
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.conv_blocks(self.patch_merging(x))
        smap = self.map_gen(out) if self.map_generate else None
        return self.trans_blocks(out, smap)


class _UpBlock(nn.Module):
    def __init__(self, in_ch, out_ch, conv_num, trans_num, kernel, norm, act, map_shortcut, **kw):
        super().__init__()
        self.map_shortcut = map_shortcut
        self.map_reduction = nn.Conv3d(
            in_ch + out_ch if map_shortcut else in_ch, out_ch, 1, bias=False
        )
        self.trans_blocks = _BasicLayer(
            in_ch + out_ch, out_ch, out_ch, trans_num, norm=norm, act=act, kernel_size=kernel, **kw
        )
        dims = [out_ch if trans_num > 0 else in_ch + out_ch] + [out_ch] * conv_num
        self.conv_blocks = nn.Sequential(
            *[BasicBlock(dims[i], out_ch, kernel, norm=norm, act=act) for i in range(conv_num)]
        )

    def forward(self, low, skip, map1, map2=None):
        low = F.interpolate(low, size=skip.shape[-3:], mode="trilinear", align_corners=True)
        smap = torch.cat([map1, map2], 1) if self.map_shortcut and map2 is not None else map1
        smap = self.map_reduction(smap) if smap is not None else None
        out, smap = self.trans_blocks(torch.cat([low, skip], 1), smap)
        return self.conv_blocks(out), smap


class MedFormer(nn.Module):
    """MedFormer 3D (defaults: the official BTCV configuration, 36.6 M parameters for 14 classes).

    Args:
        in_channels: input channels C.
        num_classes: output channels K.
        base_chan: stem width.
        map_size: semantic map tokens per axis ``[d, h, w]``.
        conv_num: BasicBlocks per stage (down1..4, up1..4).
        trans_num: B-MHA blocks per stage (down1..4, up1..4).
        chan_num: channels per stage (down1..4, up1..4).
        num_heads: attention heads per stage (``chan_num[i]`` must be divisible by it).
        fusion_depth: transformer layers fusing the three encoder semantic maps.
        fusion_dim: width of the fusion transformer.
        fusion_heads: heads of the fusion transformer.
        expansion: MBConv expansion of the B-MHA feed-forward.
        norm: ``in`` | ``bn`` | ``ln``.
        act: ``gelu`` | ``relu`` | ``swish``.
        kernel_size: conv kernel for stem, down1..4 (5 entries; the decoder reuses them mirrored).
        scale: downsampling factor of down1..4.
        aux_loss: add the official auxiliary head on the up2 output (training only).

    Shapes:
        input ``[B, C, D, H, W]`` with each axis divisible by the product of ``scale`` on it and
        the bottleneck at least ``map_size``; output ``[B, K, D, H, W]`` (``[out, aux]`` in training
        mode with ``aux_loss``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_chan: int = 32,
        map_size: Sequence[int] = (4, 4, 4),
        conv_num: Sequence[int] = (2, 0, 0, 0, 0, 0, 2, 2),
        trans_num: Sequence[int] = (0, 2, 4, 6, 4, 2, 0, 0),
        chan_num: Sequence[int] = (64, 128, 256, 320, 256, 128, 64, 32),
        num_heads: Sequence[int] = (1, 4, 8, 10, 8, 4, 1, 1),
        fusion_depth: int = 2,
        fusion_dim: int = 320,
        fusion_heads: int = 10,
        expansion: int = 4,
        norm: str = "in",
        act: str = "gelu",
        kernel_size: Sequence[Kernel] = ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
        scale: Sequence[Sequence[int]] = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)),
        aux_loss: bool = False,
    ) -> None:
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"MedFormer: act={act!r} is not one of {sorted(_ACTS)}.")
        norm_f, act_c = make_norm(norm), _ACTS[act]
        kernel = [tuple(k) if not isinstance(k, int) else k for k in kernel_size]
        scale = [tuple(s) if not isinstance(s, int) else (s, s, s) for s in scale]
        common = {"norm": norm_f, "act": act_c}

        def attn_kw(i: int) -> dict:
            return {
                "heads": num_heads[i],
                "dim_head": chan_num[i] // num_heads[i],
                "expansion": expansion,
            }

        self.inc = _Inconv(in_channels, base_chan, kernel[0], **common)
        self.down1 = _DownBlock(
            base_chan,
            chan_num[0],
            conv_num[0],
            trans_num[0],
            scale[0],
            kernel[1],
            map_size=map_size,
            map_generate=False,
            **common,
            **attn_kw(0),
        )
        self.down2 = _DownBlock(
            chan_num[0],
            chan_num[1],
            conv_num[1],
            trans_num[1],
            scale[1],
            kernel[2],
            map_size=map_size,
            map_generate=True,
            **common,
            **attn_kw(1),
        )
        self.down3 = _DownBlock(
            chan_num[1],
            chan_num[2],
            conv_num[2],
            trans_num[2],
            scale[2],
            kernel[3],
            map_size=map_size,
            map_generate=True,
            **common,
            **attn_kw(2),
        )
        self.down4 = _DownBlock(
            chan_num[2],
            chan_num[3],
            conv_num[3],
            trans_num[3],
            scale[3],
            kernel[4],
            map_size=map_size,
            map_generate=True,
            **common,
            **attn_kw(3),
        )
        self.map_fusion = SemanticMapFusion(chan_num[1:4], fusion_dim, fusion_heads, fusion_depth)
        self.up1 = _UpBlock(
            chan_num[3],
            chan_num[4],
            conv_num[4],
            trans_num[4],
            kernel[3],
            map_shortcut=True,
            **common,
            **attn_kw(4),
        )
        self.up2 = _UpBlock(
            chan_num[4],
            chan_num[5],
            conv_num[5],
            trans_num[5],
            kernel[2],
            map_shortcut=True,
            **common,
            **attn_kw(5),
        )
        self.up3 = _UpBlock(
            chan_num[5],
            chan_num[6],
            conv_num[6],
            trans_num[6],
            kernel[1],
            map_shortcut=False,
            **common,
            **attn_kw(6),
        )
        self.up4 = _UpBlock(
            chan_num[6],
            chan_num[7],
            conv_num[7],
            trans_num[7],
            kernel[0],
            map_shortcut=False,
            **common,
            **attn_kw(7),
        )
        self.aux_loss = aux_loss
        if aux_loss:
            self.aux_out = nn.Conv3d(chan_num[5], num_classes, kernel_size=1)
        self.outc = nn.Conv3d(chan_num[7], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x0 = self.inc(x)
        x1, _ = self.down1(x0)
        x2, map2 = self.down2(x1)
        x3, map3 = self.down3(x2)
        x4, map4 = self.down4(x3)
        map2, map3, map4 = self.map_fusion([map2, map3, map4])
        out, smap = self.up1(x4, x3, map4, map3)
        out, smap = self.up2(out, x2, smap, map2)
        aux = self.aux_out(out) if self.aux_loss and self.training else None
        out, smap = self.up3(out, x1, smap, None)
        out, _ = self.up4(out, x0, smap, None)
        out = self.outc(out)
        if aux is not None:
            return [
                out,
                F.interpolate(aux, size=x.shape[-3:], mode="trilinear", align_corners=True),
            ]
        return out
