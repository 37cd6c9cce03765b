"""Settings of one deployment run: backends, layer policy, latency, agreement, gate, selector.

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

    Example: ``DeployConfig(backends=["ort_fp32", "openvino_int8"], batch_sizes=[1, 4],
    runs=20, cases=3)`` times both backends at batch 1 and 4 (inputs ``[B, C, *roi_size]``),
    20 timed runs each after ``warmup`` untimed ones, and scores the first 3 test cases.

    Attributes:
        backends: what is built, timed, scored and gated (``benchmark.deploy.backends``);
            ``ort_fp32`` is the reference of every speed-up and must be listed. Backends that
            cannot run here (no GPU, no BF16) are skipped with their reason.
        layer_policy: which convolutions the INT8 backends quantize: ``all``,
            ``min_channels:N`` or ``latency_aware`` (``benchmark.deploy.layer_policy``).
        compare_policies: policies also built and timed at batch 1 for each INT8 backend, so
            one run shows what each costs (``[]``: only ``layer_policy``).
        latency_margin: ``latency_aware`` keeps a layer float when its INT8 time alone exceeds
            ``(1 + latency_margin)`` times its float time.
        cost_warmup, cost_runs: untimed and timed calls of each one-layer model measured for
            ``latency_aware`` (the fastest timed call counts).
        cost_cache_dir: folder of the per runtime x CPU x threads cost tables (``None`` =
            ``<paths.cache_dir>/layer_costs``).
        threads: intra-op threads of every runtime while timing (0 = library default).
        warmup: untimed runs before timing (first-run allocations, caches, lazy kernel choice).
        runs: timed runs per backend and batch size; percentiles need at least 10.
        latency_rounds: the backends are timed in turn, ``runs / latency_rounds`` calls each
            per round, so a change of machine load affects them alike.
        batch_sizes: batch sizes for latency and throughput (batch 1 and a larger one).
        consistency_batch_sizes: batch sizes that must give identical predictions (gate).
        consistency_max_mismatch: largest tolerated fraction of voxels whose argmax differs
            between batch sizes (float summation order may flip exact ties).
        reduce_range: 7-bit INT8 weights: ``auto`` (where the CPU has no VNNI, whose absence
            makes ONNX Runtime's 8-bit products saturate), ``true`` or ``false``.
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
        min_voxel_agreement: gate limit on the mean fraction of voxels whose class equals the
            PyTorch FP32 prediction's.
        selector_validate: run the run-time selector in validation mode (FP32 beside INT8 on
            every call) on the calibration patches.
        selector_max_disagreement: fraction of voxels whose class may change before the
            selector falls back to FP32.
        cases: number of cases of ``evaluation.split`` scored (``None`` = as many as
            ``evaluation.max_cases``, i.e. the whole split when that is ``None`` too); the NSD
            tolerance is ``evaluation.tolerance_mm``, as in the evaluation runs.
        work_dir: where ONNX files and the operator report go (``None`` = next to the results).
    """

    backends: list[str] = field(
        default_factory=lambda: ["ort_fp32", "ort_int8_static", "openvino_fp32", "openvino_int8"]
    )
    layer_policy: str = "latency_aware"
    compare_policies: list[str] = field(default_factory=list)
    latency_margin: float = 0.1
    cost_warmup: int = 1
    cost_runs: int = 5
    cost_cache_dir: str | None = None
    threads: int = 2
    warmup: int = 5
    runs: int = 50
    latency_rounds: int = 5
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4])
    consistency_batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4])
    consistency_max_mismatch: float = 1e-4
    per_channel: bool = True
    reduce_range: str = "auto"
    calibrate_method: str = "auto"
    op_types_to_quantize: list[str] = field(
        default_factory=lambda: ["Conv", "ConvTranspose", "MatMul", "Gemm"]
    )
    exporter: str = "dynamo"
    opset: int = 18
    tolerance_rel: float = 0.01
    per_class_worst_drop: float = 0.03
    min_voxel_agreement: float = 0.995
    selector_validate: bool = True
    selector_max_disagreement: float = 0.005
    cases: int | None = 3
    work_dir: str | None = None

    def __post_init__(self) -> None:
        from benchmark.deploy.backends import BACKENDS
        from benchmark.deploy.layer_policy import parse_policy

        unknown = [b for b in self.backends if b not in BACKENDS or b == "torch_fp32"]
        if unknown or "ort_fp32" not in self.backends:
            raise ValueError(
                f"deploy.backends={list(self.backends)}: must include ort_fp32 (the reference) "
                f"and only names from {[b for b in BACKENDS if b != 'torch_fp32']}"
            )
        for policy in (self.layer_policy, *self.compare_policies):
            try:
                parse_policy(policy)
            except ValueError as exc:
                raise ValueError(f"deploy.layer_policy/compare_policies: {exc}") from exc
        if self.cost_runs < 1 or self.cost_warmup < 0 or self.latency_rounds < 1:
            raise ValueError(
                f"deploy.cost_runs={self.cost_runs} and deploy.latency_rounds="
                f"{self.latency_rounds} must be >= 1, deploy.cost_warmup={self.cost_warmup} >= 0"
            )
        if str(self.reduce_range).lower() not in ("auto", "true", "false"):
            raise ValueError(
                f"deploy.reduce_range={self.reduce_range!r} is not auto, true or false"
            )
        for key in ("min_voxel_agreement", "selector_max_disagreement", "latency_margin"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"deploy.{key}={getattr(self, key)} is a fraction in [0, 1]")
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
