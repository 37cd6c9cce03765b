"""One deployment run: export -> real INT8 -> operator report -> latency -> agreement -> gate.

``run_deploy(cfg)`` takes the same composed config as an evaluation run (model, data, precision,
granularity, observer, calibration, inference, evaluation) plus the ``deploy`` group
(:class:`~benchmark.deploy.config.DeployConfig`) and returns tidy rows (:mod:`.rows`); the
caller writes them with :mod:`benchmark.results`. Side files (ONNX models, the optimized graphs,
``ops.csv``, ``gate.json``, ``export.json``, ``hardware.json``) go to ``deploy.work_dir`` or
``<results>/<experiment>/runs/<run_id>_deploy/``.

Backends: ``torch_fp32`` (the checkpoint), ``torch_fakequant`` (``benchmark.quant`` simulation of
the same spec, scored only), ``ort_fp32`` (the export), ``ort_int8_static`` (QDQ, calibrated on
the fake-quant run's patches), ``ort_int8_dynamic``, and ``ort_fp16`` when a GPU provider exists.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from benchmark.deploy.agreement import agreement_rows, predict_case_labels
from benchmark.deploy.config import DeployConfig
from benchmark.deploy.export import export_checked, load_registry_model
from benchmark.deploy.gate import check_batch_consistency, decide
from benchmark.deploy.latency import hardware_info, session_latency, size_mb, torch_latency
from benchmark.deploy.ops import integer_kernel_summary, optimized_op_counts
from benchmark.deploy.ort_quant import (
    calibrate_method_for,
    convert_fp16_onnx,
    quantize_dynamic_onnx,
    quantize_static_onnx,
)
from benchmark.deploy.profile import profile_op_times
from benchmark.deploy.rows import (
    gate_rows,
    latency_rows,
    op_rows,
    op_time_rows,
    size_row,
    to_frame,
)
from benchmark.deploy.session import OrtSegmenter, gpu_provider, make_session, run_session
from benchmark.deploy.summary import format_summary
from benchmark.pipeline.sources import folder_model_kind

__all__ = ["run_deploy", "DeployRun", "prepare", "REFERENCE_OF"]

log = logging.getLogger(__name__)

#: Agreement reference name -> the ``reference`` column value written with it.
REFERENCE_OF = {"": "label", "_vs_fp32": "fp32", "_vs_fakequant": "fakequant"}


@dataclass
class DeployRun:
    """Everything one run works on, built once by :func:`prepare`.

    Attributes:
        cfg: the validated composed config.
        deploy: its ``deploy`` group.
        dataset: the opened ``benchmark.data.SegmentationDataset``.
        model: FP32 network (eval mode, CPU) with its checkpoint.
        spec: the ``benchmark.quant.QuantSpec`` of the run.
        roi_size: sliding-window / export patch size ``(D, H, W)``.
        batches: calibration patches ``[B, C, *roi]`` (same as the fake-quant run's).
        case_ids: scored cases.
        work_dir: folder for ONNX files and reports.
        identity: columns shared by every row.
        notes: backend -> how it was built, written to its rows' ``note`` column.
    """

    cfg: DictConfig
    deploy: DeployConfig
    dataset: Any
    model: nn.Module
    spec: Any
    roi_size: tuple[int, int, int]
    batches: list[torch.Tensor]
    case_ids: list[str]
    work_dir: Path
    identity: dict[str, Any]
    notes: dict[str, str] = field(default_factory=dict)


def prepare(cfg: DictConfig) -> DeployRun:
    """Validate ``cfg`` and load the dataset, model, spec and calibration patches.

    The run's identity (config hash, run id, row columns) and its ``QuantSpec`` come from the
    runner (:mod:`benchmark.pipeline`), so deployment rows line up with the evaluation rows of
    the same point.

    Raises:
        benchmark.config.ConfigError: invalid config, or a precision without 8-bit integer
            kernels (ONNX Runtime runs W8A8; lower bit widths stay in the fake-quant sweep).
    """
    from benchmark.config import ConfigError, bits, is_float, validate
    from benchmark.data import calibration_patches, open_dataset
    from benchmark.models import count_parameters
    from benchmark.pipeline import RunContext, quant_spec, roi_size
    from benchmark.pipeline.context import point_columns

    cfg = validate(cfg)
    kind = folder_model_kind(cfg)
    if kind is not None:
        raise ConfigError(
            f"task=deploy exports registry models; {cfg.model.checkpoint} is a {kind}, which "
            "task=evaluate and task=sensitivity run"
        )
    deploy = DeployConfig.from_mapping(OmegaConf.to_container(cfg.deploy, resolve=True))
    precision = cfg.precision.name
    if not is_float(precision) and bits(precision) != (8, 8):
        raise ConfigError(
            f"precision={precision}: ONNX Runtime's integer kernels are 8-bit, so only w8a8 (or a "
            "float precision) can be deployed; lower bit widths are studied with task=evaluate"
        )
    dataset = open_dataset(OmegaConf.to_container(cfg.data, resolve=True))
    torch.manual_seed(int(cfg.seed))  # random-init models (checkpoint: null) are reproducible
    model = load_registry_model(cfg.model, dataset.in_channels, dataset.num_classes)
    roi = tuple(roi_size(cfg))
    batches = calibration_patches(
        dataset,
        split=cfg.calibration.split,
        n=int(cfg.calibration.n),
        roi_size=roi,
        seed=int(cfg.calibration.seed),
        batch_size=int(cfg.calibration.batch_size),
    )
    limit = deploy.cases if deploy.cases is not None else cfg.evaluation.max_cases
    case_ids = dataset.split(cfg.evaluation.split)[:limit]

    context = RunContext.from_config(cfg)
    work_dir = (
        Path(deploy.work_dir)
        if deploy.work_dir
        else context.experiment_dir / "runs" / f"{context.run_id}_deploy"
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    published = cfg.model.get("published_params_m")
    params_m = float(published) if published else count_parameters(model) / 1e6
    identity = point_columns(cfg, context, params_m=params_m)
    return DeployRun(
        cfg, deploy, dataset, model, quant_spec(cfg), roi, batches, case_ids, work_dir, identity
    )


def run_deploy(cfg: DictConfig) -> pd.DataFrame:
    """Export, quantize with ONNX Runtime, time, score and gate one configuration.

    Args:
        cfg: composed config with ``task=deploy`` (see the module docstring).

    Returns:
        Tidy rows (DESIGN.md schema plus :data:`benchmark.deploy.rows.DEPLOY_COLUMNS`).
    """
    run = prepare(cfg)
    progress = bool(OmegaConf.select(run.cfg, "run.progress", default=True))
    stages = tqdm(total=5, desc=f"deploy {run.cfg.model.name}", disable=not progress, unit="step")
    rows: list[dict[str, Any]] = []

    stages.set_postfix_str("export + quantize")
    paths, build_rows = _build_backends(run)
    rows += build_rows
    stages.update()

    stages.set_postfix_str("operator report")
    rows += _operator_report(run, paths)
    stages.update()

    stages.set_postfix_str("latency")
    rows += _latency(run, paths)
    stages.update()

    stages.set_postfix_str("agreement")
    agreement = _agreement(run, paths, progress)
    rows += agreement
    stages.update()

    stages.set_postfix_str("gate")
    rows += _gate(run, paths, agreement)
    stages.update()
    stages.close()
    for row in rows:
        if not row.get("note") and row.get("backend") in run.notes:
            row["note"] = run.notes[row["backend"]]
    frame = to_frame(rows, run.identity)
    # logged rather than printed: both entry points (benchmark.run, benchmark.deploy) show it,
    # and Hydra keeps it in the job's log file next to the resolved config
    log.info("deployment summary (%s):\n%s", run.work_dir, format_summary(frame))
    return frame


def _build_backends(run: DeployRun) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Export the FP32 model and build the quantized ONNX models the config asks for."""
    d = run.deploy
    check = export_checked(
        run.model,
        run.work_dir / "fp32.onnx",
        in_channels=run.dataset.in_channels,
        roi_size=run.roi_size,
        exporter=d.exporter,
        opset=d.opset,
        providers=d.providers,
    )
    (run.work_dir / "export.json").write_text(json.dumps(asdict(check), default=str, indent=2))
    paths = {"ort_fp32": check.path}
    rows = [{"backend": "ort_fp32", "metric": "export_max_abs_diff", "value": check.max_abs_diff}]
    if run.spec.precision == "w8a8":
        if d.static:
            method, extra = calibrate_method_for(
                run.spec.observer,
                d.calibrate_method,
                percentile=run.spec.percentile,
                averaging_constant=run.spec.averaging_constant,
            )
            paths["ort_int8_static"] = quantize_static_onnx(
                check.path,
                run.work_dir / "int8_static.onnx",
                run.batches,
                method=method,
                extra_options=extra,
                per_channel=d.per_channel,
                activation_symmetric=run.spec.act_mapping == "symmetric",
                op_types=d.op_types_to_quantize,
            )
            act = "int8 symmetric" if run.spec.act_mapping == "symmetric" else "uint8 asymmetric"
            run.notes["ort_int8_static"] = (
                f"QDQ static, calibrate={method.name} {extra or ''}, weights int8 symmetric "
                f"{'per-channel' if d.per_channel else 'per-tensor'}, activations {act} per-tensor"
            )
        if d.dynamic:
            run.notes["ort_int8_dynamic"] = "dynamic: int8 weights, activation ranges per call"
            paths["ort_int8_dynamic"] = quantize_dynamic_onnx(
                check.path,
                run.work_dir / "int8_dynamic.onnx",
                per_channel=d.per_channel,
                op_types=d.op_types_to_quantize,
            )
    if d.fp16:
        if gpu_provider(d.providers) is not None:
            paths["ort_fp16"] = convert_fp16_onnx(check.path, run.work_dir / "fp16.onnx")
        else:
            reason = f"skipped: no GPU execution provider among {d.providers} in this onnxruntime"
            rows.append(
                {"backend": "ort_fp16", "metric": "backend_available", "value": 0.0, "note": reason}
            )
    return paths, rows


def _providers_for(run: DeployRun, backend: str) -> list[str]:
    gpu = gpu_provider(run.deploy.providers)
    return [gpu] if backend == "ort_fp16" and gpu else list(run.deploy.providers)


def _operator_report(run: DeployRun, paths: dict[str, Path]) -> list[dict[str, Any]]:
    rows, tables = [], []
    shape = (run.dataset.in_channels, *run.roi_size)
    for backend, path in paths.items():
        providers = _providers_for(run, backend)
        counts = optimized_op_counts(
            path, providers, threads=1, save_to=path.with_suffix(".optimized.onnx")
        )
        rows += op_rows(backend, counts, integer_kernel_summary(counts), providers[0])
        times = profile_op_times(path, shape, providers, threads=run.deploy.threads)
        rows += op_time_rows(backend, times, providers[0])
        tables.append(
            counts.merge(times, on="op_type", how="outer").assign(
                backend=backend, provider=providers[0]
            )
        )
    pd.concat(tables).to_csv(run.work_dir / "ops.csv", index=False)
    return rows


def _latency(run: DeployRun, paths: dict[str, Path]) -> list[dict[str, Any]]:
    d = run.deploy
    shape = (run.dataset.in_channels, *run.roi_size)
    hw = hardware_info()
    hardware = f"{hw['cpu']} ({hw['cpu_cores']} cores usable); onnxruntime {hw['onnxruntime']}"
    (run.work_dir / "hardware.json").write_text(json.dumps(hw, indent=2))
    buffer = io.BytesIO()
    torch.save(run.model.state_dict(), buffer)
    rows = [size_row("torch_fp32", buffer.getbuffer().nbytes / 1e6)]
    for b in d.batch_sizes:
        stats = torch_latency(run.model, shape, int(b), d.warmup, d.runs, threads=d.threads)
        rows += latency_rows("torch_fp32", stats, "torch-cpu", d.threads, hardware)
    for backend, path in paths.items():
        rows.append(size_row(backend, size_mb(path)))
        providers = _providers_for(run, backend)
        session = make_session(path, providers, threads=d.threads)
        for b in d.batch_sizes:
            stats = session_latency(session, shape, int(b), d.warmup, d.runs)
            rows += latency_rows(backend, stats, session.get_providers()[0], d.threads, hardware)
    return rows


def _fake_quant_model(run: DeployRun) -> nn.Module | None:
    from benchmark.quant import calibrate, quantize

    if run.spec.precision in ("fp32", "fp16", "bf16"):
        return None
    qmodel = quantize(run.model, run.spec)
    calibrate(qmodel, run.batches)
    return qmodel.eval()


def _agreement(run: DeployRun, paths: dict[str, Path], progress: bool) -> list[dict[str, Any]]:
    cfg = run.cfg
    predictors: dict[str, nn.Module] = {"torch_fp32": run.model}
    fake = _fake_quant_model(run)
    if fake is not None:
        predictors["torch_fakequant"] = fake
    for backend, path in paths.items():
        session = make_session(path, _providers_for(run, backend), threads=run.deploy.threads)
        predictors[backend] = OrtSegmenter(session)
    labels = sorted(c for c in run.dataset.labels if c != 0)
    rows = []
    for case_id in tqdm(run.case_ids, desc="cases", disable=not progress, leave=False):
        case = run.dataset.prepare(case_id)
        predictions = {
            name: predict_case_labels(
                net, case, run.roi_size, cfg.inference.overlap, cfg.inference.sw_batch_size
            )
            for name, net in predictors.items()
        }
        for row in agreement_rows(
            case_id,
            predictions,
            case.label,
            case.spacing_mm,
            labels,
            cfg.evaluation.tolerance_mm,
        ):
            suffix = row["metric"][row["metric"].find("_vs_") :] if "_vs_" in row["metric"] else ""
            row["reference"] = REFERENCE_OF[suffix]
            row["split"] = cfg.evaluation.split
            if row["class"] is not None:
                row["class_name"] = run.dataset.labels[row["class"]]
            rows.append(row)
    return rows


def _gate(
    run: DeployRun, paths: dict[str, Path], agreement: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    d = run.deploy
    frame = pd.DataFrame(agreement)
    dsc = frame[frame["metric"] == "dsc"].groupby(["backend", "class"])["value"].mean()

    def per_class(backend: str) -> dict[int, float]:
        return {int(c): float(v) for c, v in dsc.loc[backend].items()}

    baseline = per_class("torch_fp32")
    patches = torch.cat(run.batches).numpy()
    rows, record = [], {}
    for backend, path in paths.items():
        if backend == "ort_fp32":
            continue
        session = make_session(path, _providers_for(run, backend), threads=d.threads)
        batch = check_batch_consistency(
            lambda x, s=session: run_session(s, x),
            patches,
            d.consistency_batch_sizes,
            d.consistency_max_mismatch,
        )
        decision = decide(
            per_class(backend), baseline, d.tolerance_rel, d.per_class_worst_drop, batch
        )
        rows += gate_rows(backend, decision, batch)
        record[backend] = {"decision": asdict(decision), "batch": asdict(batch)}
    (run.work_dir / "gate.json").write_text(json.dumps(record, indent=2, default=str))
    return rows
