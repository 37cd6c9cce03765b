"""Figure conventions: paper column width, a colour-blind-safe palette, PNG + PDF output.

Every figure is drawn at ``COLUMN_WIDTH_IN`` (one column of a two-column paper) with 7-8 pt
text, so it is legible when placed at 100 % in a paper. Categorical colours are the Okabe-Ito
palette (Okabe & Ito 2008, "Color Universal Design"), distinguishable with the common colour
vision deficiencies; diverging maps use ColorBrewer's RdBu.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

__all__ = [
    "COLUMN_WIDTH_IN",
    "DIVERGING_CMAP",
    "OKABE_ITO",
    "PlotSkipped",
    "NA_COLOR",
    "cell_text",
    "color_cycle",
    "delta_label",
    "display_names",
    "paper_style",
    "quiet_libraries",
    "save_figure",
    "shared_legend",
    "signed_heatmap",
]

log = logging.getLogger(__name__)

#: Width of one column of a two-column paper, inches.
COLUMN_WIDTH_IN = 3.5
#: Okabe-Ito colours without black (used for reference lines) and yellow (poor on white).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999")
#: Diverging colour map for signed changes (negative = worse, red).
DIVERGING_CMAP = "RdBu"
#: Marker shapes paired with the colours, so categories differ in print too.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
#: Fill of heatmap cells that have no meaningful value ("n/a").
NA_COLOR = "#d9d9d9"
#: Libraries that log every step of writing a file at INFO (fontTools: one line per font table
#: when a PDF embeds a font subset); held at WARNING while a figure is saved.
QUIET_LOGGERS = ("fontTools", "matplotlib", "PIL")


class PlotSkipped(Exception):
    """The results lack what a figure needs; the message says what is missing."""


def delta_label(metric: str) -> str:
    """Axis label of a change from FP32, in points of the 0-1 score (x 100), as every figure
    that shows changes uses it."""
    return f"Δ {metric.upper()} vs FP32 (points, ×100)"


def display_names(rows: pd.DataFrame) -> dict[str, str]:
    """``model`` -> its display name (``display_name`` column; the model name where absent),
    so every figure names a model the same way."""
    models = list(dict.fromkeys(rows["model"].dropna()))
    if "display_name" not in rows.columns:
        return {m: str(m) for m in models}
    first = rows.dropna(subset=["model"]).drop_duplicates("model").set_index("model")
    return {
        m: str(first.loc[m, "display_name"]) if pd.notna(first.loc[m, "display_name"]) else str(m)
        for m in models
    }


def color_cycle(n: int) -> list[str]:
    """``n`` categorical colours (cycling after seven)."""
    return [OKABE_ITO[i % len(OKABE_ITO)] for i in range(n)]


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Matplotlib settings for column-width figures (small fonts, light grid, no top/right)."""
    settings = {
        "font.size": 7,
        "axes.titlesize": 7.5,
        "axes.labelsize": 7,
        "xtick.labelsize": 6.5,
        "ytick.labelsize": 6.5,
        "legend.fontsize": 6,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.5,
        "lines.linewidth": 1.0,
        "lines.markersize": 3.5,
        "savefig.bbox": "tight",
        "savefig.pad_inches": 0.02,
        "pdf.fonttype": 42,
    }
    with plt.rc_context(settings):
        yield


@contextlib.contextmanager
def quiet_libraries(names: tuple[str, ...] = QUIET_LOGGERS) -> Iterator[None]:
    """Hold the loggers ``names`` at WARNING or above for the ``with`` body, then restore them.

    Under Hydra the root logger is at INFO, so a library's INFO records (pages of font
    subsetting per PDF) would reach the console and the job log.
    """
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def shared_legend(fig, axes, max_columns: int) -> None:
    """One legend above the figure for every panel's labelled artists, each label once (the
    first panel that draws it supplies the handle)."""
    unique = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        unique.update(zip(labels, handles, strict=True))
    fig.legend(
        unique.values(),
        unique.keys(),
        loc="lower center",
        ncol=min(len(unique), max_columns),
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )


def save_figure(fig, out_dir: str | Path, name: str, dpi: int = 300) -> list[Path]:
    """Write ``<out_dir>/<name>.png`` and ``.pdf`` and close the figure.

    Returns:
        The two paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with quiet_libraries():
        for path in paths:
            fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return paths


def cell_text(value: float, fmt: str) -> str:
    """``format(value, fmt)``, with a value that rounds to zero written ``0`` (never ``-0`` or
    ``+0``: a sign there would claim a direction the shown digits do not have)."""
    text = format(value, fmt)
    return format(0.0, fmt.replace("+", "")) if float(text) == 0 else text


def signed_heatmap(
    ax, grid: np.ndarray, fmt: str, fontsize: float, not_applicable: np.ndarray | None = None
):
    """Draw ``grid`` (rows x columns of signed changes) centred on 0 with each finite cell's value
    printed in it (white on strong colours); cells flagged in ``not_applicable`` are grey and read
    "n/a". Returns the image for a colour bar."""
    na = np.zeros(grid.shape, bool) if not_applicable is None else np.asarray(not_applicable)
    grid = np.where(na, np.nan, grid)
    finite = np.isfinite(grid)
    bound = max(float(np.abs(grid[finite]).max()), 1e-6) if finite.any() else 1.0
    image = ax.imshow(
        grid,
        cmap=DIVERGING_CMAP,
        norm=TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound),
        aspect="auto",
        interpolation="nearest",
    )
    ax.grid(False)
    for i, j in zip(*np.nonzero(finite), strict=True):
        ax.text(
            j,
            i,
            cell_text(grid[i, j], fmt),
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if abs(grid[i, j]) > 0.6 * bound else "black",
        )
    for i, j in zip(*np.nonzero(na), strict=True):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=NA_COLOR, edgecolor="none"))
        ax.text(j, i, "n/a", ha="center", va="center", fontsize=fontsize, color="#555555")
    return image
