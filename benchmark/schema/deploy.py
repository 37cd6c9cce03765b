"""Settings of one deployment run: backends, layer policy, latency, agreement, gate, selector.

:class:`DeployConfig` is the schema of the ``deploy`` config group; its values live in
``conf/deploy/default.yaml``. What the values must satisfy (known backends, parseable layer
policies, ranges) is checked by :func:`benchmark.deploy.settings.check_deploy`, since it needs
the backends' table.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

__all__ = ["DeployConfig", "CALIBRATE_METHODS", "EXPORTERS"]

#: ``calibrate_method`` values; ``auto`` maps the fake-quant observer (see ``ort_quant``).
CALIBRATE_METHODS = ("auto", "minmax", "percentile", "entropy", "distribution")
#: ``exporter`` values: torch's maintained ``torch.export`` path or the TorchScript tracer.
EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
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
        torch_qat_steps: fine-tuning steps of ``torch_x86_int8_qat`` (PyTorch's QAT flow),
            one calibration batch each, distilled from the FP32 logits.
        torch_qat_lr: Adam learning rate of those steps.
    """

    backends: list[str] = MISSING
    layer_policy: str = MISSING
    compare_policies: list[str] = MISSING
    latency_margin: float = MISSING
    cost_warmup: int = MISSING
    cost_runs: int = MISSING
    cost_cache_dir: str | None = MISSING
    threads: int = MISSING
    warmup: int = MISSING
    runs: int = MISSING
    latency_rounds: int = MISSING
    batch_sizes: list[int] = MISSING
    consistency_batch_sizes: list[int] = MISSING
    consistency_max_mismatch: float = MISSING
    per_channel: bool = MISSING
    reduce_range: str = MISSING
    calibrate_method: str = MISSING
    op_types_to_quantize: list[str] = MISSING
    exporter: str = MISSING
    opset: int = MISSING
    tolerance_rel: float = MISSING
    per_class_worst_drop: float = MISSING
    min_voxel_agreement: float = MISSING
    selector_validate: bool = MISSING
    selector_max_disagreement: float = MISSING
    cases: int | None = MISSING
    work_dir: str | None = MISSING
    torch_qat_steps: int = MISSING
    torch_qat_lr: float = MISSING
