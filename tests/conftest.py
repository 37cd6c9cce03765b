"""Shared fixtures: seeded randomness, the model descriptions of ``conf/model`` for the
registry, and a tiny 3D network that builds in milliseconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.models.registry import MODEL_DIR_ENV

# the registry takes its descriptions from its caller: the tests name the repository's
os.environ.setdefault(MODEL_DIR_ENV, str(Path(__file__).resolve().parents[1] / "conf" / "model"))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)


class TinySegNet(nn.Module):
    """Two 3x3x3 convolutions and a 1x1x1 head: enough structure for engine and inference tests."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv3d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.fixture
def tiny_segnet() -> TinySegNet:
    return TinySegNet().eval()
