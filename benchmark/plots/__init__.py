"""The standard figures of a results table, as functions and as
``python -m benchmark.plots RESULTS [--out DIR]``.

Each figure function takes tidy rows and an output folder, writes ``<name>.png`` and
``<name>.pdf`` at paper column width (:mod:`benchmark.plots.style`) and returns the paths; it
raises :class:`PlotSkipped` when the rows lack its data, and :func:`make_figures` turns that into
a message so one results file draws whatever it can.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from benchmark.plots.bars import precision_bars
from benchmark.plots.calibration_size import calibration_curve
from benchmark.plots.classes import class_drops
from benchmark.plots.layers import activation_depth, sensitivity_heatmap, sqnr_scatter
from benchmark.plots.pareto import pareto_front
from benchmark.plots.style import PlotSkipped

__all__ = [
    "FIGURES",
    "PlotSkipped",
    "activation_depth",
    "calibration_curve",
    "class_drops",
    "make_figures",
    "pareto_front",
    "precision_bars",
    "sensitivity_heatmap",
    "sqnr_scatter",
]

#: Figure name -> function(results, out_dir) -> paths, in the order they are drawn.
FIGURES: dict[str, Callable[[pd.DataFrame, Path], list[Path]]] = {
    "precision_bars": precision_bars,
    "class_drops": class_drops,
    "pareto": pareto_front,
    "layer_sensitivity": sensitivity_heatmap,
    "activation_depth": activation_depth,
    "sqnr_vs_delta": sqnr_scatter,
    "calibration_size": calibration_curve,
}


def make_figures(results: pd.DataFrame, out_dir: str | Path) -> dict[str, list[Path] | str]:
    """Draw every figure the rows allow.

    Returns:
        Figure name -> written paths, or the reason it was skipped.
    """
    out: dict[str, list[Path] | str] = {}
    for name, draw in FIGURES.items():
        try:
            out[name] = draw(results, Path(out_dir))
        except PlotSkipped as skipped:
            out[name] = f"skipped: {skipped}"
    return out
