"""What a network's forward returns, reduced to the one tensor every consumer scores."""

from __future__ import annotations

import torch

__all__ = ["full_resolution_logits"]


def full_resolution_logits(output: torch.Tensor | list | tuple) -> torch.Tensor:
    """The full-resolution logits: the first of a deep-supervision list, else the output itself.

    nnU-Net and STU-Net networks built with deep supervision return one tensor per decoder
    stage, finest first; every other network returns the tensor.
    """
    return output[0] if isinstance(output, (list, tuple)) else output
