"""One figure of a sweep: mean DSC per model x precision x granularity as grouped bars."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.report.table import GRANULARITY_NAMES, run_means, sort_runs

__all__ = ["dsc_bar_chart"]


def dsc_bar_chart(results: pd.DataFrame, path: str | Path) -> Path:
    """Write a PNG: one panel per model, one bar group per precision, one bar per granularity.

    The FP32 mean DSC of each model is drawn as a dashed line across its panel, so drops read
    as the gap below the line. Means are over foreground classes per case, then over cases.

    Args:
        results: tidy rows.
        path: output ``.png``; its folder is created.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = sort_runs(run_means(results, metrics=("dsc",)))
    models = list(dict.fromkeys(means["display_name"]))
    granularities = [g for g in GRANULARITY_NAMES if g != "none" and g in set(means["granularity"])]
    fig, axes = plt.subplots(
        1, len(models), figsize=(4.5 * len(models), 3.6), squeeze=False, sharey=True
    )
    width = 0.8 / max(1, len(granularities))
    for ax, model in zip(axes[0], models, strict=True):
        rows = means[means["display_name"] == model]
        precisions = [p for p in dict.fromkeys(rows["precision"]) if p != "fp32"]
        for i, gran in enumerate(granularities):
            values = [
                rows[(rows["precision"] == p) & (rows["granularity"].isin([gran, "none"]))][
                    "dsc"
                ].mean()
                for p in precisions
            ]
            ax.bar(
                [x + (i - (len(granularities) - 1) / 2) * width for x in range(len(precisions))],
                values,
                width,
                label=GRANULARITY_NAMES[gran],
            )
        fp32 = rows[rows["precision"] == "fp32"]["dsc"]
        if len(fp32):
            ax.axhline(
                float(fp32.iloc[0]), color="black", linestyle="--", linewidth=1, label="FP32"
            )
        ax.set_xticks(range(len(precisions)), [p.upper() for p in precisions])
        ax.set_title(model)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mean DSC (foreground classes)")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
