"""Whole-volume class probabilities from a patch-based network (MONAI's sliding-window inferer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

__all__ = ["predict_probabilities"]


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    device: str | torch.device = "cpu",
    amp: bool = False,
    mode: str = "gaussian",
) -> torch.Tensor:
    """Softmax probabilities of ``model`` over a whole preprocessed volume.

    Args:
        model: network mapping ``[B, C, *roi_size]`` to logits ``[B, K, *roi_size]``.
        image: preprocessed volume ``[C, D, H, W]`` (no batch axis).
        roi_size: patch size the network was trained on; smaller volumes are padded by MONAI.
        overlap: fraction of overlap between neighbouring patches.
        sw_batch_size: patches per forward pass.
        device: where the network runs; the stitched output is kept on the CPU.
        amp: run the network under CUDA autocast (ignored on the CPU).
        mode: patch blending, ``"gaussian"`` (nnU-Net's choice) or ``"constant"``.

    Returns:
        ``[K, D, H, W]`` float32 probabilities on the CPU.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be [C, D, H, W], got shape {tuple(image.shape)}")
    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    with torch.autocast(device_type=device.type, enabled=use_amp):
        logits = sliding_window_inference(
            image[None].to(device),
            roi_size=tuple(int(s) for s in roi_size),
            sw_batch_size=sw_batch_size,
            predictor=model,
            overlap=overlap,
            mode=mode,
            sw_device=device,
            device=torch.device("cpu"),
        )
    return torch.softmax(logits[0].float(), dim=0)
