"""Build every requested backend's model: export, layer choice, QDQ/dynamic/FP16/torch INT8.

One FP32 export feeds every ONNX backend. For the static INT8 backends each layer policy
(``deploy.layer_policy`` and ``deploy.compare_policies``) is applied with the layer costs of
that backend's own runtime, and ``quantize_static`` writes one QDQ model per distinct set of
float layers (``nodes_to_exclude``), so ONNX Runtime and OpenVINO share a file when their
choices agree. ``torch_x86_int8`` applies the same policy to the module's ``Conv3d`` layers.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.deploy.backends import BACKENDS, unavailable_reason
from benchmark.deploy.export import export_checked
from benchmark.deploy.latency import size_mb
from benchmark.deploy.layer_costs import measure_layer_costs
from benchmark.deploy.layer_policy import (
    ConvShape,
    LayerChoice,
    choose_layers,
    float_layers,
    onnx_conv_layers,
    parse_policy,
)
from benchmark.deploy.ort_quant import (
    calibrate_method_for,
    convert_fp16_onnx,
    needs_reduce_range,
    quantize_dynamic_onnx,
    quantize_static_onnx,
    resolve_reduce_range,
)
from benchmark.deploy.qdq_export import QDQExportError, export_qdq
from benchmark.deploy.torch_int8 import TorchQat, quantize_convs, torch_conv_layers
from benchmark.points.cache import cache_root
from benchmark.quant import calibrate, quantize

__all__ = ["Variant", "Builds", "build_backends"]


@dataclass
class Variant:
    """One backend built under one layer policy.

    Attributes:
        backend: backend name.
        policy: layer policy name (static INT8 backends), else ``None``.
        artefact: the ``.onnx`` file or the module the backend loads.
        size_mb: model size on disk (ONNX files with external data; torch: its state dict).
        choices: per-layer decision of the policy (empty for float backends).
        note: how it was built.
    """

    backend: str
    policy: str | None
    artefact: Path | nn.Module
    size_mb: float
    choices: list[LayerChoice] = field(default_factory=list)
    note: str = ""


@dataclass
class Builds:
    """What :func:`build_backends` made.

    Attributes:
        deployed: backend -> its variant under ``deploy.layer_policy`` (plus ``torch_fp32``).
        compared: ``(backend, policy)`` -> variant for every compared policy of INT8 backends.
        rows: export check and skipped-backend rows.
    """

    deployed: dict[str, Variant]
    compared: dict[tuple[str, str], Variant]
    rows: list[dict[str, Any]]


def _state_dict_mb(model: nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def _static_note(run: Any, policy: str, choices: list[LayerChoice]) -> str:
    method, extra = _calibration(run)
    act = "int8 symmetric" if run.spec.act_mapping == "symmetric" else "uint8 asymmetric"
    int8 = sum(c.int8 for c in choices)
    bits = "7-bit (reduce_range)" if resolve_reduce_range(run.deploy.reduce_range) else "int8"
    return (
        f"QDQ static, calibrate={method.name} {extra or ''}, weights {bits} symmetric "
        f"{'per-channel' if run.deploy.per_channel else 'per-tensor'}, activations {act} "
        f"per-tensor; layer policy {policy}: {int8} of {len(choices)} convolutions INT8"
    )


def _calibration(run: Any) -> tuple[Any, dict[str, object]]:
    return calibrate_method_for(
        run.spec.observer,
        run.deploy.calibrate_method,
        percentile=run.spec.percentile,
        averaging_constant=run.spec.averaging_constant,
    )


class _QdqFiles:
    """One QDQ model per distinct set of float layers, written on first use."""

    def __init__(self, run: Any, fp32: Path):
        self.run, self.fp32, self.files = run, fp32, {}

    def __call__(self, excluded: list[str]) -> Path:
        key = frozenset(excluded)
        if key not in self.files:
            d, (method, extra) = self.run.deploy, _calibration(self.run)
            path = self.run.work_dir / f"int8_static_{len(self.files)}.onnx"
            self.files[key] = quantize_static_onnx(
                self.fp32,
                path,
                self.run.batches,
                method=method,
                extra_options=extra,
                per_channel=d.per_channel,
                activation_symmetric=self.run.spec.act_mapping == "symmetric",
                op_types=d.op_types_to_quantize,
                nodes_to_exclude=sorted(key),
                reduce_range=resolve_reduce_range(d.reduce_range),
            )
            path.with_suffix(".float_layers.json").write_text(json.dumps(sorted(key), indent=1))
        return self.files[key]


def _costs(run: Any, runtime: str, shapes: list[ConvShape]) -> dict[str, tuple[float, float, bool]]:

    d = run.deploy
    cache = d.cost_cache_dir or cache_root(run.point.paths.cache_dir) / "layer_costs"
    return measure_layer_costs(shapes, runtime, d.threads, cache, d.cost_warmup, d.cost_runs)


def build_backends(run: Any) -> Builds:
    """Export, then build every available backend of ``run.deploy.backends`` (see module doc)."""
    d = run.deploy
    check = export_checked(
        run.model,
        run.work_dir / "fp32.onnx",
        in_channels=run.dataset.in_channels,
        roi_size=run.roi_size,
        exporter=d.exporter,
        opset=d.opset,
    )
    (run.work_dir / "export.json").write_text(json.dumps(asdict(check), default=str, indent=2))
    rows: list[dict[str, Any]] = [
        {"backend": "ort_fp32", "metric": "export_max_abs_diff", "value": check.max_abs_diff}
    ]
    deployed = {"torch_fp32": Variant("torch_fp32", None, run.model, _state_dict_mb(run.model))}
    compared: dict[tuple[str, str], Variant] = {}
    available = []
    for name in d.backends:
        reason = unavailable_reason(name)
        if reason is None and BACKENDS[name].quantized and run.spec.precision != "w8a8":
            reason = f"skipped: precision {run.spec.precision} is not w8a8"
        if reason:
            rows.append(
                {"backend": name, "metric": "backend_available", "value": 0.0, "note": reason}
            )
        else:
            available.append(name)
    onnx_layers = onnx_conv_layers(check.path)
    policies = list(dict.fromkeys([d.layer_policy, *d.compare_policies]))
    qdq = _QdqFiles(run, check.path)
    for name in available:
        backend = BACKENDS[name]
        if backend.artefact == "fp32_onnx":
            deployed[name] = Variant(name, None, check.path, size_mb(check.path))
        elif backend.artefact == "fp16_onnx":
            path = convert_fp16_onnx(check.path, run.work_dir / "fp16.onnx")
            deployed[name] = Variant(
                name, None, path, size_mb(path), note="FP16 weights and compute"
            )
        elif backend.artefact == "dynamic_onnx":
            path = quantize_dynamic_onnx(
                check.path,
                run.work_dir / "int8_dynamic.onnx",
                per_channel=d.per_channel,
                op_types=d.op_types_to_quantize,
            )
            note = "dynamic: int8 weights, activation ranges per call"
            deployed[name] = Variant(name, None, path, size_mb(path), note=note)
        elif backend.artefact == "torch":
            deployed[name] = Variant(name, None, run.model, _state_dict_mb(run.model))
        elif backend.artefact == "qdq_own_onnx":
            try:
                deployed[name] = _own_scales_variant(run, name)
            except QDQExportError as exc:
                note = f"skipped: {exc}"
                rows.append(
                    {"backend": name, "metric": "backend_available", "value": 0.0, "note": note}
                )
        else:
            own = policies if backend.cost_runtime else ["all"]
            layers = (
                torch_conv_layers(run.model, run.batches[0])
                if backend.artefact == "torch_int8"
                else onnx_layers
            )
            costs = (
                _costs(run, backend.cost_runtime, list(layers.values()))
                if backend.cost_runtime and "latency_aware" in own
                else {}
            )
            for policy in own:
                variant = _int8_variant(run, name, policy, layers, costs, qdq)
                compared[(name, policy)] = variant
            deployed[name] = compared[(name, own[0])]
    return Builds(deployed, compared, rows)


def _own_scales_variant(run: Any, name: str) -> Variant:
    """The run's calibrated fake-quant model exported with its own scales (:mod:`.qdq_export`);
    the layer table goes beside it. ONNX Runtime gets output Q/DQ (its ``QLinearConv`` needs
    them) and, on CPUs without VNNI, the uint8 weight container that does not saturate."""
    example = run.batches[0][:1]
    qmodel = calibrate(quantize(run.model, run.spec, example=example), run.batches)
    ort = BACKENDS[name].runtime == "ort"
    report = export_qdq(
        qmodel,
        example,
        run.work_dir / f"{name}.onnx",
        weight_dtype="uint8" if ort and needs_reduce_range() else "int8",
        output_batches=run.batches if ort else None,
    )
    report.table().to_csv(run.work_dir / f"{name}_layers.csv", index=False)
    note = (
        f"own scales: {len(report.exported)} layers carry the fake-quant model's scales and zero "
        f"points, {len(report.kept_float)} kept float ({len(report.simulation_only)} "
        "simulation-only)"
    )
    return Variant(name, None, report.path, size_mb(report.path), note=note)


def _int8_variant(
    run: Any,
    name: str,
    policy: str,
    layers: dict[str, ConvShape],
    costs: dict[str, tuple[float, float, bool]],
    qdq: _QdqFiles,
) -> Variant:
    choices = choose_layers(layers, parse_policy(policy), costs, run.deploy.latency_margin)
    if BACKENDS[name].artefact == "torch_int8":
        # transposed convolutions have no x86 INT8 path here: reported as float
        choices = [
            c
            if c.shape.op == "Conv"
            else LayerChoice(c.layer, c.shape, False, "float: no torch x86 INT8 ConvTranspose3d")
            for c in choices
        ]
        d = run.deploy
        qat = TorchQat(d.torch_qat_steps, d.torch_qat_lr) if name.endswith("_qat") else None
        qmodel = quantize_convs(run.model, run.batches, float_layers(choices), qat)
        how = (
            f"QAT flow, {qat.steps} distillation steps at lr {qat.lr:g}"
            if qat
            else "static PTQ, histogram activation ranges"
        )
        note = (
            f"torch {torch.__version__} x86 INT8 Conv3d ({qmodel.int8_flow} mode, {how}); layer "
            f"policy {policy}: {sum(c.int8 for c in choices)} of {len(choices)} convolutions INT8"
        )
        return Variant(name, policy, qmodel, _state_dict_mb(qmodel), choices, note)
    path = qdq(float_layers(choices))
    return Variant(name, policy, path, size_mb(path), choices, _static_note(run, policy, choices))
