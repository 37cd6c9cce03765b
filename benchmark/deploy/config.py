"""Settings of one deployment run: export, real INT8 with ONNX Runtime, latency, agreement, gate.

The runner registers :class:`DeployConfig` as the schema of the ``deploy`` config group
(``conf/deploy/default.yaml``); everything below it takes a plain instance, so tests build one
directly without Hydra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["DeployConfig", "CALIBRATE_METHODS", "EXPORTERS"]

#: ``calibrate_method`` values; ``auto`` maps the fake-quant observer (see ``ort_quant``).
CALIBRATE_METHODS = ("auto", "minmax", "percentile", "entropy", "distribution")
#: ``exporter`` values: torch's maintained ``torch.export`` path or the TorchScript tracer.
EXPORTERS = ("dynamo", "torchscript")


@dataclass
class DeployConfig:
    """What one ``task=deploy`` run builds, measures and decides.

    Example: ``DeployConfig(batch_sizes=[1, 4], runs=20, cases=3)`` times every backend at
    batch 1 and 4 (inputs ``[B, C, *roi_size]``), 20 timed runs each after ``warmup`` untimed
    ones, and scores the first 3 test cases.

    Attributes:
        providers: ONNX Runtime execution providers in priority order.
        threads: ONNX Runtime intra-op threads and torch threads while timing (0 = library default).
        warmup: untimed runs before timing (first-run allocations, caches, lazy kernel choice).
        runs: timed runs per backend and batch size; percentiles need at least 10.
        batch_sizes: batch sizes for latency and throughput (batch 1 and a larger one).
        consistency_batch_sizes: batch sizes that must give identical predictions (gate).
        consistency_max_mismatch: largest tolerated fraction of voxels whose argmax differs
            between batch sizes (float summation order may flip exact ties).
        static: build the static (calibrated QDQ) INT8 model.
        dynamic: build the dynamic INT8 model (activation ranges computed per call).
        fp16: build an FP16 model; only done when a GPU provider is available.
        per_channel: per-output-channel weight scales in the INT8 models.
        calibrate_method: ONNX Runtime calibration method, or ``auto`` to map the fake-quant
            observer (minmax -> MinMax, moving_average -> MinMax with moving average,
            percentile -> Percentile, mse -> Entropy).
        op_types_to_quantize: ONNX op types given INT8 weights and activations; the default
            matches the module types the fake-quant engine wraps (Conv3d, ConvTranspose3d, Linear).
        exporter: ``dynamo`` (``torch.export``) or ``torchscript`` (tracing).
        opset: ONNX opset of the exported model.
        tolerance_rel: gate limit on the relative drop of the mean foreground DSC (0.01 = 1 %).
        per_class_worst_drop: gate limit on the relative DSC drop of any single class.
        cases: number of cases of ``evaluation.split`` scored (``None`` = as many as
            ``evaluation.max_cases``, i.e. the whole split when that is ``None`` too); the NSD
            tolerance is ``evaluation.tolerance_mm``, as in the evaluation runs.
        work_dir: where ONNX files and the operator report go (``None`` = next to the results).
    """

    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    threads: int = 2
    warmup: int = 5
    runs: int = 50
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4])
    consistency_batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4])
    consistency_max_mismatch: float = 1e-4
    static: bool = True
    dynamic: bool = True
    fp16: bool = True
    per_channel: bool = True
    calibrate_method: str = "auto"
    op_types_to_quantize: list[str] = field(
        default_factory=lambda: ["Conv", "ConvTranspose", "MatMul", "Gemm"]
    )
    exporter: str = "dynamo"
    opset: int = 18
    tolerance_rel: float = 0.01
    per_class_worst_drop: float = 0.03
    cases: int | None = 3
    work_dir: str | None = None

    def __post_init__(self) -> None:
        if self.calibrate_method not in CALIBRATE_METHODS:
            raise ValueError(
                f"deploy.calibrate_method={self.calibrate_method!r} is not one of "
                f"{CALIBRATE_METHODS}"
            )
        if self.exporter not in EXPORTERS:
            raise ValueError(f"deploy.exporter={self.exporter!r} is not one of {EXPORTERS}")
        if self.runs < 10:
            raise ValueError(f"deploy.runs={self.runs}: p90/p99 need at least 10 timed runs")
        if self.warmup < 0 or self.threads < 0:
            raise ValueError(
                f"deploy.warmup={self.warmup} and deploy.threads={self.threads} must be >= 0"
            )
        for key in ("batch_sizes", "consistency_batch_sizes"):
            sizes = list(getattr(self, key))
            if not sizes or any(int(b) < 1 for b in sizes):
                raise ValueError(f"deploy.{key}={sizes} must be a non-empty list of sizes >= 1")
        if not 0 <= self.tolerance_rel < 1 or not 0 <= self.per_class_worst_drop < 1:
            raise ValueError(
                f"deploy.tolerance_rel={self.tolerance_rel} and deploy.per_class_worst_drop="
                f"{self.per_class_worst_drop} are fractions in [0, 1) (0.01 = 1 %)"
            )
        if self.cases is not None and self.cases < 1:
            raise ValueError(f"deploy.cases={self.cases} must be >= 1 or null (all test cases)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> DeployConfig:
        """Build from a plain mapping (e.g. ``OmegaConf.to_container(cfg.deploy)``).

        Raises:
            KeyError: a key that is not a field, named together with the allowed keys.
        """
        values = dict(values or {})
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise KeyError(f"unknown deploy key(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(**values)
