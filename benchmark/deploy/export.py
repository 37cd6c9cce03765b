"""FP32 PyTorch network -> ONNX with a dynamic batch axis, checked against PyTorch.

The exported graph is the input of every ONNX Runtime backend (FP32, static and dynamic INT8,
FP16), so its faithfulness is measured once here: the maximum absolute logit difference between
ONNX Runtime and PyTorch on the same inputs, at two batch sizes through one session (which also
proves the batch axis is really dynamic).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.deploy.session import make_session, run_session
from benchmark.models import (
    build_model,
    full_resolution_logits,
    load_model_config,
    load_weights,
)

__all__ = [
    "ExportCheck",
    "export_onnx",
    "check_onnx",
    "export_checked",
    "load_registry_model",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "quiet_library_output",
]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportCheck:
    """Outcome of an export and its numerical check.

    Attributes:
        path: the ``.onnx`` file.
        max_abs_diff: largest ``|ORT - torch|`` over all logits of all checked inputs.
        batch_sizes: batch sizes run through the one session (two sizes prove a dynamic batch).
        exporter: ``dynamo`` or ``torchscript``.
        opset: ONNX opset version.
    """

    path: Path
    max_abs_diff: float
    batch_sizes: tuple[int, ...]
    exporter: str
    opset: int


@contextlib.contextmanager
def quiet_library_output() -> Iterator[None]:
    """Silences library prints, warnings and log records below ERROR for the duration.

    The ONNX exporters and ONNX Runtime's calibrators print progress, deprecation notes and one
    INFO log line per deduplicated initializer on every call (Hydra routes INFO to the console);
    their results are checked numerically, so that output carries no information here.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


class _SingleOutput(nn.Module):
    """Returns the first output of networks that return several (deep supervision heads)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return full_resolution_logits(self.net(x))


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_input: torch.Tensor,
    *,
    exporter: str = "dynamo",
    opset: int = 18,
) -> Path:
    """Export ``model`` to ONNX with input ``image`` and output ``logits``, batch axis dynamic.

    Args:
        model: network mapping ``[B, C, D, H, W]`` to logits ``[B, K, D, H, W]``; put in eval mode.
        path: destination ``.onnx`` file (parent folders are created).
        example_input: ``[B, C, D, H, W]`` float32 input of the size the model will be run at
            (the ROI size); with the ``dynamo`` exporter ``B >= 2`` so the batch stays symbolic.
        exporter: ``dynamo`` (``torch.export``, torch's maintained path) or ``torchscript``.
        opset: ONNX opset version.

    Returns:
        The written path.

    Raises:
        ValueError: ``example_input`` is not 5-D, or ``exporter`` is unknown.
    """
    if example_input.ndim != 5:
        raise ValueError(f"example_input must be [B, C, D, H, W], got {tuple(example_input.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _SingleOutput(model).eval()
    common: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "opset_version": opset,
    }
    with torch.no_grad(), quiet_library_output():
        if exporter == "dynamo":
            if example_input.shape[0] < 2:
                example_input = example_input.expand(2, *example_input.shape[1:]).contiguous()
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                wrapped,
                (example_input,),
                str(path),
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
                **common,
            )
        elif exporter == "torchscript":
            torch.onnx.export(
                wrapped,
                (example_input,),
                str(path),
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                dynamo=False,
                **common,
            )
        else:
            raise ValueError(f"exporter={exporter!r} is not one of ('dynamo', 'torchscript')")
    return path


@torch.no_grad()
def check_onnx(
    model: nn.Module,
    onnx_path: str | Path,
    inputs: Sequence[torch.Tensor],
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> float:
    """Largest absolute logit difference between ONNX Runtime and PyTorch over ``inputs``.

    All inputs go through one session, so inputs of different batch sizes also test that the
    batch axis is dynamic (a fixed axis makes ONNX Runtime raise).

    Args:
        model: the exported PyTorch network (eval mode).
        onnx_path: its ONNX export.
        inputs: ``[B, C, D, H, W]`` float32 tensors.
        providers: ONNX Runtime execution providers.

    Returns:
        ``max |logits_ort - logits_torch|`` over every element of every input.
    """
    session = make_session(onnx_path, providers=providers)
    wrapped = _SingleOutput(model).eval()
    worst = 0.0
    for x in inputs:
        expected = wrapped(x).float().numpy()
        got = run_session(session, x.numpy())
        if got.shape != expected.shape:
            raise RuntimeError(
                f"{onnx_path}: ONNX output shape {got.shape} != PyTorch {expected.shape} "
                f"for input {tuple(x.shape)}"
            )
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def export_checked(
    model: nn.Module,
    path: str | Path,
    in_channels: int,
    roi_size: Sequence[int],
    *,
    exporter: str = "dynamo",
    opset: int = 18,
    check_batch_sizes: Sequence[int] = (1, 3),
    providers: Sequence[str] = ("CPUExecutionProvider",),
    seed: int = 0,
) -> ExportCheck:
    """Export at ``roi_size`` and check ONNX Runtime against PyTorch at two batch sizes.

    Args:
        model: network in eval mode.
        path: destination ``.onnx`` file.
        in_channels: ``C`` of the input ``[B, C, *roi_size]``.
        roi_size: ``(D, H, W)`` patch size the network is run at (sliding-window ROI).
        exporter: see :func:`export_onnx`.
        opset: ONNX opset version.
        check_batch_sizes: batch sizes run through one session for the check.
        providers: ONNX Runtime execution providers for the check.
        seed: seed of the random check inputs.

    Returns:
        The :class:`ExportCheck` with the measured maximum absolute difference.
    """
    generator = torch.Generator().manual_seed(seed)
    shape = (in_channels, *(int(s) for s in roi_size))
    example = torch.randn(2, *shape, generator=generator)
    path = export_onnx(model.eval(), path, example, exporter=exporter, opset=opset)
    inputs = [torch.randn(int(b), *shape, generator=generator) for b in check_batch_sizes]
    diff = check_onnx(model, path, inputs, providers=providers)
    return ExportCheck(
        path=path,
        max_abs_diff=diff,
        batch_sizes=tuple(int(b) for b in check_batch_sizes),
        exporter=exporter,
        opset=opset,
    )


def load_registry_model(
    model_cfg: Mapping[str, Any] | str, in_channels: int, num_classes: int
) -> nn.Module:
    """A registry network with its FP32 checkpoint loaded, in eval mode on the CPU.

    Args:
        model_cfg: ``conf/model/<name>.yaml`` content, or a registry name; ``checkpoint: null``
            keeps the random initialisation (seed it first for reproducibility).
        in_channels: input channels of the dataset.
        num_classes: output classes including background.
    """
    if isinstance(model_cfg, str):
        model_cfg = load_model_config(model_cfg)
    model = build_model(model_cfg, in_channels=in_channels, num_classes=num_classes, device="cpu")
    if model_cfg.get("checkpoint") is not None:
        model = load_weights(model, model_cfg)
    return model.eval()
