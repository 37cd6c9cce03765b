"""Small hand-built networks with the structures the closed-form algorithms act on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _outliers(module: nn.Module, generator: torch.Generator, spread: float = 3.0) -> None:
    """Affine parameters with a few large channels, as trained norms have."""
    with torch.no_grad():
        channels = module.weight.numel()
        module.weight.copy_(1 + spread * torch.randn(channels, generator=generator).abs())
        module.weight[0] *= 8
        module.bias.copy_(torch.randn(channels, generator=generator))


class Hybrid(nn.Module):
    """nnU-Net-style conv block, then a pre-norm MLP block on channel-last tokens, then a
    LayerNorm -> ReLU -> 1x1x1 head: every pair kind the algorithms rewrite, and pairs they
    must leave alone (the residual read, the permute in front of the head)."""

    def __init__(self, channels: int = 8, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.stem = nn.Conv3d(1, channels, 3, padding=1)
        self.norm = nn.InstanceNorm3d(channels, affine=True)
        self.act = nn.LeakyReLU(0.01)
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)
        self.ln1 = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, 2 * channels)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(2 * channels, channels)
        self.ln2 = nn.LayerNorm(channels)
        self.relu = nn.ReLU()
        self.head = nn.Conv3d(channels, classes, 1)
        for norm in (self.norm, self.ln1, self.ln2):
            _outliers(norm, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.act(self.norm(self.stem(x))))
        tokens = y.permute(0, 2, 3, 4, 1)
        tokens = tokens + self.fc2(self.gelu(self.fc1(self.ln1(tokens))))
        tokens = self.ln2(tokens)
        return self.head(self.relu(tokens.permute(0, 4, 1, 2, 3)))


class PaddedTokens(nn.Module):
    """LayerNorm -> zero pad of the token axis -> linear (Swin's norm1 -> pad -> qkv): the
    padded rows read ``fc(0)``, so a shift of the norm output is not exact here."""

    def __init__(self, channels: int = 12, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embed = nn.Linear(channels, channels)
        self.ln = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, channels)
        _outliers(self.ln, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.ln(self.embed(x.flatten(2).transpose(1, 2)))
        return self.fc(F.pad(tokens, (0, 0, 0, 3)))


def token_batches(n: int = 3, channels: int = 12, seed: int = 1) -> list[torch.Tensor]:
    """Inputs of :class:`PaddedTokens`: ``[1, channels, 4, 4, 4]``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, channels, 4, 4, 4, generator=generator) for _ in range(n)]


def volume_batches(n: int = 3, size: int = 8, seed: int = 3) -> list[torch.Tensor]:
    """Single-channel volumes ``[1, 1, size, size, size]``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 1, size, size, size, generator=generator) for _ in range(n)]
