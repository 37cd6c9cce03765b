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
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

__all__ = [
    "COLUMN_WIDTH_IN",
    "DIVERGING_CMAP",
    "OKABE_ITO",
    "PlotSkipped",
    "color_cycle",
    "paper_style",
    "save_figure",
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


class PlotSkipped(Exception):
    """The results lack what a figure needs; the message says what is missing."""


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


def save_figure(fig, out_dir: str | Path, name: str, dpi: int = 300) -> list[Path]:
    """Write ``<out_dir>/<name>.png`` and ``.pdf`` and close the figure.

    Returns:
        The two paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return paths


def signed_heatmap(ax, grid: np.ndarray, fmt: str, fontsize: float):
    """Draw ``grid`` (rows x columns of signed changes) centred on 0 with each finite cell's value
    printed in it (white on strong colours); returns the image for a colour bar."""
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
            format(grid[i, j], fmt),
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if abs(grid[i, j]) > 0.6 * bound else "black",
        )
    return image
