"""Accuracy against cost: which quantization points are worth their size or latency."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from benchmark.analysis.summary import spec_label
from benchmark.plots.labels import place_labels
from benchmark.plots.rows import deploy_rows, sweep_rows
from benchmark.plots.style import (
    COLUMN_WIDTH_IN,
    MARKERS,
    PlotSkipped,
    color_cycle,
    display_names,
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


def _step_vertices(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vertices of the ``where="post"`` step line through sorted points ``(x, y)``."""
    vertices = [(x[0], y[0])]
    for i in range(1, len(x)):
        vertices += [(x[i], y[i - 1]), (x[i], y[i])]
    return np.asarray(vertices, float)


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
    (MB) per quantization point. Each available cost is one panel. Every backend is labelled,
    of a sweep the Pareto-optimal points; labels take the colour of their model and are placed
    so that they do not overprint (:func:`benchmark.plots.labels.place_labels`).

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
    names = display_names(results)
    models = list(dict.fromkeys(m for points, *_ in panels for m in points["model"]))
    colors = dict(zip(models, color_cycle(len(models)), strict=True))
    with paper_style():
        fig, axes = plt.subplots(
            len(panels), 1, figsize=(COLUMN_WIDTH_IN, 2.4 * len(panels)), squeeze=False
        )
        labels = []
        for ax, (points, cost, xlabel, title, label_all) in zip(axes[:, 0], panels, strict=True):
            named = {"x": [], "y": [], "text": [], "color": [], "all": [], "steps": []}
            for model in dict.fromkeys(points["model"]):
                group = points[points["model"] == model].sort_values(cost)
                x, y = group[cost].to_numpy(float), group["dsc"].to_numpy(float)
                front = pareto_points(x, y)
                color, marker = colors[model], MARKERS[models.index(model) % len(MARKERS)]
                ax.scatter(x, y, s=14, color=color, marker=marker, label=names[model], zorder=3)
                ax.step(x[front], y[front], where="post", color=color, linewidth=0.8, alpha=0.8)
                named["all"].append(np.column_stack([x, y]))
                named["steps"].append(_step_vertices(x[front], y[front]))
                for i in np.flatnonzero(front | label_all):
                    named["x"].append(x[i])
                    named["y"].append(y[i])
                    named["text"].append(group["label"].iloc[i])
                    named["color"].append(color)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("mean DSC (0-1)")
            ax.set_title(title, loc="left")
            ax.margins(x=0.15, y=0.15)
            labels.append(named)
        handles = {names[m]: None for m in models}
        for ax in axes[:, 0]:
            for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
                handles[text] = handles[text] or handle
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="lower center",
            ncol=len(handles),
            bbox_to_anchor=(0.5, 1.0),
            frameon=False,
        )
        fig.tight_layout()
        for ax, named in zip(axes[:, 0], labels, strict=True):
            place_labels(
                ax,
                named["x"],
                named["y"],
                named["text"],
                named["color"],
                fontsize=5.5,
                others_xy=np.vstack(named["all"]),
                lines_xy=named["steps"],
            )
        return save_figure(fig, out_dir, "pareto")
