"""medqbench: measure what quantization does to 3D medical segmentation models."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
