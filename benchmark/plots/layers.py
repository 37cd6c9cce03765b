"""Figures of sensitivity runs: the layer x spec heatmap, activation statistics along depth,
and per-unit SQNR against the DSC drop."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from benchmark.analysis.summary import activation_table, sensitivity_table
from benchmark.plots.style import (
    COLUMN_WIDTH_IN,
    MARKERS,
    OKABE_ITO,
    PlotSkipped,
    color_cycle,
    delta_label,
    display_names,
    paper_style,
    save_figure,
    signed_heatmap,
)
from benchmark.report.table import GRANULARITY_NAMES

__all__ = ["activation_depth", "sensitivity_heatmap", "sqnr_scatter"]

#: Most columns the heatmap shows at column width; beyond it only ``one_layer`` columns stay.
MAX_HEATMAP_COLUMNS = 12
_MODE_ORDER = {"one_layer": 0, "weights_only": 1, "activations_only": 2, "all_but_one": 3}


def _per_unit(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    table = sensitivity_table(results, metric)
    if table.empty:
        raise PlotSkipped("no sensitivity rows (task=sensitivity: mode/layer columns)")
    units = table[table["layer"] != "(whole model)"]
    if units.empty:
        raise PlotSkipped("sensitivity rows hold whole-model variants only (no per-unit modes)")
    return units


def sensitivity_heatmap(
    results: pd.DataFrame, out_dir: str | Path, metric: str = "dsc", model: str | None = None
) -> list[Path]:
    """Heatmap of the change in mean ``metric`` from FP32: units (network order) x variants.

    Columns are the variants of each run: the unit alone at the run's spec, alone with weights
    only (``wNa16``) and activations only (``w16aM``), and every unit but it (a value near 0
    there means keeping this unit in FP32 recovers the model). Beyond
    :data:`MAX_HEATMAP_COLUMNS` columns only the "unit alone" ones are drawn.

    Raises:
        PlotSkipped: no per-unit sensitivity rows.
    """
    units = _per_unit(results, metric)
    model = model or units["model"].iloc[0]
    units = units[units["model"] == model]
    columns = (
        units[["run_spec", "mode", "spec", "mode_label"]]
        .drop_duplicates()
        .assign(order=lambda d: d["mode"].map(_MODE_ORDER))
        .sort_values(["run_spec", "order"])
    )
    if len(columns) > MAX_HEATMAP_COLUMNS:
        columns = columns[columns["mode"] == "one_layer"].head(MAX_HEATMAP_COLUMNS)
    order = units.drop_duplicates("layer").sort_values("layer_index")["layer"].tolist()
    grid = np.full((len(order), len(columns)), np.nan)
    for j, (_, col) in enumerate(columns.iterrows()):
        cells = units[(units["run_spec"] == col["run_spec"]) & (units["mode"] == col["mode"])]
        values = cells.set_index("layer")["delta"]
        # in DSC points (x 100): short cell labels, and the colour bar reads the same
        grid[:, j] = [100 * values.get(layer, np.nan) for layer in order]
    labels = [
        f"{c.spec}\n{'all but this' if c.mode == 'all_but_one' else 'only this'}"
        for c in columns.itertuples()
    ]
    with paper_style():
        height = max(1.8, 0.9 + 0.17 * len(order))
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, height))
        image = signed_heatmap(ax, grid, "+.1f", fontsize=4.5)
        ax.set_yticks(range(len(order)), order, fontsize=5.5)
        ax.set_xticks(range(len(labels)), labels, fontsize=5.5, rotation=45, ha="right")
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label(delta_label(metric))
        ax.set_ylabel("unit (network order)")
        ax.set_title(f"{display_names(results)[model]}: one unit at a time", loc="left")
        fig.tight_layout()
        return save_figure(fig, out_dir, f"layer_sensitivity_{metric}")


def activation_depth(
    results: pd.DataFrame, out_dir: str | Path, model: str | None = None
) -> list[Path]:
    """Activation statistics of each quantized layer's input against depth (network order).

    Panels: FP32 range and 99.9th percentile of |x| (log scale), excess kurtosis, largest over
    median per-channel and per-voxel range, outlier share, and the SQNR of the quantized
    network's input at each layer per granularity.

    Raises:
        PlotSkipped: no activation statistics rows.
    """
    table = activation_table(results)
    if table.empty:
        raise PlotSkipped("no activation statistics rows (sensitivity.activation_stats=true)")
    model = model or table["model"].iloc[0]
    table = table[table["model"] == model]
    run = table["run_id"].iloc[0]
    table = table[table["run_id"] == run]
    fp32 = table[table["granularity"] == "none"].sort_values("layer_index")
    shift = table[table["granularity"] != "none"]
    panels = [
        ("range (max - min)", ["act_range"], True),
        ("excess kurtosis", ["act_kurtosis"], False),
        ("max / median range", ["act_channel_range_ratio", "act_voxel_range_ratio"], True),
        ("outlier share (%)", ["act_outlier_ratio"], False),
    ]
    names = {
        "act_range": "range",
        "act_kurtosis": "kurtosis",
        "act_channel_range_ratio": "per channel",
        "act_voxel_range_ratio": "per voxel",
        "act_outlier_ratio": "> 6 σ",
    }
    with paper_style():
        fig, axes = plt.subplots(5, 1, figsize=(COLUMN_WIDTH_IN, 5.6), sharex=True)
        x = fp32["layer_index"].to_numpy()
        for ax, (ylabel, metrics, log) in zip(axes[:4], panels, strict=True):
            for k, (metric, color) in enumerate(
                zip(metrics, color_cycle(len(metrics)), strict=True)
            ):
                if metric not in fp32:
                    continue
                values = fp32[metric].to_numpy(dtype=float)
                if metric == "act_outlier_ratio":
                    values = 100 * values
                if log:
                    values = np.where(values > 0, values, np.nan)
                ax.plot(x, values, marker=MARKERS[k], color=color, label=names[metric])
            drawn = [np.asarray(line.get_ydata(), float) for line in ax.get_lines()]
            finite = np.concatenate(drawn) if drawn else np.array([])
            finite = finite[np.isfinite(finite) & (finite > 0)]
            # a log axis only where the values span more than a decade; below that it shows
            # no labelled tick at all
            if log and len(finite) and finite.max() / finite.min() > 10:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_ylabel(ylabel)
            if len(metrics) > 1:
                ax.legend(loc="best", frameon=False)
        ax = axes[4]
        for k, (gran, group) in enumerate(shift.groupby("granularity", sort=True)):
            group = group.sort_values("layer_index")
            ax.plot(
                group["layer_index"],
                group["sqnr_db"],
                marker=MARKERS[k % len(MARKERS)],
                color=OKABE_ITO[k % len(OKABE_ITO)],
                # adaptive equals per-channel on all but 1x1x1 layers: dashes keep both visible
                linestyle=("-", "--", ":")[k % 3],
                label=GRANULARITY_NAMES.get(gran, gran),
            )
        ax.set_ylabel("SQNR (dB)")
        ax.set_xlabel("quantized layer input (index in network order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(shift):
            # one legend row above the curves: headroom instead of covering the first layers
            low, high = ax.get_ylim()
            ax.set_ylim(low, high + 0.35 * (high - low))
            ax.legend(loc="upper center", frameon=False, ncol=shift["granularity"].nunique())
        axes[0].set_title(
            f"{display_names(results)[model]}: inputs of the quantized layers", loc="left"
        )
        fig.align_ylabels(axes)
        fig.tight_layout()
        return save_figure(fig, out_dir, "activation_depth")


def _unit_of(layer: str, units: list[str]) -> str | None:
    """The unit a layer belongs to: itself, or the longest unit name that prefixes it."""
    matches = [u for u in units if layer == u or layer.startswith(u + ".")]
    return max(matches, key=len) if matches else None


def sqnr_scatter(results: pd.DataFrame, out_dir: str | Path, metric: str = "dsc") -> list[Path]:
    """Per unit: the SQNR of its own input quantizer against the drop when it alone is quantized.

    x: mean over the unit's layers of ``sqnr_local_db`` at the run's granularity (dB); y: change
    in mean ``metric`` from FP32 of the ``one_layer`` variant, in points (x 100) as in the
    heatmaps. One colour per model and run spec.

    Raises:
        PlotSkipped: no run has both per-unit ``one_layer`` rows and SQNR rows.
    """
    units = _per_unit(results, metric)
    units = units[units["mode"] == "one_layer"]
    stats = activation_table(results)
    if stats.empty or "sqnr_local_db" not in stats:
        raise PlotSkipped("no SQNR rows (sensitivity.activation_stats=true)")
    points = []
    for run_id, group in units.groupby("run_id"):
        granularity = group["granularity"].iloc[0]
        layer_sqnr = stats[(stats["run_id"] == run_id) & (stats["granularity"] == granularity)]
        names = group["layer"].tolist()
        unit_of = layer_sqnr["layer"].map(lambda n, names=names: _unit_of(n, names))
        sqnr = layer_sqnr.assign(unit=unit_of).groupby("unit")["sqnr_local_db"].mean()
        for row in group.itertuples():
            if row.layer in sqnr.index and np.isfinite(sqnr[row.layer]):
                points.append((row.run_spec, float(sqnr[row.layer]), 100 * row.delta, row.model))
    if not points:
        raise PlotSkipped("no unit has both a one_layer variant and SQNR statistics")
    frame = pd.DataFrame(points, columns=["run_spec", "sqnr_db", "delta", "model"])
    names = display_names(results)
    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.4))
        groups = list(frame.groupby(["model", "run_spec"], sort=True))
        for k, ((model, spec), group) in enumerate(groups):
            ax.scatter(
                group["sqnr_db"],
                group["delta"],
                s=14,
                marker=MARKERS[k % len(MARKERS)],
                color=color_cycle(len(groups))[k],
                label=f"{names[model]}, {spec}",
                edgecolors="none",
                alpha=0.85,
            )
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xlabel("SQNR of the unit's quantized input (dB)")
        ax.set_ylabel(f"{delta_label(metric)}\nunit alone quantized")
        ax.legend(loc="best", frameon=False)
        fig.tight_layout()
        return save_figure(fig, out_dir, f"sqnr_vs_delta_{metric}")
