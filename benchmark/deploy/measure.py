"""What each built backend executes and how fast: operator report, per-layer precision, latency.

* Operator report, after each runtime's own graph optimisation: ONNX Runtime's optimized graph
  (``*.optimized.onnx``), OpenVINO's executed graph (layer type and run-time precision), the
  quantized torch module's layer types; profiled time per op type from warmed calls only.
* Per layer: what the policy chose (``layer_int8``) and what really runs in an integer kernel
  (``layer_executed_int8``): ONNX Runtime has no integer ``ConvTranspose``, so a quantized
  transposed convolution is reported as float there.
* Latency: every backend in turn at each batch size (:func:`~.latency.interleaved_latency`),
  and each compared layer policy at batch 1 beside ``ort_fp32`` in the same block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

import benchmark.deploy.openvino_backend as openvino_backend
import benchmark.deploy.torch_int8 as torch_int8
from benchmark.deploy.backends import BACKENDS, load_predictor
from benchmark.deploy.build import Builds, Variant
from benchmark.deploy.latency import hardware_info, interleaved_latency
from benchmark.deploy.ops import executed_int8_layers, integer_kernel_summary, optimized_op_counts
from benchmark.deploy.profile import profile_op_times, profile_torch_op_times
from benchmark.deploy.rows import latency_rows, layer_rows, op_rows, op_time_rows, size_row

__all__ = ["operator_report", "latency_report", "policy_report", "hardware_text"]

Predictor = Callable[[np.ndarray], np.ndarray]


def hardware_text() -> str:
    hw = hardware_info()
    return f"{hw['cpu']} ({hw['cpu_cores']} cores usable); onnxruntime {hw['onnxruntime']}"


def _ops(run: Any, variant: Variant, predictor: Predictor) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(op counts, warmed op times) of one backend on its own runtime."""
    backend = BACKENDS[variant.backend]
    shape = (run.dataset.in_channels, *run.roi_size)
    threads = run.deploy.threads
    if backend.runtime == "ort":
        path = variant.artefact
        counts = optimized_op_counts(
            path, backend.providers, threads=1, save_to=path.with_suffix(".optimized.onnx")
        )
        times = profile_op_times(path, shape, backend.providers, threads=threads)
    elif backend.runtime == "openvino":
        counts = openvino_backend.op_counts(predictor)
        precision = "bf16" if backend.precision == "bf16" else "fp32"
        times = openvino_backend.profile_op_times(
            variant.artefact, shape, precision=precision, threads=threads
        )
    else:
        counts = torch_int8.op_counts(variant.artefact, [c.layer for c in variant.choices])
        times = profile_torch_op_times(predictor, shape)
    return counts, times


def _executed(variant: Variant, predictor: Predictor) -> dict[str, bool]:
    """Layer -> runs in an integer kernel, from the runtime's executed graph."""
    names = [c.layer for c in variant.choices]
    runtime = BACKENDS[variant.backend].runtime
    if runtime == "ort":
        return executed_int8_layers(variant.artefact.with_suffix(".optimized.onnx"), names)
    if runtime == "openvino":
        precisions = openvino_backend.layer_precisions(predictor, names)
        return {n: precisions.get(n, "") in ("I8", "U8") for n in names}
    from torch.ao.nn import quantized as nnq

    modules = dict(variant.artefact.named_modules())
    return {n: isinstance(modules.get(n + ".conv", modules.get(n)), nnq.Conv3d) for n in names}


def operator_report(
    run: Any, builds: Builds, predictors: dict[str, Predictor]
) -> list[dict[str, Any]]:
    """Op counts, warmed op times and per-layer precision of every deployed ONNX/INT8 backend;
    ``ops.csv`` in the work folder holds the same table."""
    rows, tables = [], []
    for name, variant in builds.deployed.items():
        if name == "torch_fp32" or BACKENDS[name].artefact == "torch":
            continue
        predictor = predictors[name]
        counts, times = _ops(run, variant, predictor)
        provider = predictor.provider
        rows += op_rows(name, counts, integer_kernel_summary(counts), provider)
        rows += op_time_rows(name, times, provider)
        if variant.choices:
            rows += layer_rows(name, variant.policy, variant.choices, _executed(variant, predictor))
        tables.append(
            counts.merge(times, on="op_type", how="outer").assign(backend=name, provider=provider)
        )
    if tables:
        pd.concat(tables).to_csv(run.work_dir / "ops.csv", index=False)
    return rows


def latency_report(
    run: Any, builds: Builds, predictors: dict[str, Predictor]
) -> list[dict[str, Any]]:
    """Size and latency of every deployed backend, timed in turn at each batch size."""
    d = run.deploy
    shape = (run.dataset.in_channels, *run.roi_size)
    hardware = hardware_text()
    rows = [size_row(name, v.size_mb) for name, v in builds.deployed.items()]
    rng = np.random.default_rng(0)
    for b in d.batch_sizes:
        x = rng.standard_normal((int(b), *shape), dtype=np.float32)
        calls = {name: (lambda p=p, x=x: p(x)) for name, p in predictors.items()}
        stats = interleaved_latency(calls, int(b), d.warmup, d.runs, d.latency_rounds)
        for name, s in stats.items():
            rows += latency_rows(name, s, predictors[name].provider, d.threads, hardware)
    return rows


def policy_report(
    run: Any, builds: Builds, predictors: dict[str, Predictor]
) -> list[dict[str, Any]]:
    """Batch-1 p50 and speed-up over ``ort_fp32`` of every compared (backend, policy), timed in
    turn with ``ort_fp32`` in one block, and each policy's per-layer choice."""
    d = run.deploy
    variants = {k: v for k, v in builds.compared.items() if BACKENDS[k[0]].device == "cpu"}
    if not variants:
        return []
    x = np.random.default_rng(1).standard_normal(
        (1, run.dataset.in_channels, *run.roi_size), dtype=np.float32
    )
    loaded = {("ort_fp32", "-"): predictors["ort_fp32"]}
    for key, variant in variants.items():
        deployed = builds.deployed.get(key[0])
        same = deployed is not None and deployed.policy == key[1]
        loaded[key] = (
            predictors[key[0]] if same else load_predictor(key[0], variant.artefact, d.threads)
        )
    calls = {key: (lambda p=p: p(x)) for key, p in loaded.items()}
    stats = interleaved_latency(calls, 1, d.warmup, d.runs, d.latency_rounds)
    reference = stats[("ort_fp32", "-")].p50_ms
    rows = []
    for (backend, policy), s in stats.items():
        if backend == "ort_fp32":
            continue
        choices = variants[(backend, policy)].choices
        fraction = sum(c.int8 for c in choices) / len(choices) if choices else math.nan
        common = {"backend": backend, "policy": policy, "batch_size": 1, "threads": d.threads}
        note = f"warmup={s.warmup} runs={s.runs}; ort_fp32 p50 {reference:.4g} ms in this block"
        rows += [
            {**common, "metric": "policy_latency_p50_ms", "value": s.p50_ms, "note": note},
            {**common, "metric": "policy_speedup", "value": reference / s.p50_ms, "note": note},
            {**common, "metric": "policy_int8_conv_fraction", "value": fraction},
        ]
        deployed = builds.deployed.get(backend)
        if deployed is None or deployed.policy != policy:
            rows += layer_rows(backend, policy, choices, None)
    return rows
