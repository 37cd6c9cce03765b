"""The standard evaluation of one sweep point: quantize, calibrate, predict, score, tidy rows.

``run_point(context)`` is ordinary Python on a :class:`~benchmark.schema.RunPoint` (with its
provenance): :mod:`benchmark.run` calls it once per job, tests call it with a point built by
:func:`benchmark.config.build_point`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

import benchmark.metrics as metrics_layer
import benchmark.models as models_layer
from benchmark.errors import raise_if_interrupted
from benchmark.points import cache
from benchmark.points.calibrated import (
    Calibrated,
    calibrated_model,
    input_example,
    write_quant_table,
)
from benchmark.points.context import RunContext, point_columns
from benchmark.points.sources import ModelSource, fp32_cache_dir, open_source
from benchmark.schema import RunPoint

__all__ = ["FP32_AGREEMENT_METRIC", "run_point"]

#: Metric id of the DSC between a run's prediction and the FP32 model's prediction.
FP32_AGREEMENT_METRIC = "dsc_fp32"


def _fp32_labels(source: ModelSource, fp32_dir: Path, case: Any) -> np.ndarray:
    """FP32 prediction of a case on its original grid, from the cache or computed and stored."""
    path = fp32_dir / f"{case.case_id}.npz"
    with cache.locked(path):
        if path.is_file():
            return cache.load_labels(path)
        labels = source.labels_of(source.probabilities(source.model, case), case)
        cache.save_labels(path, labels)
        return labels


def _save_prediction(context: RunContext, case: Any, labels: np.ndarray) -> None:
    """``<experiment>/predictions/<run_id>/<case><ending>``: nnU-Net's output layout."""
    folder = context.experiment_dir / "predictions" / context.run_id
    case.write_segmentation(labels, folder / f"{case.case_id}{case.file_ending}")


def _score(point: RunPoint, case: Any, labels: np.ndarray, probs: torch.Tensor, foreground):
    return metrics_layer.score_case(
        labels,
        case.label,
        spacing_mm=tuple(case.spacing_mm),
        labels=foreground,
        tolerance_mm=float(point.evaluation.tolerance_mm),
        probs=probs.numpy() if point.evaluation.probability_metrics else None,
    )


def _agreement_rows(case_id: str, agreement: dict[int, float]) -> list[dict[str, Any]]:
    return [
        {
            "case": case_id,
            "class": k,
            "metric": FP32_AGREEMENT_METRIC,
            "value": v,
            "tolerance_mm": np.nan,
        }
        for k, v in agreement.items()
    ]


def _score_cases(context: RunContext, source: ModelSource, qmodel: nn.Module, fp32_dir: Path):
    """Predict and score each case of ``evaluation.split``; store (FP32) or compare with (not
    FP32) the cached FP32 prediction.

    Returns:
        ``(records, inference_seconds, scoring_seconds)``.
    """
    point = context.point
    dataset, floating = source.dataset, point.precision == "fp32"
    foreground = [int(k) for k in sorted(dataset.labels) if int(k) != 0]
    cases = list(dataset.split(point.evaluation.split))
    if point.evaluation.max_cases is not None:
        cases = cases[: int(point.evaluation.max_cases)]
    records: list[dict[str, Any]] = []
    inference_s = scoring_s = 0.0
    bar = tqdm(cases, desc=context.run_id, unit="case", disable=not point.run.progress, leave=False)
    for case_id in bar:
        raise_if_interrupted()  # a Ctrl-C Python dropped in the last case stops here
        case = dataset.prepare(case_id)
        start = time.perf_counter()
        probs = source.probabilities(qmodel, case)
        inference_s += time.perf_counter() - start
        start = time.perf_counter()
        pred = source.labels_of(probs, case)
        records += [
            {"case": case_id, **row} for row in _score(point, case, pred, probs, foreground)
        ]
        scoring_s += time.perf_counter() - start
        if point.evaluation.save_predictions:
            _save_prediction(context, case, pred)
        if floating:
            path = fp32_dir / f"{case_id}.npz"
            with cache.locked(path):
                if not path.is_file():
                    cache.save_labels(path, pred)
        elif point.evaluation.fp32_agreement:
            reference = _fp32_labels(source, fp32_dir, case)
            records += _agreement_rows(case_id, metrics_layer.dice(pred, reference, foreground))
    return records, inference_s, scoring_s


def run_point(context: RunContext) -> pd.DataFrame:
    """Evaluate one sweep point and return its tidy rows.

    Steps: open the model source (cases, FP32 network, inference settings); quantize and
    calibrate on ``calibration.n`` patches (ranges cached per model, spec and calibration set);
    predict each scored case (FP32 predictions cached per model, dataset and inference
    settings, so a quantized run is compared with a baseline made exactly as it is made);
    score on the original grid.

    Args:
        context: the run point and its provenance.

    Returns:
        One row per case x class x metric with :data:`benchmark.results.ROW_COLUMNS` plus
        ``task``, ``framework``, ``display_name``, ``params_m_counted``, every other field of
        the spec (``act_mapping``, ``keep_first_last``, ...), ``quant_table_hash`` (of the
        quantization table written to ``runs/<run_id>.quant.csv``), ``dirty``,
        ``package_version``, ``hardware``, the inference settings (``mirroring``, ``overlap``,
        ``roi``, ``fold``, ``training_cases_scored``) and the timings ``calibration_s`` (as
        measured when the calibration was computed; ``calibration_cached`` says whether this run
        loaded it), ``inference_s``, ``scoring_s``.
    """
    point = context.point
    source = open_source(point)
    dataset = source.dataset
    counted_m = models_layer.count_parameters(source.model) / 1e6
    fp32_dir = fp32_cache_dir(point, source)
    qmodel, calibration_s, calib_n, calibration_cached = (
        Calibrated(source.model.to(point.inference.device), 0.0, 0, cached=False)
        if point.precision == "fp32"
        else calibrated_model(point, source)
    )
    table_hash = "none"  # fp32 runs the network itself: nothing is quantized
    if point.precision != "fp32":
        example = input_example(source, point.inference.device)
        table_file = context.experiment_dir / "runs" / f"{context.run_id}.quant.csv"
        table_hash = write_quant_table(qmodel, example, table_file)
    labels = {int(k): str(v) for k, v in dataset.labels.items()}
    records, inference_s, scoring_s = _score_cases(context, source, qmodel, fp32_dir)
    rows = pd.DataFrame.from_records(records)
    for key in ("case", "class", "metric", "value", "tolerance_mm"):
        if key not in rows.columns:  # no scored case at all
            rows[key] = pd.Series(dtype="float64" if key in ("value", "tolerance_mm") else "object")
    rows["class"] = rows["class"].astype(int)
    # case-level rows (ece_top, brier_mc) carry class CASE_CLASS (-1) and describe no class
    rows["class_name"] = rows["class"].map(labels).fillna("case")
    rows["split"] = point.evaluation.split
    rows["dataset"] = point.data.name
    # a published parameter count describes the registry's architecture, not a user's folder
    published = point.model.published_params_m if source.folder is None else None
    columns = point_columns(
        context, calib_n=calib_n, params_m=published if published is not None else counted_m
    )
    columns.update(
        source.columns,
        params_m_counted=counted_m,
        quant_table_hash=table_hash,
        calibration_s=calibration_s,
        calibration_cached=calibration_cached,
        inference_s=inference_s,
        scoring_s=scoring_s,
    )
    for key, value in columns.items():
        rows[key] = value
    return rows
