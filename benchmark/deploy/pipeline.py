"""One deployment run: build backends -> operator report -> latency -> agreement -> gate -> selector.

``run_deploy(context)`` takes the same run point as an evaluation run (model, data, precision,
granularity, observer, calibration, inference, evaluation) plus the ``deploy`` group
(:class:`~benchmark.schema.deploy.DeployConfig`) and returns tidy rows (:mod:`.rows`); the
caller writes them with :mod:`benchmark.results`. Side files (ONNX models, the optimized graphs,
``ops.csv``, ``gate.json``, ``export.json``, ``hardware.json``, ``selector.json``) go to
``deploy.work_dir`` or ``<results>/<experiment>/runs/<run_id>_deploy/``.

Backends: ``torch_fp32`` (the checkpoint), ``torch_fakequant`` (``benchmark.quant`` simulation of
the same spec, scored only) and every available name of ``deploy.backends``
(:mod:`.backends`), INT8 ones under ``deploy.layer_policy`` (:mod:`.build`); the other
``deploy.compare_policies`` are timed at batch 1 beside them (:mod:`.measure`). Every backend
but ``ort_fp32`` is gated against ``torch_fp32``; the fastest accepted INT8 backend is then
served through the run-time selector with ``ort_fp32`` as its fallback (:mod:`.selector`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.data import calibration_patches, open_dataset
from benchmark.deploy.agreement import agreement_rows, predict_case_labels
from benchmark.deploy.backends import BACKENDS, load_predictor
from benchmark.deploy.build import Builds, build_backends
from benchmark.deploy.export import load_registry_model
from benchmark.deploy.gate import check_batch_consistency, decide
from benchmark.deploy.latency import hardware_info
from benchmark.deploy.measure import latency_report, operator_report, policy_report
from benchmark.deploy.rows import gate_rows, to_frame
from benchmark.deploy.selector import FallbackSelector
from benchmark.deploy.session import ArraySegmenter
from benchmark.deploy.settings import check_deploy
from benchmark.deploy.summary import format_summary
from benchmark.models import count_parameters
from benchmark.points.context import RunContext, point_columns, spec_bits
from benchmark.points.errors import PointError
from benchmark.points.sources import folder_model_kind, roi_size
from benchmark.quant import calibrate, quantize
from benchmark.schema import RunPoint
from benchmark.schema.deploy import DeployConfig

__all__ = ["run_deploy", "DeployRun", "prepare", "REFERENCE_OF"]

log = logging.getLogger(__name__)

#: Agreement reference name -> the ``reference`` column value written with it.
REFERENCE_OF = {"": "label", "_vs_fp32": "fp32", "_vs_fakequant": "fakequant"}


@dataclass
class DeployRun:
    """Everything one run works on, built once by :func:`prepare`.

    Attributes:
        point: the run point.
        deploy: its ``deploy`` settings.
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

    point: RunPoint
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


def prepare(context: RunContext) -> DeployRun:
    """Load the dataset, model and calibration patches of a run point.

    The run's identity (config hash, run id, row columns) and its ``QuantSpec`` come from the
    run point, so deployment rows line up with the evaluation rows of the same point.

    Raises:
        PointError: a model folder, or a precision without 8-bit integer kernels (ONNX
            Runtime runs W8A8; lower bit widths stay in the fake-quant sweep).
    """
    point = context.point
    kind = folder_model_kind(point)
    if kind is not None:
        raise PointError(
            f"task=deploy exports registry models; {point.model.checkpoint} is a {kind}, which "
            "task=evaluate and task=sensitivity run"
        )
    deploy = check_deploy(point.deploy)
    precision = point.precision
    if not point.is_float and spec_bits(point.spec) != (8, 8):
        raise PointError(
            f"precision={precision}: ONNX Runtime's integer kernels are 8-bit, so only w8a8 (or a "
            "float precision) can be deployed; lower bit widths are studied with task=evaluate"
        )
    dataset = open_dataset(point.data)
    torch.manual_seed(int(point.seed))  # random-init models (checkpoint: null) are reproducible
    model = load_registry_model(asdict(point.model), dataset.in_channels, dataset.num_classes)
    roi = tuple(roi_size(point))
    batches = list(  # held: the deployment calibrates several backends from the same patches
        calibration_patches(
            dataset,
            split=point.calibration.split,
            n=int(point.calibration.n),
            roi_size=roi,
            seed=int(point.calibration.seed),
            batch_size=int(point.calibration.batch_size),
        )
    )
    limit = deploy.cases if deploy.cases is not None else point.evaluation.max_cases
    case_ids = dataset.split(point.evaluation.split)[:limit]

    work_dir = (
        Path(deploy.work_dir)
        if deploy.work_dir
        else context.experiment_dir / "runs" / f"{context.run_id}_deploy"
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    published = point.model.published_params_m
    params_m = float(published) if published else count_parameters(model) / 1e6
    identity = point_columns(context, params_m=params_m)
    return DeployRun(
        point, deploy, dataset, model, point.spec, roi, batches, case_ids, work_dir, identity
    )


def run_deploy(context: RunContext) -> pd.DataFrame:
    """Build, time, score, gate and serve every requested backend for one run point.

    Args:
        context: a run point with ``task=deploy`` (see the module docstring).

    Returns:
        Tidy rows (DESIGN.md schema plus :data:`benchmark.deploy.rows.DEPLOY_COLUMNS`).
    """
    run = prepare(context)
    progress = bool(run.point.run.progress)
    stages = tqdm(total=7, desc=f"deploy {run.point.model.name}", disable=not progress, unit="step")
    rows: list[dict[str, Any]] = []

    stages.set_postfix_str("export + build")
    builds = build_backends(run)
    rows += builds.rows
    run.notes.update({n: v.note for n, v in builds.deployed.items() if v.note})
    predictors = {
        name: load_predictor(name, v.artefact, run.deploy.threads)
        for name, v in builds.deployed.items()
    }
    (run.work_dir / "hardware.json").write_text(json.dumps(hardware_info(), indent=2))
    stages.update()
    for label, step in (
        ("operator report", operator_report),
        ("latency", latency_report),
        ("layer policies", policy_report),
    ):
        stages.set_postfix_str(label)
        rows += step(run, builds, predictors)
        stages.update()

    stages.set_postfix_str("agreement")
    agreement = _agreement(run, predictors, progress)
    rows += agreement
    stages.update()

    stages.set_postfix_str("gate")
    rows += _gate(run, predictors, agreement)
    stages.update()

    stages.set_postfix_str("selector")
    rows += _selector(run, builds, rows)
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


def _fake_quant_model(run: DeployRun) -> nn.Module | None:
    if run.spec.is_float:
        return None
    qmodel = quantize(run.model, run.spec, example=torch.zeros_like(run.batches[0][:1]))
    calibrate(qmodel, run.batches)
    return qmodel.eval()


def _agreement(run: DeployRun, predictors: dict[str, Any], progress: bool) -> list[dict[str, Any]]:
    point = run.point
    nets: dict[str, nn.Module] = {"torch_fp32": run.model}
    fake = _fake_quant_model(run)
    if fake is not None:
        nets["torch_fakequant"] = fake
    for backend, predict in predictors.items():
        if backend != "torch_fp32":
            nets[backend] = ArraySegmenter(predict)
    labels = sorted(c for c in run.dataset.labels if c != 0)
    rows = []
    for case_id in tqdm(run.case_ids, desc="cases", disable=not progress, leave=False):
        case = run.dataset.prepare(case_id)
        predictions = {
            name: predict_case_labels(
                net, case, run.roi_size, point.inference.overlap, point.inference.sw_batch_size
            )
            for name, net in nets.items()
        }
        for row in agreement_rows(
            case_id,
            predictions,
            case.label,
            case.spacing_mm,
            labels,
            point.evaluation.tolerance_mm,
        ):
            suffix = row["metric"][row["metric"].find("_vs_") :] if "_vs_" in row["metric"] else ""
            row["reference"] = REFERENCE_OF[suffix]
            row["split"] = point.evaluation.split
            if row["class"] is not None:
                row["class_name"] = run.dataset.labels[row["class"]]
            rows.append(row)
    return rows


def _gate(
    run: DeployRun, predictors: dict[str, Any], agreement: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Gate every backend but the references against ``torch_fp32`` on the scored cases."""
    d = run.deploy
    frame = pd.DataFrame(agreement)
    dsc = frame[frame["metric"] == "dsc"].groupby(["backend", "class"])["value"].mean()
    voxels = frame[frame["metric"] == "voxel_agreement_vs_fp32"].groupby("backend")["value"].mean()

    def per_class(backend: str) -> dict[int, float]:
        return {int(c): float(v) for c, v in dsc.loc[backend].items()}

    baseline = per_class("torch_fp32")
    patches = torch.cat(run.batches).numpy()
    rows, record = [], {}
    for backend, predict in predictors.items():
        if backend in ("ort_fp32", "torch_fp32"):
            continue
        batch = check_batch_consistency(
            predict, patches, d.consistency_batch_sizes, d.consistency_max_mismatch
        )
        decision = decide(
            per_class(backend),
            baseline,
            d.tolerance_rel,
            d.per_class_worst_drop,
            batch,
            voxel_agreement=float(voxels.get(backend, float("nan"))),
            min_agreement=d.min_voxel_agreement,
        )
        rows += gate_rows(backend, decision, batch)
        record[backend] = {"decision": asdict(decision), "batch": asdict(batch)}
    (run.work_dir / "gate.json").write_text(json.dumps(record, indent=2, default=str))
    return rows


def _selector(run: DeployRun, builds: Builds, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Serve the fastest accepted INT8 backend through the selector over the calibration
    patches (validation mode per ``deploy.selector_validate``), with ``ort_fp32`` behind it."""
    d = run.deploy
    frame = pd.DataFrame(rows)
    accepted = set(
        frame.loc[(frame["metric"] == "gate_accepted") & (frame["value"] == 1), "backend"]
    )
    p50 = frame[(frame["metric"] == "latency_p50_ms") & (frame["batch_size"] == 1)]
    candidates = p50[p50["backend"].isin([b for b in accepted if BACKENDS[b].quantized])]
    if candidates.empty:
        return []
    name = str(candidates.sort_values("value")["backend"].iloc[0])
    selector = FallbackSelector(
        lambda: load_predictor(name, builds.deployed[name].artefact, d.threads),
        lambda: load_predictor("ort_fp32", builds.deployed["ort_fp32"].artefact, d.threads),
        validate=d.selector_validate,
        max_disagreement=d.selector_max_disagreement,
        name=name,
    )
    worst = 0.0
    for patch in torch.cat(run.batches).numpy():
        selector(patch[None])
        if np.isfinite(selector.last_disagreement):
            worst = max(worst, selector.last_disagreement)
    mode = "validation" if d.selector_validate else "serving"
    note = f"{name} served with ort_fp32 fallback, {mode} mode, threshold {d.selector_max_disagreement:g}"
    out = [
        {"backend": name, "metric": "selector_calls", "value": float(selector.calls), "note": note},
        {
            "backend": name,
            "metric": "selector_int8_calls",
            "value": float(selector.int8_calls),
            "note": note,
        },
        {"backend": name, "metric": "selector_max_disagreement", "value": worst, "note": note},
    ]
    out += [
        {
            "backend": name,
            "metric": "selector_fallback",
            "value": 1.0,
            "note": f"{e.reason}: {e.detail}",
        }
        for e in selector.events
    ]
    events = [asdict(e) for e in selector.events]
    record = {"backend": name, "mode": mode, "calls": selector.calls, "events": events}
    (run.work_dir / "selector.json").write_text(json.dumps(record, indent=2))
    return out
