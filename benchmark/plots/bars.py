"""Mean DSC per precision x granularity, one panel per model, with 95 % CIs over cases."""

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
from benchmark.report.table import GRANULARITY_NAMES, case_scores, sort_runs

__all__ = ["precision_bars"]

#: Legend names of the bar colours; FP16/BF16 runs have no quantizer and so no granularity.
_GRANULARITY_LABELS = {**GRANULARITY_NAMES, "none": "16-bit float (no scales)"}


def precision_bars(results: pd.DataFrame, out_dir: str | Path, metric: str = "dsc") -> list[Path]:
    """Grouped bars: one group per non-FP32 precision, one bar per granularity, FP32 dashed.

    Bars are the mean over cases of the per-case mean over foreground classes (as in the
    published table); whiskers are 95 % percentile-bootstrap intervals over cases (none with a
    single case).

    Raises:
        PlotSkipped: no evaluation rows of ``metric``.
    """
    per_case = case_scores(sweep_rows(results), metric)
    if per_case.empty:
        raise PlotSkipped(f"no evaluation rows with metric {metric!r} (task=evaluate sweeps)")
    keys = [c for c in per_case.columns if c not in ("case", "value")]
    summary = []
    for key, group in per_case.groupby(keys, dropna=False, sort=False):
        low, high = mean_ci(group["value"].to_numpy())
        summary.append(
            {
                **dict(zip(keys, key, strict=True)),
                metric: group["value"].mean(),
                "low": low,
                "high": high,
                "cases": len(group),
            }
        )
    means = sort_runs(pd.DataFrame(summary))
    models = list(dict.fromkeys(means["display_name"].fillna(means["model"])))
    granularities = [g for g in GRANULARITY_NAMES if g in set(means["granularity"])]
    colors = dict(zip(granularities, color_cycle(len(granularities)), strict=True))
    with paper_style():
        fig, axes = plt.subplots(
            len(models), 1, figsize=(COLUMN_WIDTH_IN, 1.7 * len(models) + 0.4), squeeze=False
        )
        width = 0.8 / max(1, len(granularities))
        labelled: set[str] = set()
        for ax, model in zip(axes[:, 0], models, strict=True):
            rows = means[means["display_name"].fillna(means["model"]) == model]
            precisions = [p for p in dict.fromkeys(rows["precision"]) if p != "fp32"]
            for i, gran in enumerate(granularities):
                offset = (i - (len(granularities) - 1) / 2) * width
                for x, precision in enumerate(precisions):
                    cell = rows[(rows["precision"] == precision) & (rows["granularity"] == gran)]
                    if cell.empty:
                        continue
                    value, low, high = (float(cell[k].iloc[0]) for k in (metric, "low", "high"))
                    err = None if np.isnan(low) else [[value - low], [high - value]]
                    label = None if gran in labelled else _GRANULARITY_LABELS.get(gran, gran)
                    labelled.add(gran)
                    ax.bar(
                        x + offset,
                        value,
                        width,
                        color=colors[gran],
                        yerr=err,
                        error_kw={"elinewidth": 0.6, "capsize": 1.5},
                        label=label,
                    )
            fp32 = rows[rows["precision"] == "fp32"][metric]
            if len(fp32):
                ax.axhline(
                    float(fp32.iloc[0]), color="black", linestyle="--", linewidth=0.8, label="FP32"
                )
            ax.set_xticks(range(len(precisions)), [p.upper() for p in precisions])
            ax.set_title(model, loc="left")
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"mean {metric.upper()} (0-1)")
            ax.grid(axis="x", visible=False)
        axes[-1, 0].set_xlabel("precision (weight bits / activation bits)")
        shared_legend(fig, axes[:, 0], max_columns=3)
        fig.tight_layout()
        return save_figure(fig, out_dir, f"{metric}_bars")
