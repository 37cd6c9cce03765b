"""FP32 baselines for results that hold quantized runs only, from the cached FP32 predictions.

Every quantized evaluation run stores the FP32 network's label map of each case it scores
(``evaluation.fp32_agreement``), keyed by model (config and weights), data config and inference
settings. A results folder without the FP32 run therefore still determines the baseline: the
cached label maps, scored against the dataset's ground truth with the run's own metric settings,
give exactly the rows the FP32 run would have written. When that is not possible (no run config
beside the results, nothing cached, cases missing), the reason is returned together with the
command that adds the FP32 run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

import benchmark.data as data_layer
import benchmark.metrics as metrics_layer
from benchmark.points import cache
from benchmark.points.records import point_from_yaml
from benchmark.points.sources import fp32_cache_dir
from benchmark.report.table import CACHED_BASELINE_PREFIX
from benchmark.schema import RunPoint

__all__ = ["cached_baselines", "fp32_command", "missing_baselines"]

_GROUP = ["model", "dataset", "split"]
#: Columns copied from the quantized run onto the baseline rows.
_MODEL_COLUMNS = ["experiment", "model", "family", "framework", "display_name", "params_m"]
_FP32_POINT = {
    "task": "evaluate",
    "precision": "fp32",
    "w_bits": 32,
    "a_bits": 32,
    "granularity": "none",
    "observer": "none",
    "algorithm": "none",
    "calib_n": 0,
}


def _evaluation_rows(results: pd.DataFrame) -> pd.DataFrame:
    rows = results[results["metric"] == "dsc"]
    if "task" in rows.columns:
        rows = rows[rows["task"].fillna("evaluate") == "evaluate"]
    for column in ("mode", "backend"):
        if column in rows.columns:
            rows = rows[rows[column].isna()]
    return rows


def missing_baselines(results: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(model, dataset, split) groups with evaluation runs but no FP32 run."""
    rows = _evaluation_rows(results)
    if rows.empty or not set(_GROUP) <= set(rows.columns):
        return []
    has_fp32 = rows.groupby(_GROUP)["precision"].agg(lambda p: "fp32" in set(p))
    return [key for key, present in has_fp32.items() if not present]


def fp32_command(cfg: RunPoint | None, model: str, dataset: str, split: str) -> str:
    """The command that adds the FP32 run beside a quantized run of ``cfg`` (or of ``model``)."""
    if cfg is None:
        return (
            f"python -m benchmark.run model={model} data={dataset} precision=fp32 "
            f"granularity=none evaluation.split={split} (with the quantized runs' other settings)"
        )
    parts = [
        f"model={cfg.model.name}",
        f"data={cfg.data.name}",
        f"inference={cfg.inference.name}",
        "precision=fp32",
        "granularity=none",
        f"experiment_name={cfg.experiment}",
    ]
    if cfg.evaluation.split != "test":
        parts.append(f"evaluation.split={cfg.evaluation.split}")
    if cfg.evaluation.max_cases is not None:
        parts.append(f"evaluation.max_cases={cfg.evaluation.max_cases}")
    return "python -m benchmark.run " + " ".join(parts)


def _score_cached(cfg: RunPoint, folder: Path, cases: list[str]) -> pd.DataFrame:
    """Tidy DSC/NSD/HD95 rows of the cached FP32 label maps in ``folder`` (one per case)."""
    dataset = data_layer.open_dataset(cfg.data)
    labels = {int(k): str(v) for k, v in dataset.labels.items()}
    foreground = [k for k in sorted(labels) if k != 0]
    records: list[dict[str, Any]] = []
    for case_id in cases:
        case = dataset.prepare(case_id)
        scores = metrics_layer.score_case(
            cache.load_labels(folder / f"{case_id}.npz"),
            case.label,
            spacing_mm=tuple(case.spacing_mm),
            labels=foreground,
            tolerance_mm=float(cfg.evaluation.tolerance_mm),
        )
        records += [{"case": case_id, **row} for row in scores]
    rows = pd.DataFrame.from_records(records)
    rows["class_name"] = rows["class"].map(labels)
    return rows


def _baseline_for(
    results: pd.DataFrame, runs_dir: Path, group: tuple[str, str, str]
) -> tuple[pd.DataFrame | None, str]:
    """Baseline rows of one (model, dataset, split) group and a sentence on where they came
    from, or ``None`` and the reason there are none."""
    model, dataset, split = group
    rows = _evaluation_rows(results)
    rows = rows[(rows["model"] == model) & (rows["dataset"] == dataset) & (rows["split"] == split)]
    configs = [runs_dir / f"{r}.yaml" for r in dict.fromkeys(rows["run_id"])]
    config_file = next((p for p in configs if p.is_file()), None)
    where = f"{model} on {dataset}/{split}"
    if config_file is None:
        return None, (
            f"no FP32 run of {where} and no run config ({runs_dir}/<run_id>.yaml) to find its "
            f"cached FP32 predictions; drops need the baseline: {fp32_command(None, *group)}"
        )
    cfg = point_from_yaml(config_file.read_text(), run_id=config_file.stem)
    command = fp32_command(cfg, *group)
    run_rows = rows[rows["run_id"] == config_file.stem]
    cases = sorted(run_rows["case"].astype(str).unique())
    try:
        folder = fp32_cache_dir(cfg)
    except Exception as exc:  # a checkpoint gone, or a run config older than today's keys
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return None, (
            f"no FP32 run of {where}, and its cached FP32 predictions cannot be located from "
            f"{config_file} ({reason}); add the baseline with: {command}"
        )
    cached = [c for c in cases if (folder / f"{c}.npz").is_file()]
    if len(cached) < len(cases):
        return None, (
            f"no FP32 run of {where}; the FP32 prediction cache {folder} holds {len(cached)} of "
            f"its {len(cases)} cases (evaluation.fp32_agreement=false, a cleared cache, or other "
            f"weights since); add the baseline with: {command}"
        )
    try:
        scored = _score_cached(cfg, folder, cases)
    except Exception as exc:  # reported with the command to run instead, never hidden
        return None, f"cannot score the cached FP32 predictions of {where} ({exc}); run {command}"
    template = run_rows.iloc[0]
    baseline = scored.assign(
        **{c: template[c] for c in _MODEL_COLUMNS if c in run_rows.columns},
        dataset=dataset,
        split=split,
        run_id=f"{CACHED_BASELINE_PREFIX}{folder.name}",
        **_FP32_POINT,
    )
    return baseline, (
        f"FP32 baseline of {where}: {len(cases)} cached FP32 predictions ({folder}) scored "
        "against the ground truth (no FP32 run in the results)"
    )


def cached_baselines(
    results: pd.DataFrame, results_dir: str | Path
) -> tuple[pd.DataFrame, list[str]]:
    """FP32 rows for every group of ``results`` that lacks them, scored from the FP32 cache.

    Args:
        results: tidy rows.
        results_dir: the experiment folder (its ``runs/<run_id>.yaml`` give each run's config).

    Returns:
        ``(rows, notes)``: tidy FP32 rows (empty when none could be made; their ``run_id``
        starts with :data:`~benchmark.report.table.CACHED_BASELINE_PREFIX`) and one sentence per
        group saying where its baseline came from or why there is none and what to run.
    """
    frames, notes = [], []
    for group in missing_baselines(results):
        rows, note = _baseline_for(results, Path(results_dir) / "runs", group)
        notes.append(note)
        if rows is not None:
            frames.append(rows)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), notes
