"""Convolution, transformer and semantic-map layers of MedFormer (see :mod:`benchmark.models.medformer`).

Module and attribute names mirror the official code (github.com/yhygao/CBIM-Medical-Image-Segmentation,
``model/dim3/conv_layers.py`` and ``trans_layers.py``) so that official state dicts load unchanged;
this is why, e.g., the squeeze-excitation MLP is an ``nn.Sequential`` called ``excitation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "ChannelLayerNorm",
    "ConvNormAct",
    "DepthwiseSeparableConv",
    "MBConv",
    "SemanticMapFusion",
    "SemanticMapGeneration",
    "SqueezeExcitation",
    "TransformerBlock",
    "make_norm",
]

Kernel = int | Sequence[int]
NormFactory = Callable[..., nn.Module]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, D, H, W]`` (MedFormer's ``norm='ln'``)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[None, :, None, None, None] * x + self.bias[None, :, None, None, None]


def make_norm(name: str) -> NormFactory:
    """Return the norm constructor for ``bn`` | ``in`` | ``ln`` (official names)."""
    norms: dict[str, NormFactory] = {
        "bn": nn.BatchNorm3d,
        "in": nn.InstanceNorm3d,  # affine=False as in the official code: no parameters
        "ln": ChannelLayerNorm,
    }
    if name not in norms:
        raise ValueError(f"MedFormer: norm={name!r} is not one of {sorted(norms)}.")
    return norms[name]


def _padding(kernel: Kernel) -> int | list[int]:
    return kernel // 2 if isinstance(kernel, int) else [k // 2 for k in kernel]


class ConvNormAct(nn.Module):
    """Convolution with normalisation and activation; ``preact`` orders them norm-act-conv."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: Kernel = 3,
        stride: int = 1,
        groups: int = 1,
        norm: NormFactory | None = nn.BatchNorm3d,
        act: type[nn.Module] | None = nn.ReLU,
        preact: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_ch,
            out_ch,
            kernel_size,
            stride=stride,
            padding=_padding(kernel_size),
            groups=groups,
            bias=False,
        )
        self.norm = norm(in_ch if preact else out_ch, eps=1e-4) if norm else nn.Identity()
        self.act = act() if act else nn.Identity()
        self.preact = preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            return self.conv(self.act(self.norm(x)))
        return self.act(self.norm(self.conv(x)))


class BasicBlock(nn.Module):
    """Pre-activation residual block of two ConvNormAct; a conv shortcut when the shape changes."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: Kernel = 3,
        stride: int = 1,
        norm: NormFactory = nn.BatchNorm3d,
        act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(
            in_ch, out_ch, kernel_size, stride, norm=norm, act=act, preact=True
        )
        self.conv2 = ConvNormAct(out_ch, out_ch, kernel_size, 1, norm=norm, act=act, preact=True)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = ConvNormAct(
                in_ch, out_ch, kernel_size, stride, norm=norm, act=act, preact=True
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + self.shortcut(x)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise ``kernel_size`` convolution followed by a pointwise 1x1x1 one, no bias."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: Kernel = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv3d(
            in_ch, in_ch, kernel_size, padding=_padding(kernel_size), groups=in_ch, bias=False
        )
        self.pointwise = nn.Conv3d(in_ch, out_ch, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class SqueezeExcitation(nn.Module):
    """Channel gating by a two-layer MLP on the global average (ratio 4)."""

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        self.squeeze = nn.AdaptiveAvgPool3d(1)
        self.excitation = nn.Sequential(
            nn.Conv3d(channels, channels // ratio, kernel_size=1),
            nn.ReLU(),
            nn.Conv3d(channels // ratio, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excitation(self.squeeze(x))


class MBConv(nn.Module):
    """Inverted residual (expand 1x1, depthwise, squeeze-excitation, project 1x1), same in/out width.

    MedFormer uses it as the feed-forward part of its attention blocks.
    """

    def __init__(
        self,
        channels: int,
        expansion: int = 4,
        kernel_size: Kernel = 3,
        norm: NormFactory = nn.BatchNorm3d,
        act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        expanded = expansion * channels
        self.expand_proj: nn.Module = (
            nn.Identity()
            if expansion == 1
            else ConvNormAct(channels, expanded, 1, norm=norm, act=act, preact=True)
        )
        self.depthwise = ConvNormAct(
            expanded, expanded, kernel_size, groups=expanded, norm=norm, act=act, preact=True
        )
        self.se = SqueezeExcitation(expanded)
        self.pointwise = ConvNormAct(expanded, channels, 1, norm=norm, act=None, preact=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.depthwise(self.expand_proj(x)))
        return self.pointwise(y) + x


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-4)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # Channels split as (heads, dim_head), heads outermost, as the official code does.
        q, k, v = (
            t.view(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class TransformerBlock(nn.Module):
    """``depth`` pre-norm transformer layers on tokens ``[B, L, dim]`` (MLP width ``mlp_dim``)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [_PreNorm(dim, _Attention(dim, heads, dim_head)), _PreNorm(dim, _Mlp(dim, mlp_dim))]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ffn in self.layers:
            x = attn(x) + x
            x = ffn(x) + x
        return x


class SemanticMapGeneration(nn.Module):
    """Summarise ``[B, C, D, H, W]`` into ``[B, map_dim, *map_size]`` tokens by learned soft assignment."""

    def __init__(self, feat_dim: int, map_dim: int, map_size: Sequence[int]) -> None:
        super().__init__()
        self.map_size = tuple(map_size)
        n_tokens = self.map_size[0] * self.map_size[1] * self.map_size[2]
        self.base_proj = nn.Conv3d(feat_dim, map_dim, kernel_size=3, padding=1, bias=False)
        self.semantic_proj = nn.Conv3d(feat_dim, n_tokens, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.base_proj(x).flatten(2)  # [B, map_dim, DHW]
        weights = self.semantic_proj(x).flatten(2).softmax(dim=2)  # [B, tokens, DHW]
        smap = torch.einsum("bij,bkj->bik", feat, weights)
        return smap.view(*smap.shape[:2], *self.map_size)


class SemanticMapFusion(nn.Module):
    """Fuse the encoder semantic maps with one transformer over all their tokens."""

    def __init__(self, in_dims: Sequence[int], dim: int, heads: int, depth: int) -> None:
        super().__init__()
        self.in_proj = nn.ModuleList(nn.Conv3d(c, dim, kernel_size=1, bias=False) for c in in_dims)
        self.fusion = TransformerBlock(dim, depth, heads, dim // heads, dim)
        self.out_proj = nn.ModuleList(nn.Conv3d(dim, c, kernel_size=1, bias=False) for c in in_dims)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        shape = maps[0].shape[-3:]
        tokens = torch.cat(
            [p(m).flatten(2).transpose(1, 2) for p, m in zip(self.in_proj, maps, strict=True)], 1
        )
        chunks = self.fusion(tokens).chunk(len(maps), dim=1)
        return [
            p(c.transpose(1, 2).reshape(c.shape[0], -1, *shape))
            for p, c in zip(self.out_proj, chunks, strict=True)
        ]
