"""Text renderings of the results table: Markdown and LaTeX (booktabs) of the display
strings, CSV of the numbers (one value per column, for machines)."""

from __future__ import annotations

import pandas as pd

from benchmark.report.table import make_table, numeric_table

__all__ = ["FORMATS", "render", "table_text"]

FORMATS = ("md", "csv", "tex")
_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "%": r"\%",
    "&": r"\&",
    "_": r"\_",
    "#": r"\#",
    "$": r"\$",
}
_TEX_SYMBOLS = {"↑": r"$\uparrow$", "Δ": r"$\Delta$", "–": "--"}


def _tex(text: object) -> str:
    out = "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))
    for symbol, command in _TEX_SYMBOLS.items():
        out = out.replace(symbol, command)
    return out


def render(table: pd.DataFrame, fmt: str = "md") -> str:
    """Render ``table`` as ``md`` (pipe table), ``csv`` or ``tex`` (tabular, booktabs).

    For the results table use :func:`table_text`, which writes CSV from the numbers rather
    than from the display strings.

    Markdown and LaTeX are written here rather than through ``DataFrame.to_markdown`` /
    ``Styler.to_latex`` to avoid the optional ``tabulate`` dependency and to control escaping
    of ``%``, ``_`` and the ``↑`` / ``Δ`` symbols.

    Raises:
        ValueError: ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt == "csv":
        return table.to_csv(index=False)
    cells = [[str(v) for v in row] for row in table.itertuples(index=False)]
    header = [str(c) for c in table.columns]
    if fmt == "md":
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines += [
            "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in cells
        ]
        return "\n".join(lines) + "\n"
    if fmt == "tex":
        lines = [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule"]
        lines.append(" & ".join(_tex(h) for h in header) + r" \\")
        lines.append(r"\midrule")
        lines += [" & ".join(_tex(c) for c in r) + r" \\" for r in cells]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"format={fmt!r} is not one of {list(FORMATS)}")


def table_text(
    results: pd.DataFrame,
    fmt: str = "md",
    ci: bool = False,
    published: pd.DataFrame | None = None,
    calibration: bool = False,
) -> str:
    """The results table in ``fmt``: :func:`make_table` for md/tex, :func:`numeric_table`
    (scores, drops and CI bounds as plain numbers) for csv; ``calibration`` adds ECE and Brier.

    Raises:
        ValueError: ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not one of {list(FORMATS)}")
    if fmt == "csv":
        return numeric_table(results, ci=ci, published=published, calibration=calibration).to_csv(
            index=False
        )
    return render(make_table(results, ci=ci, published=published, calibration=calibration), fmt)
