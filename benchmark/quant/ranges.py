"""Calibrated ranges as files and between models: ``save_ranges``, ``load_ranges``,
``copy_ranges``, so a sweep computes ranges once per model x spec x calibration set."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from benchmark.quant.algorithms import ALGORITHMS, Algorithm
from benchmark.quant.errors import QuantError, RangesMismatchError
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.spec import QuantSpec

__all__ = [
    "save_ranges",
    "load_ranges",
    "copy_ranges",
    "activation_quantizers",
    "spec_of",
    "spec_algorithms",
]


def activation_quantizers(qmodel: nn.Module) -> dict[str, ActivationQuantizer]:
    """Every activation quantizer of a quantized model by dotted name."""
    return {n: m for n, m in qmodel.named_modules() if isinstance(m, ActivationQuantizer)}


def spec_of(qmodel: nn.Module) -> QuantSpec:
    """The spec a model was quantized with."""
    spec = getattr(qmodel, "quant_spec", None)
    if spec is None:
        raise QuantError(
            f"{type(qmodel).__name__} was not made by benchmark.quant.quantize; call "
            "quantize(model, spec) first"
        )
    return spec


def spec_algorithms(spec: QuantSpec) -> list[Algorithm]:
    """The spec's algorithms, in the order of its composition, with their own options."""
    return [ALGORITHMS.get(name)(**spec.options_for(name)) for name in spec.algorithm_names]


def save_ranges(qmodel: nn.Module, path: str | os.PathLike) -> Path:
    """Write the calibrated static ranges to ``path`` (``torch.save`` of plain tensors).

    The file holds ``{"spec": spec.to_dict(), "calibration_key": ..., "ranges": {name:
    {"lo", "hi", "mapping"}}}``, and for a spec with an algorithm also ``"state"``: the model's
    whole ``state_dict`` (weights and buffers as the algorithm left them). It is written atomically (temp file, then rename), so a sweep can
    compute ranges once per model x spec x calibration set.

    Returns:
        The path written.
    """
    spec = spec_of(qmodel)
    ranges = {
        name: {"lo": q.lo.cpu(), "hi": q.hi.cpu(), "mapping": q.resolved_mapping}
        for name, q in activation_quantizers(qmodel).items()
        if not q.dynamic and q.lo is not None
    }
    payload = {"spec": spec.to_dict(), "calibration_key": spec.calibration_key(), "ranges": ranges}
    if spec.algorithm_names:
        payload["state"] = {k: v.detach().cpu() for k, v in qmodel.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def copy_ranges(source: nn.Module, target: nn.Module) -> nn.Module:
    """Give ``target``'s static activation quantizers the ranges of ``source``'s of the same name.

    Both are :func:`quantize` outputs of the same network with the same activation bits,
    granularity and observer; ``target`` may quantize fewer layers (a sensitivity variant
    reuses the calibration of the fully quantized model instead of calibrating again).

    Raises:
        RangesMismatchError: a static quantizer of ``target`` has no calibrated counterpart.
    """
    ranges = activation_quantizers(source)
    for name, quantizer in activation_quantizers(target).items():
        if quantizer.dynamic:
            continue
        origin = ranges.get(name)
        if origin is None or origin.lo is None:
            raise RangesMismatchError(f"{name} has no calibrated range in the source model")
        quantizer.set_range(origin.lo, origin.hi, origin.resolved_mapping)
    return target


def load_ranges(qmodel: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ranges written by :func:`save_ranges` (``weights_only=True``) into ``qmodel``.

    For a spec with an algorithm, each algorithm's ``prepare`` runs first and the stored state
    replaces the model's weights and buffers, so the result equals the calibrated model.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RangesMismatchError: the file was made for another spec or another set of layers.
    """
    spec = spec_of(qmodel)
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("calibration_key") != spec.calibration_key():
        raise RangesMismatchError(
            f"{path} holds ranges for spec {payload.get('spec')}, not for {spec.to_dict()}; "
            "recalibrate or pick the file named with this spec's calibration_key()"
        )
    quantizers = activation_quantizers(qmodel)
    ranges = payload["ranges"]
    static = {n for n, q in quantizers.items() if not q.dynamic}
    unknown = sorted(set(ranges) - static)
    if unknown:
        raise RangesMismatchError(
            f"{path} has ranges for {unknown[:5]} that {type(qmodel).__name__} does not quantize; "
            "the file belongs to another model or include/exclude setting"
        )
    device = next((b.device for b in qmodel.buffers()), torch.device("cpu"))
    for algorithm in spec_algorithms(spec):
        algorithm.prepare(qmodel)
    for name, entry in ranges.items():
        quantizer = quantizers[name]
        quantizer.set_range(entry["lo"].to(device), entry["hi"].to(device), entry["mapping"])
    if "state" in payload:
        qmodel.load_state_dict(payload["state"], strict=True)
    return qmodel
