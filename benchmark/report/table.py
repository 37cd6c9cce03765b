"""The published table layout from tidy rows: one line per model x quantization point.

Columns as in MedQuanBench: framework, architecture, category, params (M), precision,
granularity, DSC (Δ%) and NSD (Δ%), where a cell reads ``0.387 (55.6%)``: the mean score and
its relative drop from the same model's FP32 run (``↑`` marks an increase). Scores are averaged
over foreground classes within each case, then over cases. Axes that vary inside a sweep besides
precision and granularity (observer, algorithm, calibration size, and any other field of the
quantization spec, e.g. ``act_mapping`` or ``keep_first_last``) get columns of their own, so two
runs never print as identical-looking lines. The algorithm is shown wherever one is not
``none``, with the calibration seconds it cost (as measured when it was computed). With
``calibration``, the case-level ECE and Brier score sit beside DSC and NSD with their change from
FP32, since quantization can shift probability calibration where accuracy hides it.
:func:`numeric_table` holds the same lines as numbers, one per column, for CSV.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.metrics import format_with_drop, paired_bootstrap, relative_drop
from benchmark.report.settings import (
    POINT_KEYS,
    SPEC_KEYS,
    point_keys,
    setting_text,
    varying_settings,
)

__all__ = [
    "CACHED_BASELINE_PREFIX",
    "GRANULARITY_NAMES",
    "case_scores",
    "make_table",
    "numeric_table",
    "published_columns",
    "published_numbers",
    "read_published",
    "run_lines",
    "run_means",
    "sort_runs",
]

#: ``run_id`` prefix of FP32 rows scored from cached FP32 predictions (:mod:`.baseline`).
CACHED_BASELINE_PREFIX = "fp32-cache-"

GRANULARITY_NAMES = {
    "none": "–",
    "per_tensor": "Per-tensor",
    "per_channel_token": "Per-channel/token",
    "per_channel_weights": "Per-channel weights",
    "adaptive": "Adaptive",
}
_CATEGORY = {"cnn": "CNN", "hybrid": "Hybrid", "transformer": "Transformer"}
_FLOAT_ORDER = {"fp32": 0, "fp16": 1, "bf16": 2}
_MODEL_KEYS = ["framework", "display_name", "family", "params_m", "model", "dataset", "split"]
_OPTIONAL_AXES = {"observer": "Observer", "algorithm": "Algorithm", "calib_n": "Calib. N"}
#: case-level probability-calibration metrics (one value per case) and their column titles
_CALIBRATION_METRICS = {"ece_top": "ECE", "brier_mc": "Brier"}


def case_scores(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per run x case score: the mean of ``metric`` over foreground classes (NaN-skipping).

    Returns:
        Columns ``_MODEL_KEYS + POINT_KEYS``, the spec fields the rows carry, ``run_id``,
        ``case``, ``value``.
    """
    rows = results[(results["metric"] == metric) & (results["class"] > 0)]
    for key in _MODEL_KEYS + POINT_KEYS:
        if key not in rows.columns:
            rows = rows.assign(**{key: None})
    keys = _MODEL_KEYS + point_keys(rows) + ["run_id", "case"]
    return rows.groupby(keys, dropna=False, sort=False)["value"].mean().reset_index()


def run_means(results: pd.DataFrame, metrics: tuple[str, ...] = ("dsc", "nsd")) -> pd.DataFrame:
    """Mean over cases of :func:`case_scores` per run, one column per metric."""
    frames = []
    for metric in metrics:
        per_case = case_scores(results, metric)
        keys = _MODEL_KEYS + point_keys(per_case) + ["run_id"]
        mean = per_case.groupby(keys, dropna=False, sort=False)["value"].mean().rename(metric)
        frames.append(mean)
    return pd.concat(frames, axis=1).reset_index()


def _precision_rank(row: pd.Series) -> tuple:
    if row["precision"] in _FLOAT_ORDER:
        return (0, _FLOAT_ORDER[row["precision"]], 0)
    return (1, -int(row["w_bits"]), -int(row["a_bits"]))


def _algorithm_rank(algorithm: object) -> tuple[int, str]:
    """Round to nearest first, then its tuned form, then the methods by name."""
    name = str(algorithm)
    return ({"none": 0, "tuned_rtn": 1}.get(name, 2), name)


def sort_runs(means: pd.DataFrame) -> pd.DataFrame:
    """Rows in the published order: category, size, architecture, then precision and granularity."""
    gran = {g: i for i, g in enumerate(GRANULARITY_NAMES)}
    fam = {f: i for i, f in enumerate(_CATEGORY)}
    key = means.apply(
        lambda r: (
            fam.get(r["family"], 9),
            r["params_m"] if not pd.isna(r["params_m"]) else math.inf,
            r["display_name"],
            r["dataset"],
            *_precision_rank(r),
            gran.get(r["granularity"], 9),
            str(r["observer"]),
            *_algorithm_rank(r["algorithm"]),
            r["calib_n"],
        ),
        axis=1,
    )
    return means.assign(_key=key).sort_values("_key").drop(columns="_key").reset_index(drop=True)


def read_published(path: str | Path) -> pd.DataFrame:
    """Read a published-figures CSV (columns framework, architecture, category, params_M,
    precision, granularity, dsc, nsd) with granularity names mapped to ours
    (``per_channel`` -> ``per_channel_token``)."""
    published = pd.read_csv(path)
    published["granularity"] = published["granularity"].replace(
        {"per_channel": "per_channel_token"}
    )
    return published


def published_columns(means: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Published DSC/NSD cells (with their own Δ% from the published FP32) for each run line,
    matched on architecture display name, precision and granularity; empty when absent."""
    base = published[published["precision"] == "fp32"].set_index("architecture")
    lookup = published.set_index(["architecture", "precision", "granularity"])
    cells: dict[str, list[str]] = {"Published DSC (Δ%)": [], "Published NSD (Δ%)": []}
    for _, row in means.iterrows():
        key = (row["display_name"], row["precision"], row["granularity"])
        for metric, column in (("dsc", "Published DSC (Δ%)"), ("nsd", "Published NSD (Δ%)")):
            if key not in lookup.index:
                cells[column].append("")
                continue
            value = float(lookup.loc[key, metric])
            if row["precision"] == "fp32" or row["display_name"] not in base.index:
                cells[column].append(f"{value:.3f}")
            else:
                cells[column].append(
                    format_with_drop(value, float(base.loc[row["display_name"], metric]))
                )
    return pd.DataFrame(cells, index=means.index)


def _bootstrap(
    results: pd.DataFrame, metric: str, run_id: str, fp32_run: str | None, seed: int
) -> tuple[float, float]:
    """95% paired-bootstrap CI (over cases) of the run's score minus its FP32 score.

    ``(nan, nan)`` for a baseline itself, a run without baseline, or too few paired cases.
    """
    if fp32_run is None or run_id == fp32_run:
        return math.nan, math.nan
    scores = case_scores(results[results["run_id"].isin([run_id, fp32_run])], metric)
    a = scores[scores["run_id"] == run_id].set_index("case")["value"]
    b = scores[scores["run_id"] == fp32_run].set_index("case")["value"]
    common = sorted(set(a.index) & set(b.index))
    try:
        result = paired_bootstrap(a[common].to_dict(), b[common].to_dict(), seed=seed)
    except ValueError:
        return math.nan, math.nan
    return result.ci_low, result.ci_high


def run_lines(
    results: pd.DataFrame, ci: bool = False, seed: int = 0, calibration: bool = False
) -> pd.DataFrame:
    """One row per run in the published order, as numbers.

    Returns:
        :func:`run_means` columns plus, per metric ``m`` in (dsc, nsd): ``m_drop_pct`` (relative
        drop from the same model's FP32 run in percent, negative for an increase, NaN on the
        FP32 line itself or without a baseline) and, with ``ci``, ``m_delta_ci_low`` /
        ``m_delta_ci_high`` (95% paired-bootstrap CI over cases of run minus FP32, in score
        units); and ``baseline_run_id``, the FP32 run the drops are taken from. With
        ``calibration``, per metric ``c`` in (ece_top, brier_mc) the mean over cases ``c`` and
        ``c_delta``, run minus FP32 (lower is better for both).
    """
    means = sort_runs(run_means(results))
    fp32 = means[means["precision"] == "fp32"].drop_duplicates(["model", "dataset", "split"])
    base = fp32.set_index(["model", "dataset", "split"])
    keys = list(zip(means["model"], means["dataset"], means["split"], strict=True))
    lines = means.copy()
    if "calibration_s" in results.columns:
        seconds = results.groupby("run_id")["calibration_s"].first()
        lines["calibration_s"] = lines["run_id"].map(seconds)
    lines["baseline_run_id"] = [base.loc[k, "run_id"] if k in base.index else None for k in keys]
    for metric in ("dsc", "nsd"):
        reference = np.array(
            [float(base.loc[k, metric]) if k in base.index else math.nan for k in keys]
        )
        drop = np.asarray(relative_drop(means[metric].to_numpy(float), reference), dtype=float)
        lines[f"{metric}_drop_pct"] = np.where(means["precision"] == "fp32", math.nan, drop)
        if ci:
            bounds = [
                _bootstrap(results, metric, run, fp32_run, seed)
                for run, fp32_run in zip(means["run_id"], lines["baseline_run_id"], strict=True)
            ]
            lines[f"{metric}_delta_ci_low"] = [b[0] for b in bounds]
            lines[f"{metric}_delta_ci_high"] = [b[1] for b in bounds]
    if calibration:
        rows = results[results["metric"].isin(list(_CALIBRATION_METRICS))]
        per_run = rows.groupby(["run_id", "metric"])["value"].mean().unstack()
        for metric in _CALIBRATION_METRICS:
            column = per_run[metric] if metric in per_run.columns else pd.Series(dtype=float)
            lines[metric] = lines["run_id"].map(column)
            delta = lines[metric] - lines["baseline_run_id"].map(column)
            lines[f"{metric}_delta"] = np.where(lines["precision"] == "fp32", math.nan, delta)
    return lines


def _precision_text(precision: str, run_id: object) -> str:
    cached = isinstance(run_id, str) and run_id.startswith(CACHED_BASELINE_PREFIX)
    return precision.upper() + (" (cached)" if cached else "")


def make_table(
    results: pd.DataFrame,
    ci: bool = False,
    published: pd.DataFrame | None = None,
    seed: int = 0,
    calibration: bool = False,
) -> pd.DataFrame:
    """The published layout of a results table.

    Args:
        results: tidy rows (one or more runs; other metrics are ignored).
        ci: add ``ΔDSC 95% CI`` / ``ΔNSD 95% CI`` columns: paired bootstrap over cases of
            (quantized - FP32) mean-over-classes scores.
        published: published figures (:func:`read_published`) to show side by side.
        seed: bootstrap seed.
        calibration: add ``ECE (Δ)`` / ``Brier (Δ)``: case-level means and run minus FP32.

    Returns:
        A DataFrame of display strings, one line per run, FP32 first within each model.
    """
    lines = run_lines(results, ci=ci, seed=seed, calibration=calibration)
    table = pd.DataFrame(
        {
            "Framework": lines["framework"],
            "Architecture": lines["display_name"],
            "Category": lines["family"].map(_CATEGORY).fillna(lines["family"]),
            "Params (M)": lines["params_m"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}"),
            "Precision": [
                _precision_text(p, r)
                for p, r in zip(lines["precision"], lines["run_id"], strict=True)
            ],
            "Granularity": lines["granularity"].map(GRANULARITY_NAMES).fillna(lines["granularity"]),
        }
    )
    axes = _varying_axes(lines)
    shown = setting_text(lines)
    for key, title in axes.items():
        table[title] = [
            "–" if p in _FLOAT_ORDER else v
            for p, v in zip(lines["precision"], shown[key], strict=True)
        ]
    if "algorithm" in axes and "calibration_s" in lines.columns:
        table["Calib. (s)"] = [
            "–" if p in _FLOAT_ORDER or pd.isna(v) else f"{v:.0f}"
            for p, v in zip(lines["precision"], lines["calibration_s"], strict=True)
        ]
    for metric in ("dsc", "nsd"):
        table[f"{metric.upper()} (Δ%)"] = [
            _score_cell(value, drop)
            for value, drop in zip(lines[metric], lines[f"{metric}_drop_pct"], strict=True)
        ]
    for metric, title in (_CALIBRATION_METRICS if calibration else {}).items():
        table[f"{title} (Δ)"] = [
            "nan" if pd.isna(v) else f"{v:.4f}" + ("" if pd.isna(d) else f" ({d:+.4f})")
            for v, d in zip(lines[metric], lines[f"{metric}_delta"], strict=True)
        ]
    if ci:
        for metric in ("dsc", "nsd"):
            low, high = lines[f"{metric}_delta_ci_low"], lines[f"{metric}_delta_ci_high"]
            table[f"Δ{metric.upper()} 95% CI"] = [
                _ci_cell(lo, hi, run, fp32_run)
                for lo, hi, run, fp32_run in zip(
                    low, high, lines["run_id"], lines["baseline_run_id"], strict=True
                )
            ]
    if published is not None:
        table = pd.concat([table, published_columns(lines, published)], axis=1)
    return table.replace({np.nan: ""})


def _varying_axes(lines: pd.DataFrame) -> dict[str, str]:
    """Sweep axes besides precision and granularity that vary among the quantized runs, and
    the algorithm wherever a quantized run has one."""
    quantized = lines[~lines["precision"].isin(list(_FLOAT_ORDER))]
    axes = {**_OPTIONAL_AXES, **{k: k for k in SPEC_KEYS if k in lines.columns}}
    varying = varying_settings(quantized, list(axes))
    with_algorithm = bool((quantized["algorithm"].astype(str) != "none").any())
    return {k: t for k, t in axes.items() if k in varying or (k == "algorithm" and with_algorithm)}


def _score_cell(value: float, drop_pct: float) -> str:
    """``0.387 (55.6%)``, ``0.881 (1.0%↑)`` after an increase, the bare score without a drop."""
    if pd.isna(value):
        return "nan"
    if pd.isna(drop_pct):
        return f"{value:.3f}"
    return f"{value:.3f} ({-drop_pct:.1f}%↑)" if drop_pct < 0 else f"{value:.3f} ({drop_pct:.1f}%)"


def _ci_cell(low: float, high: float, run_id: str, fp32_run: str | None) -> str:
    if fp32_run is None or run_id == fp32_run:
        return ""
    return "n/a" if pd.isna(low) else f"[{low:+.3f}, {high:+.3f}]"


#: Columns of :func:`numeric_table` taken from :func:`run_lines`, renamed where shown.
_NUMERIC_COLUMNS = {
    "framework": "framework",
    "display_name": "architecture",
    "model": "model",
    "family": "category",
    "params_m": "params_m",
    "dataset": "dataset",
    "split": "split",
    "precision": "precision",
    "w_bits": "w_bits",
    "a_bits": "a_bits",
    "granularity": "granularity",
    "observer": "observer",
    "algorithm": "algorithm",
    "calib_n": "calib_n",
}


def numeric_table(
    results: pd.DataFrame,
    ci: bool = False,
    published: pd.DataFrame | None = None,
    seed: int = 0,
    calibration: bool = False,
) -> pd.DataFrame:
    """The table for machines (CSV): the lines of :func:`make_table` with one number per column.

    Scores in 0-1; ``*_drop_pct``: relative drop from the model's FP32 run in percent (negative
    for an increase, empty on the FP32 line); ``*_delta_ci_low/high`` (with ``ci``): 95% CI of
    run minus FP32 in score units; ``published_*`` likewise for the published figures.
    ``run_id`` and ``baseline_run_id`` name the run and the FP32 run it is compared with.
    """
    lines = run_lines(results, ci=ci, seed=seed, calibration=calibration)
    table = lines[list(_NUMERIC_COLUMNS)].rename(columns=_NUMERIC_COLUMNS)
    if "calibration_s" in lines.columns:  # rows written before the column carry none
        table["calibration_s"] = lines["calibration_s"]
    table["run_id"] = lines["run_id"]
    table["baseline_run_id"] = lines["baseline_run_id"]
    metric_columns = [
        f"{m}{suffix}"
        for m in ("dsc", "nsd")
        for suffix in ("", "_drop_pct", *(("_delta_ci_low", "_delta_ci_high") if ci else ()))
    ]
    if calibration:
        metric_columns += [
            f"{m}{suffix}" for m in _CALIBRATION_METRICS for suffix in ("", "_delta")
        ]
    table = pd.concat([table, lines[metric_columns]], axis=1)
    if published is not None:
        table = pd.concat([table, published_numbers(lines, published)], axis=1)
    return table


def published_numbers(lines: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """``published_dsc``, ``published_dsc_drop_pct``, ``published_nsd``, ... per run line
    (NaN where the published figures have no such line)."""
    base = published[published["precision"] == "fp32"].set_index("architecture")
    lookup = published.set_index(["architecture", "precision", "granularity"])
    columns: dict[str, list[float]] = {}
    for metric in ("dsc", "nsd"):
        values, drops = [], []
        for _, row in lines.iterrows():
            key = (row["display_name"], row["precision"], row["granularity"])
            value = float(lookup.loc[key, metric]) if key in lookup.index else math.nan
            has_base = row["precision"] != "fp32" and row["display_name"] in base.index
            baseline = float(base.loc[row["display_name"], metric]) if has_base else math.nan
            values.append(value)
            drops.append(float(relative_drop(value, baseline)))
        columns[f"published_{metric}"] = values
        columns[f"published_{metric}_drop_pct"] = drops
    return pd.DataFrame(columns, index=lines.index)
