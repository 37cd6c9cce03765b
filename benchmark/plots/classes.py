"""Per-class DSC drops: which organs a quantization point hurts."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from benchmark.analysis.summary import spec_label
from benchmark.plots.rows import sweep_rows
from benchmark.plots.style import (
    COLUMN_WIDTH_IN,
    PlotSkipped,
    paper_style,
    save_figure,
    signed_heatmap,
)
from benchmark.report.table import sort_runs

__all__ = ["class_drops"]

#: Most quantization points shown per model (the lowest-bit ones are kept first).
MAX_POINTS = 9


def class_drops(
    results: pd.DataFrame, out_dir: str | Path, metric: str = "dsc", model: str | None = None
) -> list[Path]:
    """Heatmap of the change in mean ``metric`` from FP32 per class (rows) and point (columns).

    Means over cases per run and class; one column per non-FP32 run of ``model`` (the first
    model when None).

    Raises:
        PlotSkipped: no evaluation rows with an FP32 run and a quantized run of one model.
    """
    rows = sweep_rows(results)
    rows = rows[(rows["metric"] == metric) & (rows["class"] > 0)] if len(rows) else rows
    if rows.empty or "fp32" not in set(rows["precision"]):
        raise PlotSkipped(f"no evaluation rows of {metric!r} with an FP32 run")
    model = model or rows["model"].iloc[0]
    rows = rows[rows["model"] == model]
    keys = ["run_id", "precision", "granularity", "w_bits", "a_bits"]
    per_class = (
        rows.groupby(keys + ["class", "class_name"], dropna=False)["value"].mean().reset_index()
    )
    fp32 = per_class[per_class["precision"] == "fp32"].groupby("class_name")["value"].mean()
    points = per_class[per_class["precision"] != "fp32"]
    if points.empty:
        raise PlotSkipped(f"{model}: no quantized run beside FP32")
    runs = points[keys].drop_duplicates()
    runs = runs.assign(
        family="", params_m=0, display_name="", dataset="", observer="", algorithm="", calib_n=0
    )
    runs = sort_runs(runs).tail(MAX_POINTS)
    classes = (
        per_class.drop_duplicates("class").sort_values("class")["class_name"].astype(str).tolist()
    )
    grid = np.full((len(classes), len(runs)), np.nan)
    for j, run in enumerate(runs.itertuples()):
        cells = points[points["run_id"] == run.run_id].set_index("class_name")["value"]
        # in DSC points (x 100): short cell labels, and the colour bar reads the same
        grid[:, j] = [100 * (cells.get(c, np.nan) - fp32.get(c, np.nan)) for c in classes]
    labels = [spec_label(r.precision, r.granularity) for r in runs.itertuples()]
    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 1.2 + 0.2 * len(classes)))
        image = signed_heatmap(ax, grid, "+.0f", fontsize=5)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label(f"Δ {metric.upper()} vs FP32 (x100)")
        ax.set_ylabel("class")
        ax.set_title(f"{model}: per-class change, mean over cases", loc="left")
        fig.tight_layout()
        return save_figure(fig, out_dir, f"class_drops_{metric}")
