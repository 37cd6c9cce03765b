"""Mean DSC against the number of calibration patches: how much calibration data a setting needs.

One panel per model, one line per quantized setting (precision x granularity, and observer,
algorithm or any other spec field where the rows vary them) over ``calib_n`` on a log-2 axis,
with 95 % bootstrap bands over cases and FP32 dashed; drawn from ``experiment=calib_size`` or
any sweep over ``calibration.n``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from benchmark.plots.rows import mean_ci, sweep_rows
from benchmark.plots.style import (
    COLUMN_WIDTH_IN,
    PlotSkipped,
    color_cycle,
    paper_style,
    save_figure,
    shared_legend,
)
from benchmark.report.settings import NOT_USED, SPEC_KEYS, setting_text, varying_settings
from benchmark.report.table import GRANULARITY_NAMES, case_scores

__all__ = ["calibration_curve"]

#: Point keys besides ``calib_n`` that tell one line from another, in the order of its label;
#: spec fields that vary among the quantized runs follow them.
_LINE_KEYS = ("precision", "granularity", "observer", "algorithm")


def _line_means(per_case: pd.DataFrame, line_keys: list[str], metric: str) -> pd.DataFrame:
    """Mean and bootstrap band over cases per model x line x calibration size."""
    keys = ["model_name", *line_keys, "calib_n"]
    summary = []
    for key, group in per_case.groupby(keys, dropna=False, sort=False):
        low, high = mean_ci(group["value"].to_numpy())
        summary.append(
            {
                **dict(zip(keys, key, strict=True)),
                metric: group["value"].mean(),
                "low": low,
                "high": high,
            }
        )
    return pd.DataFrame(summary).sort_values(keys, kind="stable")


def _line_label(line: dict, varying: list[str]) -> str:
    parts = [str(line["precision"]).upper(), GRANULARITY_NAMES.get(line["granularity"], "")]
    parts += [str(line[k]) for k in varying if k in ("observer", "algorithm")]
    parts += [f"{k}={line[k]}" for k in varying if k in SPEC_KEYS and line[k] != NOT_USED]
    return " ".join(p for p in parts if p)


def _draw_panel(ax, curves: pd.DataFrame, lines: list[dict], varying: list[str], metric: str):
    """One model's lines (mean and band over calibration sizes) on a log-2 size axis."""
    for line, color in zip(lines, color_cycle(len(lines)), strict=True):
        curve = curves[np.logical_and.reduce([curves[k] == v for k, v in line.items()])]
        if curve.empty:
            continue
        x = curve["calib_n"].to_numpy(float)
        label = _line_label(line, varying)
        ax.plot(x, curve[metric], marker="o", markersize=2.5, color=color, label=label)
        ax.fill_between(x, curve["low"], curve["high"], color=color, alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    ticks = sorted(curves["calib_n"].unique())
    ax.set_xticks(ticks, [str(int(t)) for t in ticks])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"mean {metric.upper()} (0-1)")


def calibration_curve(
    results: pd.DataFrame, out_dir: str | Path, metric: str = "dsc"
) -> list[Path]:
    """Lines of mean ``metric`` over calibration sizes, one panel per model, FP32 dashed.

    Raises:
        PlotSkipped: no quantized setting was run at two or more calibration sizes.
    """
    per_case = case_scores(sweep_rows(results), metric)
    if per_case.empty or "calib_n" not in per_case.columns:
        raise PlotSkipped(f"no evaluation rows with metric {metric!r} (task=evaluate sweeps)")
    per_case = per_case.assign(model_name=per_case["display_name"].fillna(per_case["model"]))
    for key in _LINE_KEYS:
        per_case[key] = per_case[key].fillna("none") if key in per_case else "none"
    quantized = per_case[per_case["calib_n"].fillna(0) > 0]
    spec = [k for k in SPEC_KEYS if k in quantized.columns]
    line_keys = [*_LINE_KEYS, *varying_settings(quantized, spec)]
    quantized = quantized.assign(**setting_text(quantized)[line_keys[len(_LINE_KEYS) :]])
    sizes = quantized.groupby(["model_name", *line_keys], dropna=False)["calib_n"].nunique()
    if sizes.empty or sizes.max() < 2:
        raise PlotSkipped(
            "no setting was run at two or more calibration sizes (sweep calibration.n)"
        )
    keep = sizes[sizes >= 2].index
    quantized = quantized.set_index(["model_name", *line_keys]).loc[keep].reset_index()
    means = _line_means(quantized, line_keys, metric)
    fp32 = per_case[per_case["precision"] == "fp32"].groupby("model_name")["value"].mean()
    varying = [k for k in line_keys if means[k].nunique() > 1]
    lines = means[line_keys].drop_duplicates().to_dict("records")
    models = list(dict.fromkeys(means["model_name"]))
    with paper_style():
        fig, axes = plt.subplots(
            len(models), 1, figsize=(COLUMN_WIDTH_IN, 1.8 * len(models) + 0.5), squeeze=False
        )
        for ax, model in zip(axes[:, 0], models, strict=True):
            curves = means[means["model_name"] == model]
            _draw_panel(ax, curves, lines, varying, metric)
            if model in fp32.index:
                ax.axhline(
                    float(fp32[model]), color="black", linestyle="--", linewidth=0.8, label="FP32"
                )
            ax.set_title(model, loc="left")
        axes[-1, 0].set_xlabel("calibration patches (training cases)")
        shared_legend(fig, axes[:, 0], max_columns=2)
        fig.tight_layout()
        return save_figure(fig, out_dir, f"{metric}_vs_calibration_size")
