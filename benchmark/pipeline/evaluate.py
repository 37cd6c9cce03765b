"""The standard evaluation of one sweep point: quantize, calibrate, predict, score, tidy rows.

``run_point(cfg)`` is ordinary Python on a composed config: tests call it with a config from
``hydra.compose``; :mod:`benchmark.run` calls it once per job. The lower layers are reached as
module attributes at call time (``benchmark.data.open_dataset``) so that tests can replace any
of them with a tiny fake.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

import benchmark.data as data_layer
import benchmark.metrics as metrics_layer
import benchmark.models as models_layer
import benchmark.quant as quant_layer
from benchmark.config import ConfigError, is_float, validate
from benchmark.pipeline import cache
from benchmark.pipeline.context import RunContext, point_columns
from benchmark.pipeline.sources import (
    ModelSource,
    fp32_cache_dir,
    mirroring_axes,
    open_source,
    roi_size,
    window_probabilities,
)

__all__ = ["FP32_AGREEMENT_METRIC", "load_model", "predict", "quant_spec", "roi_size", "run_point"]

log = logging.getLogger(__name__)

#: Metric id of the DSC between a run's prediction and the FP32 model's prediction.
FP32_AGREEMENT_METRIC = "dsc_fp32"


def quant_spec(cfg: DictConfig) -> Any:
    """The :class:`benchmark.quant.QuantSpec` of a config.

    ``precision``/``granularity``/``observer``/``algorithm`` names map to the fields of the same name; the
    observer group's other fields and ``quant.*`` go to the QuantSpec fields of the same name
    (observer fields QuantSpec does not have are left out; ``quant.*`` keys must exist).
    """
    spec_cls = quant_layer.QuantSpec
    names = {f.name for f in dataclasses.fields(spec_cls)}
    kwargs: dict[str, Any] = {"precision": cfg.precision.name}
    if not is_float(cfg.precision.name):
        kwargs["granularity"] = cfg.granularity.name
        kwargs["observer"] = cfg.observer.name
        kwargs["algorithm"] = cfg.algorithm.name
        for key, value in cfg.observer.items():
            if key != "name" and key in names:
                kwargs[key] = value
    extra = OmegaConf.to_container(cfg.quant, resolve=True)
    unknown = sorted(set(extra) - names)
    if unknown:
        raise ValueError(f"quant.{unknown[0]} is not a QuantSpec field; fields: {sorted(names)}")
    kwargs.update(extra)
    return spec_cls(**kwargs)


def load_model(cfg: DictConfig, dataset: Any) -> nn.Module:
    """The config's registry network for ``dataset``'s channels and classes, with its weights.

    Raises:
        ConfigError: the checkpoint is an nnU-Net results folder; the tasks that call this
            (sensitivity's and deploy's own loaders) take the model from :func:`open_source`.
    """
    if models_layer.is_nnunet_folder(cfg.model.checkpoint):
        raise ConfigError(
            f"task={cfg.task} does not run nnU-Net results folders ({cfg.model.checkpoint}); "
            "use task=evaluate or task=sensitivity"
        )
    torch.manual_seed(int(cfg.seed))  # random-init models (checkpoint: null) are reproducible
    model = models_layer.build_model(cfg.model, dataset.in_channels, dataset.num_classes)
    if cfg.model.checkpoint is not None:
        model = models_layer.load_weights(model, cfg.model)
    return model.eval()


def _to_device(batches: Sequence[torch.Tensor], device: str) -> Iterator[torch.Tensor]:
    for batch in batches:
        yield batch.as_subclass(torch.Tensor).to(device)


def _calibrated(cfg: DictConfig, source: ModelSource, root: Path):
    """Quantize the source's model; load calibration ranges from the cache or calibrate and
    store them. Calibration patches come from ``calibration.split`` (never test).

    Returns:
        ``(qmodel, calibration_seconds, calib_n)``; seconds are 0 on a cache hit.
    """
    spec = quant_spec(cfg)
    qmodel = quant_layer.quantize(source.model, spec).to(cfg.inference.device)
    if is_float(cfg.precision.name):
        return qmodel, 0.0, 0
    calibration = OmegaConf.to_container(cfg.calibration, resolve=True)
    calibration.pop("name", None)
    key = cache.entry_key(
        source.identity,
        OmegaConf.to_container(cfg.data, resolve=True),
        spec.to_dict(),
        calibration,
        source.roi,
    )
    path = root / "ranges" / f"{key}.pt"
    with cache.locked(path):
        if path.is_file():
            try:
                quant_layer.load_ranges(qmodel, path)
                return qmodel, 0.0, int(cfg.calibration.n)
            except Exception as exc:  # a cache entry is derived data: recompute what cannot load
                log.warning("recalibrating: cached ranges %s do not load (%s)", path, exc)
                path.unlink()
        start = time.perf_counter()
        batches = data_layer.calibration_patches(
            source.dataset,
            split=cfg.calibration.split,
            n=int(cfg.calibration.n),
            roi_size=tuple(source.roi),
            seed=int(cfg.calibration.seed),
            batch_size=int(cfg.calibration.batch_size),
        )
        with torch.no_grad():
            quant_layer.calibrate(qmodel, _to_device(batches, cfg.inference.device))
        seconds = time.perf_counter() - start
        tmp = path.with_name(f".{path.name}.tmp")
        quant_layer.save_ranges(qmodel, tmp)
        tmp.replace(path)
    return qmodel, seconds, int(cfg.calibration.n)


def predict(cfg: DictConfig, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Sliding-window class probabilities ``[K, D, H, W]`` of a registry model on its
    preprocessed grid, with the config's inference settings (mirroring included)."""
    return window_probabilities(cfg.inference, model, image, roi_size(cfg), mirroring_axes(cfg))


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


def _score(cfg: DictConfig, case: Any, labels: np.ndarray, probs: torch.Tensor, foreground):
    return metrics_layer.score_case(
        labels,
        case.label,
        spacing_mm=tuple(case.spacing_mm),
        labels=foreground,
        tolerance_mm=float(cfg.evaluation.tolerance_mm),
        probs=probs.numpy() if cfg.evaluation.probability_metrics else None,
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


def _score_cases(cfg, context: RunContext, source: ModelSource, qmodel: nn.Module, fp32_dir: Path):
    """Predict and score each case of ``evaluation.split``; store (FP32) or compare with (not
    FP32) the cached FP32 prediction.

    Returns:
        ``(records, inference_seconds, scoring_seconds)``.
    """
    dataset, floating = source.dataset, cfg.precision.name == "fp32"
    foreground = [int(k) for k in sorted(dataset.labels) if int(k) != 0]
    cases = list(dataset.split(cfg.evaluation.split))
    if cfg.evaluation.max_cases is not None:
        cases = cases[: int(cfg.evaluation.max_cases)]
    records: list[dict[str, Any]] = []
    inference_s = scoring_s = 0.0
    bar = tqdm(cases, desc=context.run_id, unit="case", disable=not cfg.run.progress, leave=False)
    for case_id in bar:
        case = dataset.prepare(case_id)
        start = time.perf_counter()
        probs = source.probabilities(qmodel, case)
        inference_s += time.perf_counter() - start
        start = time.perf_counter()
        pred = source.labels_of(probs, case)
        records += [{"case": case_id, **row} for row in _score(cfg, case, pred, probs, foreground)]
        scoring_s += time.perf_counter() - start
        if cfg.evaluation.save_predictions:
            _save_prediction(context, case, pred)
        if floating:
            path = fp32_dir / f"{case_id}.npz"
            with cache.locked(path):
                if not path.is_file():
                    cache.save_labels(path, pred)
        elif cfg.evaluation.fp32_agreement:
            reference = _fp32_labels(source, fp32_dir, case)
            records += _agreement_rows(case_id, metrics_layer.dice(pred, reference, foreground))
    return records, inference_s, scoring_s


def run_point(cfg: DictConfig, context: RunContext | None = None) -> pd.DataFrame:
    """Evaluate one sweep point and return its tidy rows.

    Steps: open the model source (cases, FP32 network, inference settings); quantize and
    calibrate on ``calibration.n`` patches (ranges cached per model, spec and calibration set);
    predict each scored case (FP32 predictions cached per model, dataset and inference
    settings, so a quantized run is compared with a baseline made exactly as it is made);
    score on the original grid.

    Args:
        cfg: a composed config (validated again here).
        context: run identity and provenance; built from ``cfg`` when omitted.

    Returns:
        One row per case x class x metric with :data:`benchmark.results.ROW_COLUMNS` plus
        ``task``, ``framework``, ``display_name``, ``params_m_counted``, ``dirty``,
        ``package_version``, ``hardware``, the inference settings (``mirroring``, ``overlap``,
        ``roi``, ``fold``, ``training_cases_scored``) and the timings ``calibration_s``,
        ``inference_s``, ``scoring_s``.
    """
    if context is None:
        cfg = validate(cfg)
        context = RunContext.from_config(cfg)
    source = open_source(cfg)
    dataset = source.dataset
    counted_m = models_layer.count_parameters(source.model) / 1e6
    root = cache.cache_root(cfg.paths.cache_dir)
    fp32_dir = fp32_cache_dir(cfg, source)
    qmodel, calibration_s, calib_n = (
        (source.model.to(cfg.inference.device), 0.0, 0)
        if cfg.precision.name == "fp32"
        else _calibrated(cfg, source, root)
    )
    labels = {int(k): str(v) for k, v in dataset.labels.items()}
    records, inference_s, scoring_s = _score_cases(cfg, context, source, qmodel, fp32_dir)
    rows = pd.DataFrame.from_records(records)
    for key in ("case", "class", "metric", "value", "tolerance_mm"):
        if key not in rows.columns:  # no scored case at all
            rows[key] = pd.Series(dtype="float64" if key in ("value", "tolerance_mm") else "object")
    rows["class"] = rows["class"].astype(int)
    # case-level rows (ece_top, brier_mc) carry class CASE_CLASS (-1) and describe no class
    rows["class_name"] = rows["class"].map(labels).fillna("case")
    rows["split"] = cfg.evaluation.split
    rows["dataset"] = cfg.data.name
    # a published parameter count describes the registry's architecture, not a user's folder
    published = cfg.model.published_params_m if source.folder is None else None
    columns = point_columns(
        cfg, context, calib_n=calib_n, params_m=published if published is not None else counted_m
    )
    columns.update(
        source.columns,
        params_m_counted=counted_m,
        calibration_s=calibration_s,
        inference_s=inference_s,
        scoring_s=scoring_s,
    )
    for key, value in columns.items():
        rows[key] = value
    return rows
