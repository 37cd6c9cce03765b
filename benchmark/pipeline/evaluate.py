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
import benchmark.infer as infer_layer
import benchmark.metrics as metrics_layer
import benchmark.models as models_layer
import benchmark.quant as quant_layer
from benchmark.config import is_float, validate
from benchmark.pipeline import cache
from benchmark.pipeline.context import RunContext, point_columns

__all__ = ["FP32_AGREEMENT_METRIC", "load_model", "predict", "quant_spec", "roi_size", "run_point"]

log = logging.getLogger(__name__)

#: Metric id of the DSC between a run's prediction and the FP32 model's prediction.
FP32_AGREEMENT_METRIC = "dsc_fp32"


def roi_size(cfg: DictConfig) -> list[int]:
    """Sliding-window and calibration patch size: ``inference.roi_size`` or the model's."""
    roi = cfg.inference.roi_size if cfg.inference.roi_size is not None else cfg.model.patch_size
    return [int(v) for v in roi]


def quant_spec(cfg: DictConfig) -> Any:
    """The :class:`benchmark.quant.QuantSpec` of a config.

    ``precision``/``granularity``/``observer`` names map to the fields of the same name; the
    observer group's other fields and ``quant.*`` go to the QuantSpec fields of the same name
    (observer fields QuantSpec does not have are left out; ``quant.*`` keys must exist).
    """
    spec_cls = quant_layer.QuantSpec
    names = {f.name for f in dataclasses.fields(spec_cls)}
    kwargs: dict[str, Any] = {"precision": cfg.precision.name}
    if not is_float(cfg.precision.name):
        kwargs["granularity"] = cfg.granularity.name
        kwargs["observer"] = cfg.observer.name
        for key, value in cfg.observer.items():
            if key != "name" and key in names:
                kwargs[key] = value
    extra = OmegaConf.to_container(cfg.quant, resolve=True)
    unknown = sorted(set(extra) - names)
    if unknown:
        raise ValueError(f"quant.{unknown[0]} is not a QuantSpec field; fields: {sorted(names)}")
    kwargs.update(extra)
    return spec_cls(**kwargs)


def _model_identity(cfg: DictConfig) -> dict[str, Any]:
    """What determines the network's weights: its config plus the checkpoint file's identity."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    checkpoint = cfg.model.checkpoint
    if checkpoint is None:
        weights: Any = {"random_init_seed": int(cfg.seed)}
    else:
        path = (
            models_layer.shipped_weights_path(cfg.model.name)
            if checkpoint == "shipped"
            else Path(checkpoint)
        )
        weights = cache.checkpoint_fingerprint(path)
    return {"model": model_cfg, "weights": weights}


def load_model(cfg: DictConfig, dataset: Any) -> nn.Module:
    """The config's network for ``dataset``'s channels and classes, with its checkpoint loaded."""
    torch.manual_seed(int(cfg.seed))  # random-init models (checkpoint: null) are reproducible
    model = models_layer.build_model(cfg.model, dataset.in_channels, dataset.num_classes)
    if cfg.model.checkpoint is not None:
        model = models_layer.load_weights(model, cfg.model)
    return model.eval()


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """Drop tensor subclasses (MONAI's MetaTensor): their metadata would otherwise travel into
    observed ranges and saved files, which ``torch.load(weights_only=True)`` refuses."""
    return tensor.as_subclass(torch.Tensor)


def _to_device(batches: Sequence[torch.Tensor], device: str) -> Iterator[torch.Tensor]:
    for batch in batches:
        yield _plain(batch).to(device)


def _calibrated(cfg: DictConfig, model: nn.Module, dataset: Any, identity: dict, root: Path):
    """Quantize ``model``; load calibration ranges from the cache or calibrate and store them.

    Returns:
        ``(qmodel, calibration_seconds, calib_n)``; seconds are 0 on a cache hit.
    """
    spec = quant_spec(cfg)
    qmodel = quant_layer.quantize(model, spec).to(cfg.inference.device)
    if is_float(cfg.precision.name):
        return qmodel, 0.0, 0
    calibration = OmegaConf.to_container(cfg.calibration, resolve=True)
    calibration.pop("name", None)
    key = cache.entry_key(
        identity,
        OmegaConf.to_container(cfg.data, resolve=True),
        spec.to_dict(),
        calibration,
        roi_size(cfg),
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
            dataset,
            split=cfg.calibration.split,
            n=int(cfg.calibration.n),
            roi_size=tuple(roi_size(cfg)),
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
    """Sliding-window class probabilities ``[K, D, H, W]`` with the config's inference settings."""
    inf = cfg.inference
    return infer_layer.predict_probabilities(
        model,
        _plain(image),
        roi_size(cfg),
        overlap=float(inf.overlap),
        sw_batch_size=int(inf.sw_batch_size),
        device=inf.device,
        amp=bool(inf.amp),
        mode=inf.mode,
    )


def _fp32_labels(cfg, fp32_dir: Path, case: Any, fp32_model: nn.Module | None) -> np.ndarray:
    """FP32 prediction of a case on its original grid, from the cache or computed and stored."""
    path = fp32_dir / f"{case.case_id}.npz"
    with cache.locked(path):
        if path.is_file():
            return cache.load_labels(path)
        probs = case.restore(predict(cfg, fp32_model.to(cfg.inference.device), case.image))
        labels = probs.argmax(0).numpy()
        cache.save_labels(path, labels)
        return labels


def run_point(cfg: DictConfig, context: RunContext | None = None) -> pd.DataFrame:
    """Evaluate one sweep point and return its tidy rows.

    Steps: open the dataset and build the model with its weights; quantize and calibrate on
    ``calibration.n`` ROI-size patches (ranges cached per model, spec and calibration set);
    predict each scored case with sliding windows (FP32 predictions cached per model, dataset
    and inference settings); restore probabilities to the original grid and score there.

    Args:
        cfg: a composed config (validated again here).
        context: run identity and provenance; built from ``cfg`` when omitted.

    Returns:
        One row per case x class x metric with :data:`benchmark.results.ROW_COLUMNS` plus
        ``task``, ``framework``, ``display_name``, ``params_m_counted``, ``dirty``,
        ``package_version``, ``hardware`` and the timings ``calibration_s``, ``inference_s``,
        ``scoring_s``.
    """
    if context is None:
        cfg = validate(cfg)
        context = RunContext.from_config(cfg)
    dataset = data_layer.open_dataset(cfg.data)
    model = load_model(cfg, dataset)
    counted_m = models_layer.count_parameters(model) / 1e6
    identity = _model_identity(cfg)
    root = cache.cache_root(cfg.paths.cache_dir)
    inference_key = OmegaConf.to_container(cfg.inference, resolve=True)
    inference_key.pop("name", None)
    inference_key["roi_size"] = roi_size(cfg)
    fp32_dir = (
        root
        / "fp32"
        / cache.entry_key(identity, OmegaConf.to_container(cfg.data, resolve=True), inference_key)
    )
    floating = cfg.precision.name == "fp32"

    qmodel, calibration_s, calib_n = (
        (model.to(cfg.inference.device), 0.0, 0)
        if floating
        else _calibrated(cfg, model, dataset, identity, root)
    )
    labels = {int(k): str(v) for k, v in dataset.labels.items()}
    foreground = [k for k in sorted(labels) if k != 0]
    cases = list(dataset.split(cfg.evaluation.split))
    if cfg.evaluation.max_cases is not None:
        cases = cases[: int(cfg.evaluation.max_cases)]
    records: list[dict[str, Any]] = []
    inference_s = scoring_s = 0.0
    bar = tqdm(cases, desc=context.run_id, unit="case", disable=not cfg.run.progress, leave=False)
    for case_id in bar:
        case = dataset.prepare(case_id)
        start = time.perf_counter()
        probs = predict(cfg, qmodel, case.image)
        inference_s += time.perf_counter() - start
        start = time.perf_counter()
        restored = case.restore(probs)
        pred = restored.argmax(0).numpy()
        scores = metrics_layer.score_case(
            pred,
            case.label,
            spacing_mm=tuple(case.spacing_mm),
            labels=foreground,
            tolerance_mm=float(cfg.evaluation.tolerance_mm),
            probs=restored.numpy() if cfg.evaluation.probability_metrics else None,
        )
        records += [{"case": case_id, **row} for row in scores]
        scoring_s += time.perf_counter() - start
        if floating:
            path = fp32_dir / f"{case_id}.npz"
            with cache.locked(path):
                if not path.is_file():
                    cache.save_labels(path, pred)
        elif cfg.evaluation.fp32_agreement:
            reference = _fp32_labels(cfg, fp32_dir, case, model)
            agreement = metrics_layer.dice(pred, reference, foreground)
            records += [
                {
                    "case": case_id,
                    "class": k,
                    "metric": FP32_AGREEMENT_METRIC,
                    "value": v,
                    "tolerance_mm": np.nan,
                }
                for k, v in agreement.items()
            ]
    rows = pd.DataFrame.from_records(records)
    for key in ("case", "class", "metric", "value", "tolerance_mm"):
        if key not in rows.columns:  # no scored case at all
            rows[key] = pd.Series(dtype="float64" if key in ("value", "tolerance_mm") else "object")
    rows["class"] = rows["class"].astype(int)
    # case-level rows (ece_top, brier_mc) carry class CASE_CLASS (-1) and describe no class
    rows["class_name"] = rows["class"].map(labels).fillna("case")
    rows["split"] = cfg.evaluation.split
    rows["dataset"] = cfg.data.name
    published = cfg.model.published_params_m
    columns = point_columns(
        cfg, context, calib_n=calib_n, params_m=published if published is not None else counted_m
    )
    columns.update(
        params_m_counted=counted_m,
        calibration_s=calibration_s,
        inference_s=inference_s,
        scoring_s=scoring_s,
    )
    for key, value in columns.items():
        rows[key] = value
    return rows
