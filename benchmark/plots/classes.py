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
    delta_label,
    display_names,
    paper_style,
    save_figure,
    signed_heatmap,
)
from benchmark.report.table import sort_runs

__all__ = ["class_drops"]

#: Most quantization points shown per model (the lowest-bit ones are kept first).
MAX_POINTS = 9


def _model_grid(rows: pd.DataFrame, model: str) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Change from FP32 in points (classes x points), the n/a mask, class names, point labels.

    A class whose FP32 mean is 0 (the model never finds it) has no change to show: n/a.
    """
    rows = rows[rows["model"] == model]
    keys = ["run_id", "precision", "granularity", "w_bits", "a_bits"]
    per_class = (
        rows.groupby(keys + ["class", "class_name"], dropna=False)["value"].mean().reset_index()
    )
    fp32 = per_class[per_class["precision"] == "fp32"].groupby("class_name")["value"].mean()
    points = per_class[per_class["precision"] != "fp32"]
    if fp32.empty or points.empty:
        raise PlotSkipped(f"{model}: no FP32 run beside a quantized run")
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
        grid[:, j] = [100 * (cells.get(c, np.nan) - fp32.get(c, np.nan)) for c in classes]
    baseline = np.array([fp32.get(c, np.nan) for c in classes])
    not_applicable = np.repeat((~(baseline > 0))[:, None], len(runs), axis=1)
    labels = [spec_label(r.precision, r.granularity) for r in runs.itertuples()]
    return grid, not_applicable, classes, labels


def class_drops(
    results: pd.DataFrame, out_dir: str | Path, metric: str = "dsc", model: str | None = None
) -> list[Path]:
    """Heatmaps of the change in mean ``metric`` from FP32 per class (rows) and point (columns),
    one panel per model (only ``model`` when given).

    Means over cases per run and class; one column per non-FP32 run (at most
    :data:`MAX_POINTS`, the lowest-bit ones kept), in points of the score (x 100). Cells of a
    class the FP32 model scores 0 read "n/a".

    Raises:
        PlotSkipped: no evaluation rows with an FP32 run and a quantized run of one model, or
            ``model`` has none.
    """
    rows = sweep_rows(results)
    rows = rows[(rows["metric"] == metric) & (rows["class"] > 0)] if len(rows) else rows
    if rows.empty or "fp32" not in set(rows["precision"]):
        raise PlotSkipped(f"no evaluation rows of {metric!r} with an FP32 run")
    names = display_names(rows)
    if model is not None and model not in names:
        raise PlotSkipped(f"no evaluation rows of model {model!r}; models: {sorted(names)}")
    panels = []
    for name in [model] if model is not None else list(names):
        try:
            panels.append((name, *_model_grid(rows, name)))
        except PlotSkipped:
            continue
    if not panels:
        raise PlotSkipped("no model has an FP32 run beside a quantized run")
    heights = [1.0 + 0.2 * len(p[3]) for p in panels]
    with paper_style():
        fig, axes = plt.subplots(
            len(panels),
            1,
            figsize=(COLUMN_WIDTH_IN, sum(heights) + 0.5 * len(panels)),
            squeeze=False,
            gridspec_kw={"height_ratios": heights},
        )
        for ax, (name, grid, na, classes, labels) in zip(axes[:, 0], panels, strict=True):
            image = signed_heatmap(ax, grid, "+.0f", fontsize=5, not_applicable=na)
            ax.set_yticks(range(len(classes)), classes)
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
            bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
            bar.set_label(delta_label(metric))
            ax.set_ylabel("class")
            title = f"{names[name]}: per-class change, mean over cases"
            if na.any():
                title += "\n(n/a: FP32 " + metric.upper() + " is 0)"
            ax.set_title(title, loc="left")
        fig.tight_layout()
        return save_figure(fig, out_dir, f"class_drops_{metric}")
