"""Sliding-window logits of an nnU-Net network, computed by ``nnUNetPredictor`` itself.

For a model that comes from an nnU-Net results folder the FP32 baseline must be nnU-Net's own
prediction, so the tiling (``compute_steps_for_sliding_window``), the Gaussian importance map
(sigma 1/8 of the patch, as nnU-Net builds it), the padding of small volumes and the test-time
mirroring are nnU-Net's code: :func:`nnunet_logits` hands the (possibly fake-quantized) network
to ``nnUNetPredictor.manual_initialization`` and calls ``predict_sliding_window_return_logits``.

What still differs from a plain ``nnUNetPredictor.predict_from_files`` run:

* one network, not an ensemble of folds (a run evaluates one fold's checkpoint);
* nnU-Net accumulates the window logits in float16 on every device; that is kept, so the
  predictions match, and it bounds logit precision at about 1e-3 relative;
* ``torch.compile`` (``nnUNet_compile``) is never applied, since a fake-quantized network
  must run as built.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["nnunet_logits"]


@torch.inference_mode()
def nnunet_logits(
    network: nn.Module,
    image: torch.Tensor,
    plans: Mapping[str, Any],
    dataset_json: Mapping[str, Any],
    configuration: str,
    mirroring_axes: Sequence[int] = (),
    tile_step_size: float = 0.5,
    use_gaussian: bool = True,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Logits ``[K, D, H, W]`` (CPU, in the float16 nnU-Net accumulates in) of ``network`` over a preprocessed volume.

    Args:
        network: maps ``[1, C, *patch]`` to logits ``[1, K, *patch]``.
        image: ``[C, D, H, W]`` as nnU-Net's preprocessor returns it.
        plans, dataset_json, configuration: the training's plans, labels and configuration
            (patch size and label handling come from there).
        mirroring_axes: spatial axes to mirror along (all their combinations are averaged, as
            nnU-Net does); empty for none.
        tile_step_size: window step as a fraction of the patch (nnU-Net's default 0.5).
        use_gaussian: Gaussian weighting of window centres (nnU-Net's default).
        device: where the network runs.
    """
    # nnunetv2 pulls in a large import tree that runs of other models never need
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if image.ndim != 4:
        raise ValueError(f"image must be [C, D, H, W], got shape {tuple(image.shape)}")
    device = torch.device(device)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a CUDA notice on every CPU start
        predictor = nnUNetPredictor(
            tile_step_size=tile_step_size,
            use_gaussian=use_gaussian,
            use_mirroring=bool(mirroring_axes),
            perform_everything_on_device=device.type == "cuda",
            device=device,
            allow_tqdm=False,
        )
    plans_manager = PlansManager(dict(plans))
    predictor.manual_initialization(
        network,
        plans_manager,
        plans_manager.get_configuration(configuration),
        None,
        dict(dataset_json),
        "nnUNetTrainer",
        tuple(int(a) for a in mirroring_axes) or None,
    )
    logits = predictor.predict_sliding_window_return_logits(image.float())
    return logits.cpu()
