"""Tables of sensitivity rows: per-unit score drops and per-layer activation statistics.

The rows keep raw DSC/NSD (see DESIGN.md: drops are derived, never stored); these functions
derive them the same way :mod:`benchmark.report` does for sweeps: the mean over foreground
classes within each case, then over cases, minus the FP32 reference of the same run.
"""

from __future__ import annotations

import pandas as pd

__all__ = [
    "PER_UNIT_MODES",
    "activation_table",
    "sensitivity_table",
    "spec_label",
]

#: Modes with one row set per unit, in the order the heatmap shows them.
PER_UNIT_MODES = ("one_layer", "weights_only", "activations_only", "all_but_one")
_MODE_LABELS = {
    "one_layer": "only this",
    "weights_only": "only this, weights",
    "activations_only": "only this, activations",
    "all_but_one": "all but this",
}
_GRANULARITY_SHORT = {
    "per_tensor": "tensor",
    "per_channel_token": "channel",
    "adaptive": "adaptive",
}


def spec_label(precision: str, granularity: str) -> str:
    """Short display name of a quantization point, e.g. ``W4A4 adaptive``."""
    if granularity in (None, "none"):
        return str(precision).upper()
    return f"{str(precision).upper()} {_GRANULARITY_SHORT.get(granularity, granularity)}"


def _mode_label(mode: str) -> str:
    return _MODE_LABELS.get(mode, mode)


def sensitivity_table(results: pd.DataFrame, metric: str = "dsc") -> pd.DataFrame:
    """Mean score and its change from FP32 per run x mode x unit.

    Args:
        results: tidy rows with ``mode`` and ``layer`` (other rows are ignored).
        metric: ``dsc`` or ``nsd``.

    Returns:
        Columns ``model``, ``run_id``, ``mode``, ``mode_label``, ``layer`` (``"(whole model)"``
        for whole-model rows), ``layer_index``, ``precision``, ``granularity``, ``spec``
        (display label of the variant's own point), ``run_spec`` (label of the run's spec),
        ``score``, ``fp32``, ``delta`` (score - FP32), ``delta_vs_all`` (score - the fully
        quantized model's score; what keeping units in FP32 recovers). Empty when the rows hold
        no sensitivity results.
    """
    needed = {"mode", "layer", "metric", "value", "class", "case", "run_id"}
    if not needed <= set(results.columns):
        return pd.DataFrame()
    rows = results[(results["metric"] == metric) & (results["class"] > 0)]
    rows = rows[rows["mode"].isin(("reference", "all", *PER_UNIT_MODES))]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(
        layer=rows["layer"].fillna("(whole model)"),
        layer_index=rows["layer_index"].fillna(-1) if "layer_index" in rows else -1,
        model=rows["model"] if "model" in rows else "model",
    )
    keys = ["model", "run_id", "mode", "layer", "layer_index", "precision", "granularity"]
    per_case = rows.groupby(keys + ["case"], dropna=False)["value"].mean().reset_index()
    means = per_case.groupby(keys, dropna=False)["value"].mean().rename("score").reset_index()
    fp32 = means[means["mode"] == "reference"].set_index("run_id")["score"]
    full = means[means["mode"] == "all"].set_index("run_id")
    means["fp32"] = means["run_id"].map(fp32)
    means["delta"] = means["score"] - means["fp32"]
    means["delta_vs_all"] = means["score"] - means["run_id"].map(full["score"])
    means["run_spec"] = [
        spec_label(full.loc[r, "precision"], full.loc[r, "granularity"]) if r in full.index else ""
        for r in means["run_id"]
    ]
    means["spec"] = [
        spec_label(p, g) for p, g in zip(means["precision"], means["granularity"], strict=True)
    ]
    means["mode_label"] = means["mode"].map(_mode_label)
    return means.sort_values(["model", "run_id", "layer_index", "mode"]).reset_index(drop=True)


def activation_table(results: pd.DataFrame) -> pd.DataFrame:
    """Activation statistics per run x layer, one column per metric.

    Returns:
        Columns ``model``, ``run_id``, ``layer``, ``layer_index``, ``granularity`` (``none``
        for the FP32 distribution metrics, the quantized granularity for SQNR/KL) and one
        column per metric id. Empty when the rows hold no activation statistics.
    """
    if "mode" not in results.columns:
        return pd.DataFrame()
    rows = results[results["mode"].isin(("activation_stats", "activation_shift"))]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(model=rows["model"] if "model" in rows else "model")
    keys = ["model", "run_id", "layer", "layer_index", "granularity"]
    table = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean")
    table.columns.name = None
    return table.reset_index().sort_values(["model", "run_id", "granularity", "layer_index"])
