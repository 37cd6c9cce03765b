"""Deployment fixtures: a tiny encoder-decoder exported once per session, calibration patches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.deploy.export import export_checked

ROI = (16, 16, 16)


class TinyUNet3d(nn.Module):
    """Conv3d + InstanceNorm encoder, strided down, ConvTranspose3d up, skip concat, 1x1x1 head.

    The operator mix of nnU-Net-like networks (about 2k parameters) in a few milliseconds.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: int = 6):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1),
            nn.InstanceNorm3d(width, affine=True),
            nn.LeakyReLU(0.01),
        )
        self.down = nn.Sequential(
            nn.Conv3d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.01)
        )
        self.up = nn.ConvTranspose3d(width, width, 2, stride=2)
        self.head = nn.Conv3d(2 * width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)
        return self.head(torch.cat([skip, self.up(self.down(skip))], dim=1))


def blob_volume(generator: torch.Generator, batch: int = 1) -> torch.Tensor:
    """``[B, 1, *ROI]`` smooth random blobs: structured inputs with a few bright regions."""
    noise = torch.randn(batch, 1, *ROI, generator=generator)
    smooth = nn.functional.avg_pool3d(noise, 5, stride=1, padding=2)
    return smooth / smooth.std()


@pytest.fixture(scope="session")
def roi() -> tuple[int, int, int]:
    return ROI


@pytest.fixture(scope="session")
def tiny_unet() -> TinyUNet3d:
    torch.manual_seed(0)
    return TinyUNet3d().eval()


@pytest.fixture(scope="session")
def test_inputs() -> torch.Tensor:
    """``[4, 1, *ROI]`` inputs independent of the calibration patches."""
    generator = torch.Generator().manual_seed(7)
    return blob_volume(generator, batch=4)


@pytest.fixture(scope="session")
def calibration_batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [blob_volume(generator) for _ in range(8)]


@pytest.fixture(scope="session")
def exported(tiny_unet, tmp_path_factory):
    """The tiny network exported with the default (dynamo) exporter and checked."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_checked(tiny_unet, path, in_channels=1, roi_size=ROI)
