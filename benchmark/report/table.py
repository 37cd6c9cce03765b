"""The published table layout from tidy rows: one line per model x quantization point.

Columns as in MedQuanBench: framework, architecture, category, params (M), precision,
granularity, DSC (Δ%) and NSD (Δ%), where a cell reads ``0.387 (55.6%)``: the mean score and
its relative drop from the same model's FP32 run (``↑`` marks an increase). Scores are averaged
over foreground classes within each case, then over cases. Axes that vary inside a sweep besides
precision and granularity (observer, algorithm, calibration size) get columns of their own.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.metrics import format_with_drop, paired_bootstrap

__all__ = [
    "GRANULARITY_NAMES",
    "make_table",
    "sort_runs",
    "published_columns",
    "read_published",
    "run_means",
    "case_scores",
]

GRANULARITY_NAMES = {
    "none": "–",
    "per_tensor": "Per-tensor",
    "per_channel_token": "Per-channel/token",
    "adaptive": "Adaptive",
}
_CATEGORY = {"cnn": "CNN", "hybrid": "Hybrid", "transformer": "Transformer"}
_FLOAT_ORDER = {"fp32": 0, "fp16": 1, "bf16": 2}
_MODEL_KEYS = ["framework", "display_name", "family", "params_m", "model", "dataset", "split"]
_POINT_KEYS = ["precision", "w_bits", "a_bits", "granularity", "observer", "algorithm", "calib_n"]
_OPTIONAL_AXES = {"observer": "Observer", "algorithm": "Algorithm", "calib_n": "Calib. N"}


def case_scores(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per run x case score: the mean of ``metric`` over foreground classes (NaN-skipping).

    Returns:
        Columns ``_MODEL_KEYS + _POINT_KEYS + ["run_id", "case", "value"]``.
    """
    rows = results[(results["metric"] == metric) & (results["class"] > 0)]
    for key in _MODEL_KEYS + _POINT_KEYS:
        if key not in rows.columns:
            rows = rows.assign(**{key: None})
    keys = _MODEL_KEYS + _POINT_KEYS + ["run_id", "case"]
    return rows.groupby(keys, dropna=False, sort=False)["value"].mean().reset_index()


def run_means(results: pd.DataFrame, metrics: tuple[str, ...] = ("dsc", "nsd")) -> pd.DataFrame:
    """Mean over cases of :func:`case_scores` per run, one column per metric."""
    frames = []
    for metric in metrics:
        per_case = case_scores(results, metric)
        keys = _MODEL_KEYS + _POINT_KEYS + ["run_id"]
        mean = per_case.groupby(keys, dropna=False, sort=False)["value"].mean().rename(metric)
        frames.append(mean)
    return pd.concat(frames, axis=1).reset_index()


def _precision_rank(row: pd.Series) -> tuple:
    if row["precision"] in _FLOAT_ORDER:
        return (0, _FLOAT_ORDER[row["precision"]], 0)
    return (1, -int(row["w_bits"]), -int(row["a_bits"]))


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
            str(r["algorithm"]),
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


def _bootstrap_cell(
    results: pd.DataFrame, metric: str, run: pd.Series, fp32_run: str | None, seed: int
) -> str:
    """95% paired-bootstrap CI (over cases) of the run's score minus its FP32 score."""
    if fp32_run is None or run["run_id"] == fp32_run:
        return ""
    scores = case_scores(results[results["run_id"].isin([run["run_id"], fp32_run])], metric)
    a = scores[scores["run_id"] == run["run_id"]].set_index("case")["value"]
    b = scores[scores["run_id"] == fp32_run].set_index("case")["value"]
    common = sorted(set(a.index) & set(b.index))
    try:
        result = paired_bootstrap(a[common].to_dict(), b[common].to_dict(), seed=seed)
    except ValueError:
        return "n/a"
    return f"[{result.ci_low:+.3f}, {result.ci_high:+.3f}]"


def make_table(
    results: pd.DataFrame,
    ci: bool = False,
    published: pd.DataFrame | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The published layout of a results table.

    Args:
        results: tidy rows (one or more runs; other metrics are ignored).
        ci: add ``ΔDSC 95% CI`` / ``ΔNSD 95% CI`` columns: paired bootstrap over cases of
            (quantized - FP32) mean-over-classes scores.
        published: published figures (:func:`read_published`) to show side by side.
        seed: bootstrap seed.

    Returns:
        A DataFrame of display strings, one line per run, FP32 first within each model.
    """
    means = sort_runs(run_means(results))
    fp32 = means[means["precision"] == "fp32"].drop_duplicates(["model", "dataset", "split"])
    base = fp32.set_index(["model", "dataset", "split"])
    table = pd.DataFrame(
        {
            "Framework": means["framework"],
            "Architecture": means["display_name"],
            "Category": means["family"].map(_CATEGORY).fillna(means["family"]),
            "Params (M)": means["params_m"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}"),
            "Precision": means["precision"].str.upper(),
            "Granularity": means["granularity"].map(GRANULARITY_NAMES).fillna(means["granularity"]),
        }
    )
    quantized = means[~means["precision"].isin(list(_FLOAT_ORDER))]
    for key, title in _OPTIONAL_AXES.items():
        if quantized[key].nunique(dropna=False) > 1:
            table[title] = [
                "–" if p in _FLOAT_ORDER else str(v)
                for p, v in zip(means["precision"], means[key], strict=True)
            ]
    for metric in ("dsc", "nsd"):
        cells = []
        for _, row in means.iterrows():
            key = (row["model"], row["dataset"], row["split"])
            value = row[metric]
            if row["precision"] == "fp32" or key not in base.index:
                cells.append("nan" if pd.isna(value) else f"{value:.3f}")
            else:
                cells.append(format_with_drop(float(value), float(base.loc[key, metric])))
        table[f"{metric.upper()} (Δ%)"] = cells
    if ci:
        for metric in ("dsc", "nsd"):
            table[f"Δ{metric.upper()} 95% CI"] = [
                _bootstrap_cell(
                    results,
                    metric,
                    row,
                    base.loc[(row["model"], row["dataset"], row["split"]), "run_id"]
                    if (row["model"], row["dataset"], row["split"]) in base.index
                    else None,
                    seed,
                )
                for _, row in means.iterrows()
            ]
    if published is not None:
        table = pd.concat([table, published_columns(means, published)], axis=1)
    return table.replace({np.nan: ""})
