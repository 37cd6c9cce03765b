"""Point labels that do not overprint: each label takes the first free spot around its point.

A label is tried at offsets on rings of growing radius around its point (right, left, above,
below, then the diagonals), and kept at the first spot where its box overlaps no other label,
no marker and stays inside the axes; spots beyond the first ring get a thin leader line back to
the point. Call it after the layout is final (after ``tight_layout``), since the boxes are
measured in display coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.transforms import Bbox

__all__ = ["place_labels"]

#: Ring radii (points) and directions (unit vectors) of the tried offsets, nearest first.
_RADII_PT = (3.0, 8.0, 14.0, 22.0)
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))
_ALIGN = {1: "left", -1: "right", 0: "center"}
_VALIGN = {1: "bottom", -1: "top", 0: "center"}


def _overlap(box: Bbox, others: Sequence[Bbox]) -> float:
    """Total area of ``box`` shared with ``others`` (display units squared)."""
    total = 0.0
    for other in others:
        w = min(box.x1, other.x1) - max(box.x0, other.x0)
        h = min(box.y1, other.y1) - max(box.y0, other.y0)
        if w > 0 and h > 0:
            total += w * h
    return total


def place_labels(
    ax,
    xs: Sequence[float],
    ys: Sequence[float],
    texts: Sequence[str],
    colors: Sequence[str],
    fontsize: float,
    marker_pt: float = 4.0,
    others_xy: np.ndarray | None = None,
    lines_xy: Sequence[np.ndarray] = (),
) -> list:
    """Annotate data points ``(xs[i], ys[i])`` with ``texts[i]`` in ``colors[i]`` without overlap.

    Args:
        ax: axes whose layout is final.
        xs, ys: data coordinates of the points.
        texts: one label per point.
        colors: text colour per point (the colour of its series ties a label to its series).
        fontsize: text size in points.
        marker_pt: half-width of the square kept free around every point, in points.
        others_xy: ``[N, 2]`` data coordinates of unlabelled markers that labels must avoid too.
        lines_xy: polylines (``[M, 2]`` data coordinates each) that labels must not cross.

    Returns:
        The annotations, in the order of ``texts``.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    scale = fig.dpi / 72.0
    points = ax.transData.transform(np.column_stack([xs, ys]))
    extra = np.empty((0, 2)) if others_xy is None else ax.transData.transform(others_xy)
    half = marker_pt * scale
    markers = [
        Bbox([[x - half, y - half], [x + half, y + half]]) for x, y in np.vstack([points, extra])
    ]
    line_boxes = [_segment_box(a, b) for line in lines_xy for a, b in _segments(ax, line)]
    taken: list[Bbox] = []
    inside = ax.get_window_extent(renderer)
    placed = []
    for k, (text, color) in enumerate(zip(texts, colors, strict=True)):
        best = None
        for ring, radius in enumerate(_RADII_PT):
            for dx, dy in _DIRECTIONS:
                offset = (radius * dx, radius * dy)
                note = ax.annotate(
                    text,
                    (xs[k], ys[k]),
                    xytext=offset,
                    textcoords="offset points",
                    ha=_ALIGN[dx],
                    va=_VALIGN[dy],
                    fontsize=fontsize,
                    color=color,
                )
                box = note.get_window_extent(renderer)
                others = taken + line_boxes + [m for i, m in enumerate(markers) if i != k]
                cost = _overlap(box, others) + _outside(box, inside)
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, note, box, ring)
                else:
                    note.remove()
                if cost == 0:
                    break
            if best[0] == 0:
                break
        _, note, box, ring = best
        if ring > 0:
            ax.annotate(
                "",
                (xs[k], ys[k]),
                xytext=note.xyann,
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "color": color, "linewidth": 0.4, "shrinkB": 1.5},
            )
        taken.append(box)
        placed.append(note)
    return placed


def _outside(box: Bbox, frame: Bbox) -> float:
    """Area of ``box`` beyond ``frame``: a label leaving the axes counts as overlapping."""
    inner = _overlap(box, [frame])
    return box.width * box.height - inner


def _segments(ax, line: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive vertex pairs of a polyline, in display coordinates."""
    xy = ax.transData.transform(np.asarray(line, float))
    return list(zip(xy[:-1], xy[1:], strict=True))


def _segment_box(a: np.ndarray, b: np.ndarray, half: float = 1.0) -> Bbox:
    """Box around an axis-parallel segment (step lines), ``half`` display units thick."""
    (x0, y0), (x1, y1) = np.minimum(a, b), np.maximum(a, b)
    return Bbox([[x0 - half, y0 - half], [x1 + half, y1 + half]])
