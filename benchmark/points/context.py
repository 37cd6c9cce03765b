"""Provenance of one run, and the per-run columns every tidy row carries."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from benchmark.points.sources import weights_digest
from benchmark.results import provenance
from benchmark.schema import RunPoint

__all__ = ["RunContext", "point_columns", "spec_bits"]


@dataclasses.dataclass(frozen=True)
class RunContext:
    """A run point and its provenance, taken when the run starts.

    Attributes:
        point: the run.
        provenance: :func:`benchmark.results.provenance` (commit, created, hardware, ...).
        weights: :func:`~benchmark.points.sources.weights_digest` of the run's weights.
    """

    point: RunPoint
    provenance: dict[str, Any]
    weights: str | None = None

    @classmethod
    def start(cls, point: RunPoint) -> RunContext:
        """The context of a run starting now."""
        return cls(point=point, provenance=provenance(), weights=weights_digest(point))

    @property
    def run_id(self) -> str:
        return self.point.run_id

    @property
    def config_hash(self) -> str:
        return self.point.config_hash

    @property
    def experiment(self) -> str:
        return self.point.experiment

    @property
    def experiment_dir(self):
        return self.point.experiment_dir


def spec_bits(spec: Any) -> tuple[int, int]:
    """``(w_bits, a_bits)`` for the rows: element bits of a quantized format, storage bits of
    a float cast (fp32 -> 32, fp16/bf16 -> 16)."""
    if spec.is_float:
        bits = torch.finfo(spec.float_dtype).bits
        return bits, bits
    return spec.w_bits, spec.a_bits


def point_columns(
    context: RunContext, calib_n: int | None = None, params_m: float | None = None
) -> dict[str, Any]:
    """Columns shared by all rows of a run: identity, model, the whole quantization spec,
    provenance.

    Floating-point precisions report ``granularity``, ``observer`` and ``algorithm`` as
    ``none`` and ``calib_n`` 0, since none of them applies. Every other field of the spec
    (``act_mapping``, ``dynamic``, ``keep_first_last``, ...) is a column of its own.
    """
    point, prov = context.point, context.provenance
    spec = point.spec
    w_bits, a_bits = spec_bits(spec)
    columns = {k: v for k, v in spec.to_dict().items() if k not in ("w_bits", "a_bits")}
    columns.update(
        {
            "experiment": point.experiment,
            "run_id": point.run_id,
            "config_hash": point.config_hash,
            "task": point.task,
            "model": point.model.name,
            "family": point.model.family,
            "framework": point.model.framework,
            "display_name": point.model.display_name,
            "params_m": float(params_m) if params_m is not None else float("nan"),
            "dataset": point.data.name,
            "precision": spec.precision,
            "w_bits": w_bits,
            "a_bits": a_bits,
            "granularity": spec.granularity,
            "observer": spec.observer,
            "algorithm": spec.algorithm,
            "calib_n": 0
            if spec.is_float
            else int(calib_n if calib_n is not None else point.calibration.n),
            "seed": int(point.seed),
            "commit": prov["commit"],
            "dirty": prov["dirty"],
            "created": prov["created"],
            "package_version": prov["package_version"],
            "hardware": f"{point.inference.device}; {prov['hardware']}",
            "weights": context.weights,
        }
    )
    return columns
