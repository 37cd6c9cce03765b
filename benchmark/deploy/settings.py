"""What a deploy run's settings must satisfy beyond their types (``conf/deploy/``)."""

from __future__ import annotations

from benchmark.deploy.backends import BACKENDS
from benchmark.deploy.layer_policy import parse_policy
from benchmark.schema.deploy import CALIBRATE_METHODS, EXPORTERS, DeployConfig

__all__ = ["check_deploy"]


def check_deploy(d: DeployConfig) -> DeployConfig:
    """Return ``d`` when every value is usable.

    Raises:
        ValueError: naming the ``deploy.*`` key, its value and what it must be.
    """
    unknown = [b for b in d.backends if b not in BACKENDS or b == "torch_fp32"]
    if unknown or "ort_fp32" not in d.backends:
        raise ValueError(
            f"deploy.backends={list(d.backends)}: must include ort_fp32 (the reference) "
            f"and only names from {[b for b in BACKENDS if b != 'torch_fp32']}"
        )
    for policy in (d.layer_policy, *d.compare_policies):
        try:
            parse_policy(policy)
        except ValueError as exc:
            raise ValueError(f"deploy.layer_policy/compare_policies: {exc}") from exc
    if d.cost_runs < 1 or d.cost_warmup < 0 or d.latency_rounds < 1:
        raise ValueError(
            f"deploy.cost_runs={d.cost_runs} and deploy.latency_rounds="
            f"{d.latency_rounds} must be >= 1, deploy.cost_warmup={d.cost_warmup} >= 0"
        )
    if str(d.reduce_range).lower() not in ("auto", "true", "false"):
        raise ValueError(f"deploy.reduce_range={d.reduce_range!r} is not auto, true or false")
    for key in ("min_voxel_agreement", "selector_max_disagreement", "latency_margin"):
        if not 0 <= getattr(d, key) <= 1:
            raise ValueError(f"deploy.{key}={getattr(d, key)} is a fraction in [0, 1]")
    if d.calibrate_method not in CALIBRATE_METHODS:
        raise ValueError(
            f"deploy.calibrate_method={d.calibrate_method!r} is not one of {CALIBRATE_METHODS}"
        )
    if d.exporter not in EXPORTERS:
        raise ValueError(f"deploy.exporter={d.exporter!r} is not one of {EXPORTERS}")
    if d.runs < 10:
        raise ValueError(f"deploy.runs={d.runs}: p90/p99 need at least 10 timed runs")
    if d.warmup < 0 or d.threads < 0:
        raise ValueError(f"deploy.warmup={d.warmup} and deploy.threads={d.threads} must be >= 0")
    for key in ("batch_sizes", "consistency_batch_sizes"):
        sizes = list(getattr(d, key))
        if not sizes or any(int(b) < 1 for b in sizes):
            raise ValueError(f"deploy.{key}={sizes} must be a non-empty list of sizes >= 1")
    if not 0 <= d.tolerance_rel < 1 or not 0 <= d.per_class_worst_drop < 1:
        raise ValueError(
            f"deploy.tolerance_rel={d.tolerance_rel} and deploy.per_class_worst_drop="
            f"{d.per_class_worst_drop} are fractions in [0, 1) (0.01 = 1 %)"
        )
    if d.torch_qat_steps < 1 or d.torch_qat_lr <= 0:
        raise ValueError(
            f"deploy.torch_qat_steps={d.torch_qat_steps} must be >= 1 and deploy.torch_qat_lr="
            f"{d.torch_qat_lr} > 0 (the fine-tuning of torch_x86_int8_qat)"
        )
    if d.cases is not None and d.cases < 1:
        raise ValueError(f"deploy.cases={d.cases} must be >= 1 or null (all test cases)")
    return d
