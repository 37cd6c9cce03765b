"""The quantized, calibrated model of a run point, computed once per model x spec x
calibration set and cached (ranges, and whatever the spec's algorithm learned)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

import benchmark.data as data_layer
import benchmark.quant as quant_layer
from benchmark.points import cache
from benchmark.points.sources import ModelSource
from benchmark.schema import RunPoint

__all__ = ["Calibrated", "calibrated_model", "input_example", "write_quant_table"]

log = logging.getLogger(__name__)


def _to_device(batches: Sequence, device: str) -> Iterator:
    """Images, or ``(image, label)`` pairs, as plain tensors on ``device``."""
    for batch in batches:
        if isinstance(batch, tuple):
            yield tuple(t.as_subclass(torch.Tensor).to(device) for t in batch)
        else:
            yield batch.as_subclass(torch.Tensor).to(device)


class Calibrated(NamedTuple):
    """A calibrated model and what its calibration cost when it was computed."""

    model: nn.Module
    seconds: float  # wall time of calibration and algorithms (also on a cache hit: as measured)
    calib_n: int  # calibration patches (0 for float precisions: nothing to calibrate)
    cached: bool  # loaded from the cache rather than computed in this run


def _recorded_seconds(path: Path) -> float:
    """The calibration seconds stored beside a cache entry (NaN for an entry without them)."""
    try:
        return float(json.loads(path.with_suffix(".json").read_text())["calibration_s"])
    except (OSError, ValueError, KeyError):
        return float("nan")


def input_example(source: ModelSource, device: str = "cpu") -> torch.Tensor:
    """Zeros of the inference input shape ``[1, C, *roi]``: what the engine traces to follow
    the data flow (first and last layers, modules a forward never runs)."""
    channels = next(
        (int(m.in_channels) for m in source.model.modules() if hasattr(m, "in_channels")), 1
    )
    return torch.zeros(1, channels, *source.roi, device=device)


def write_quant_table(qmodel: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Write :func:`benchmark.quant.quantization_table` of ``qmodel`` to ``path`` (CSV,
    atomically) and return its hash, the ``quant_table_hash`` of the run's rows."""
    table = quant_layer.quantization_table(qmodel, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)
    return quant_layer.quant_table_hash(table)


def calibrated_model(point: RunPoint, source: ModelSource) -> Calibrated:
    """Quantize the source's model with the point's spec; load its calibration from the cache
    or calibrate and store it. Calibration patches come from ``calibration.split`` (never test).
    The wall time of a calibration is stored with it, so a study's calibration seconds stay
    true when a later sweep reuses the entry."""
    spec, device = point.spec, point.inference.device
    qmodel = quant_layer.quantize(source.model, spec, example=input_example(source)).to(device)
    if spec.is_float:
        return Calibrated(qmodel, 0.0, 0, cached=False)
    calibration = dataclasses.asdict(point.calibration)
    calibration.pop("name", None)
    # "traced": the layers were chosen by one traced forward, so files made before (which
    # miss the functional attention quantizers) are not reused
    key = cache.entry_key(
        source.identity,
        dataclasses.asdict(point.data),
        spec.to_dict(),
        calibration,
        source.roi,
        {"selection": "traced"},
    )
    path = cache.cache_root(point.paths.cache_dir) / "ranges" / f"{key}.pt"
    n = int(point.calibration.n)
    with cache.locked(path):
        if path.is_file():
            try:
                quant_layer.load_ranges(qmodel, path)
                return Calibrated(qmodel, _recorded_seconds(path), n, cached=True)
            except Exception as exc:  # a cache entry is derived data: recompute what cannot load
                log.warning("recalibrating: cached ranges %s do not load (%s)", path, exc)
                path.unlink()
        start = time.perf_counter()
        batches = data_layer.calibration_patches(
            source.dataset,
            split=point.calibration.split,
            n=n,
            roi_size=tuple(source.roi),
            seed=int(point.calibration.seed),
            batch_size=int(point.calibration.batch_size),
            with_labels=quant_layer.needs_labels(spec),
        )
        quant_layer.calibrate(qmodel, _to_device(batches, device))
        seconds = time.perf_counter() - start
        tmp = path.with_name(f".{path.name}.tmp")
        quant_layer.save_ranges(qmodel, tmp)
        path.with_suffix(".json").write_text(json.dumps({"calibration_s": seconds}))
        tmp.replace(path)
    return Calibrated(qmodel, seconds, n, cached=False)
