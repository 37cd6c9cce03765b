"""Accuracy against cost: which quantization points are worth their size or latency."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from benchmark.analysis.summary import spec_label
from benchmark.plots.rows import deploy_rows, sweep_rows
from benchmark.plots.style import (
    COLUMN_WIDTH_IN,
    MARKERS,
    PlotSkipped,
    color_cycle,
    paper_style,
    save_figure,
)
from benchmark.report.table import run_means

__all__ = ["pareto_front", "pareto_points"]


def pareto_points(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats: lower-or-equal cost and higher-or-equal score,
    strictly better in one of them."""
    cost, score = np.asarray(cost, float), np.asarray(score, float)
    keep = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        better = (cost <= cost[i]) & (score >= score[i]) & ((cost < cost[i]) | (score > score[i]))
        keep[i] = not better.any()
    return keep


def _deploy_points(results: pd.DataFrame) -> pd.DataFrame:
    rows = deploy_rows(results)
    if rows.empty:
        return pd.DataFrame()
    scores = rows[(rows["metric"] == "dsc") & (rows["class"].fillna(0) > 0)]
    if "reference" in scores:
        scores = scores[scores["reference"].fillna("label") == "label"]
    dsc = (
        scores.groupby(["model", "backend", "case"])["value"]
        .mean()
        .groupby(level=["model", "backend"])
        .mean()
    )
    latency = rows[rows["metric"] == "latency_p50_ms"]
    if "batch_size" in latency and latency["batch_size"].notna().any():
        latency = latency[latency["batch_size"] == latency["batch_size"].min()]
    costs = {
        "latency_ms": latency.groupby(["model", "backend"])["value"].median(),
        "size_mb": rows[rows["metric"] == "size_mb"].groupby(["model", "backend"])["value"].max(),
    }
    frame = pd.DataFrame({"dsc": dsc, **costs}).dropna(subset=["dsc"]).reset_index()
    return frame.rename(columns={"backend": "label"})


def _sweep_points(results: pd.DataFrame) -> pd.DataFrame:
    rows = sweep_rows(results)
    if rows.empty or "dsc" not in set(rows["metric"]):
        return pd.DataFrame()
    means = run_means(rows, metrics=("dsc",))
    params = means["params_m"].astype(float)
    # weights stored at w_bits each: the size a real integer kernel would load (float: 32/16)
    means["size_mb"] = params * means["w_bits"].astype(float) / 8.0
    means["label"] = [
        spec_label(p, g) for p, g in zip(means["precision"], means["granularity"], strict=True)
    ]
    return means[["model", "label", "dsc", "size_mb"]]


def pareto_front(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Mean DSC against cost, Pareto-optimal points joined by a step line, one colour per model.

    Deployment rows (a ``backend`` column) give measured ``latency_p50_ms`` (smallest batch)
    and ``size_mb`` per backend; evaluation sweeps give the weight size ``params x w_bits / 8``
    (MB) per quantization point. Each available cost is one panel.

    Raises:
        PlotSkipped: neither deployment nor evaluation rows with DSC.
    """
    deploy, sweep = _deploy_points(results), _sweep_points(results)
    panels = []
    if not deploy.empty:
        for cost, xlabel in (
            ("latency_ms", "latency p50, smallest batch (ms)"),
            ("size_mb", "model file size (MB)"),
        ):
            if cost in deploy and deploy[cost].notna().any():
                panels.append(
                    (deploy.dropna(subset=[cost]), cost, xlabel, "deployed backends", True)
                )
    if not sweep.empty and sweep["size_mb"].notna().any():
        panels.append(
            (
                sweep.dropna(subset=["size_mb"]),
                "size_mb",
                "weight size at w_bits (MB)",
                "fake-quant sweep",
                False,
            )
        )
    if not panels:
        raise PlotSkipped("no DSC rows with a size or latency (deploy or evaluate runs)")
    with paper_style():
        fig, axes = plt.subplots(
            len(panels), 1, figsize=(COLUMN_WIDTH_IN, 2.3 * len(panels)), squeeze=False
        )
        for ax, (points, cost, xlabel, title, label_all) in zip(axes[:, 0], panels, strict=True):
            models = list(dict.fromkeys(points["model"]))
            for k, (model, color) in enumerate(zip(models, color_cycle(len(models)), strict=True)):
                group = points[points["model"] == model].sort_values(cost)
                x, y = group[cost].to_numpy(float), group["dsc"].to_numpy(float)
                front = pareto_points(x, y)
                ax.scatter(
                    x, y, s=14, color=color, marker=MARKERS[k % len(MARKERS)], label=model, zorder=3
                )
                ax.step(x[front], y[front], where="post", color=color, linewidth=0.8, alpha=0.8)
                # every backend is named (few points); of a sweep only the Pareto-optimal points,
                # alternately above and below so that neighbours do not overprint
                named = [i for i in range(len(x)) if label_all or front[i]]
                for n, i in enumerate(named):
                    ax.annotate(
                        group["label"].iloc[i],
                        (x[i], y[i]),
                        fontsize=4.5,
                        xytext=(3, 3 if n % 2 == 0 else -7),
                        textcoords="offset points",
                        fontweight="bold" if front[i] else "normal",
                    )
            ax.set_xlabel(xlabel)
            ax.set_ylabel("mean DSC (0-1)")
            ax.set_title(title, loc="left")
            ax.legend(loc="best", frameon=False)
            ax.margins(x=0.12, y=0.12)
        fig.tight_layout()
        return save_figure(fig, out_dir, "pareto")
