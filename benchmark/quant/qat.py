"""Learnable scales and offsets, so quantization-aware training runs through the same modules.

:func:`make_learnable` turns the scale and zero point of every calibrated static activation
quantizer and of every integer weight quantizer into ``nn.Parameter`` objects; forwards then
use straight-through rounding (:func:`benchmark.quant.primitives.fake_quantize_ste`), so the
loss reaches the inputs, the weights and the quantization parameters (LSQ, with LSQ's gradient
scale; LSQ+ offsets on asymmetric grids). Dynamic quantizers keep computing their ranges from
each input, and static ones that calibration never reached stay uncalibrated.

:func:`freeze_learned` undoes the parametrisation: the learned values become the quantizers'
buffers, the model is an ordinary calibrated one again (its forward computes the numbers the
learnable model computed), and :func:`benchmark.quant.save_ranges` stores it like any other.
The training loop itself is the ``qat`` algorithm (:mod:`benchmark.quant.algorithms.qat`);
:class:`TrainingCheckpoint` is its per-epoch state on disk.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.quant.errors import QuantError
from benchmark.quant.primitives import SCALE_EPS
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = [
    "DYNAMIC_CHOICES",
    "make_learnable",
    "freeze_learned",
    "learnable_quantizers",
    "dynamic_quantizers",
    "clamp_learned",
    "data_fingerprint",
    "TrainingCheckpoint",
    "CHECKPOINT_NAME",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "qat_checkpoint.pt"
CHECKPOINT_VERSION = 1

Quantizer = ActivationQuantizer | WeightQuantizer


def _operands(qmodel: nn.Module) -> list[tuple[str, Quantizer, torch.Tensor | None]]:
    """``(name, quantizer, weight or None)`` of every quantizer, in registration order."""
    found = []
    for module_name, module in qmodel.named_modules():
        for name, child in module.named_children():
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(child, ActivationQuantizer):
                found.append((full, child, None))
            elif isinstance(child, WeightQuantizer) and name.endswith("weight_quant"):
                found.append((full, child, _weight_of(module, name)))
    return found


DYNAMIC_CHOICES = ("keep", "error")


def dynamic_quantizers(qmodel: nn.Module) -> list[str]:
    """Names of the activation quantizers whose ranges come from every input (not learnable)."""
    return [n for n, q, _ in _operands(qmodel) if isinstance(q, ActivationQuantizer) and q.dynamic]


def _integer_grid(quantizer: Quantizer, weight: torch.Tensor | None) -> bool:
    """Whether a calibrated static quantizer has an integer grid (FP8 and block formats
    have none: no weight zero point; an FP8 activation calibrates no code range)."""
    if weight is not None:
        return quantizer.codes(weight)[2] is not None
    return quantizer.qmin is not None


def make_learnable(qmodel: nn.Module, dynamic: str = "keep") -> list[nn.Parameter]:
    """Make the calibrated quantization parameters of ``qmodel`` trainable; returns them.

    Returns ``[scale, offset]`` per quantizer; offsets of grids without a zero point are frozen
    (``requires_grad=False``). Static activation quantizers that calibration never reached
    (an unused deep-supervision head) stay uncalibrated.

    Args:
        qmodel: a calibrated quantized model.
        dynamic: ``keep``: dynamic activation quantizers stay dynamic (gradients pass straight
            through them); ``error``: refuse a model that has any.

    Raises:
        QuantError: no static range is calibrated; a quantizer has a non-integer grid (FP8,
            block formats) or is learnable already; ``dynamic="error"`` and a dynamic
            quantizer exists. The message names the quantizers.
    """
    if dynamic not in DYNAMIC_CHOICES:
        raise QuantError(f"dynamic={dynamic!r}; allowed: {', '.join(DYNAMIC_CHOICES)}")
    operands = _operands(qmodel)
    moving = dynamic_quantizers(qmodel)
    if dynamic == "error" and moving:
        raise QuantError(
            f"cannot learn the scales of {len(moving)} dynamic activation quantizer(s) "
            f"{_listing(moving)}: their ranges are recomputed from every input (per-voxel/"
            "per-token scales); keep them dynamic and train the weights and the static "
            "quantizers (qat option dynamic=keep), or quantize with position_scales='static'"
        )
    static = [q for _, q, w in operands if w is None and not q.dynamic]
    if static and all(q.scale is None for q in static):
        raise QuantError(
            "the static activation ranges are not calibrated; run "
            "benchmark.quant.calibrate(qmodel, batches) or load_ranges first"
        )
    refused = [
        name
        for name, q, w in operands
        if q.learnable or ((w is not None or q.scale is not None) and not _integer_grid(q, w))
    ]
    if refused:
        raise QuantError(
            f"cannot learn the quantization parameters of {_listing(refused)}: learnable scales "
            "need integer grids (not FP8 or block formats) that are not learnable already"
        )
    params: list[nn.Parameter] = []
    for _, quantizer, weight in operands:
        if weight is not None:
            params += quantizer.make_learnable(weight)
        elif not quantizer.dynamic and quantizer.scale is not None:
            params += quantizer.make_learnable()
    return params


def learnable_quantizers(qmodel: nn.Module) -> dict[str, Quantizer]:
    """The quantizers :func:`make_learnable` made learnable, by dotted name."""
    return {n: q for n, q, _ in _operands(qmodel) if q.learnable}


def clamp_learned(qmodel: nn.Module) -> None:
    """Project learned parameters back to valid grids after an optimiser step: scales at least
    float32 eps (as calibrated scales are), offsets within the code range."""
    with torch.no_grad():
        for quantizer in learnable_quantizers(qmodel).values():
            quantizer.scale.clamp_(min=SCALE_EPS)
            quantizer.offset.clamp_(quantizer.qmin, quantizer.qmax)


def freeze_learned(qmodel: nn.Module) -> nn.Module:
    """Turn every learnable quantizer back into a calibrated one holding the learned values."""
    for quantizer in learnable_quantizers(qmodel).values():
        quantizer.freeze_learned()
    return qmodel


def data_fingerprint(pairs: list[tuple[torch.Tensor, torch.Tensor | None]]) -> dict[str, Any]:
    """Shapes and sums of the batches: a resumed run must see the same data."""
    return {
        "shapes": [list(image.shape) for image, _ in pairs],
        "image_sum": float(sum(image.double().sum() for image, _ in pairs)),
        "labelled": pairs[0][1] is not None,
        "label_sum": float(sum(label.double().sum() for _, label in pairs if label is not None)),
    }


class TrainingCheckpoint:
    """``qat_checkpoint.pt``: model, optimiser, schedule, epochs done and wall time."""

    def __init__(self, folder: str | None, fingerprint: dict[str, Any]) -> None:
        self.path = Path(folder) / CHECKPOINT_NAME if folder is not None else None
        self.fingerprint = fingerprint

    def load(self, qmodel, optimizer, schedule) -> tuple[int, float]:
        """Restore a previous session's state; ``(epochs done, wall time)``, ``(0, 0)`` if none."""
        if self.path is None or not self.path.is_file():
            return 0, 0.0
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if (
            state.get("version") != CHECKPOINT_VERSION
            or state.get("fingerprint") != self.fingerprint
        ):
            saved = state.get("fingerprint", {})
            differ = sorted(
                k
                for k in set(saved) | set(self.fingerprint)
                if saved.get(k) != self.fingerprint.get(k)
            )
            raise QuantError(
                f"{self.path} was written by another QAT run (differs in {differ or 'version'}); "
                "delete it or use another qat checkpoint_dir"
            )
        qmodel.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        log.info("qat resumes after epoch %d from %s", state["epoch"], self.path)
        return int(state["epoch"]), float(state["wall_s"])

    def save(self, qmodel, optimizer, schedule, epoch: int, wall_s: float) -> None:
        """Write atomically (temp file beside the target, then rename)."""
        if self.path is None:
            return
        state = {
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "wall_s": wall_s,
            "model": qmodel.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def _listing(names: list[str], limit: int = 5) -> str:
    """``a, b, c (+4 more)``: names on one line."""
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _weight_of(module: nn.Module, quantizer_name: str):
    """The parameter a weight quantizer quantizes (``weight_quant`` -> ``weight``)."""
    part = quantizer_name[: -len("weight_quant")].rstrip("_")
    if not part:
        return module.weight
    if part == "out_proj":
        return module.out_proj.weight
    return getattr(module, f"{part}_weight")
