"""Scorecard -> Markdown and standalone HTML (no template engine; tables are small)."""

from __future__ import annotations

import html
import math

import pandas as pd

from benchmark.readiness.scorecard import Scorecard

__all__ = ["to_markdown", "to_html"]


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _md_table(header: list[str], rows: list[list[object]]) -> list[str]:
    def line(cells: list[object]) -> str:
        return "| " + " | ".join(_fmt(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def _score_text(score: int | None) -> str:
    return "not measured" if score is None else f"{score}/5"


def _overall_text(card: Scorecard) -> tuple[str, str]:
    """The headline and its explanation: the percentage, and whether the assessment is complete."""
    overall, total = card.overall_percent, len(card.criteria)
    if math.isnan(overall):
        return "Overall: not measured", "no criterion has evidence; see What to run"
    formula = f"overall = 100 x sum of scores / (5 x {total}), unmeasured criteria counting 0"
    if card.complete:
        return f"Overall: {overall:.0f}%", f"all {total} criteria scored; {formula}"
    return (
        f"Overall: {overall:.0f}% (incomplete)",
        f"only {card.n_scored} of {total} criteria scored; {formula}",
    )


def _to_run(card: Scorecard) -> list[list[object]]:
    return [[c.name, c.to_measure] for c in card.missing]


def _risk_rows(card: Scorecard) -> tuple[list[str], list[list[object]]]:
    header = ["source", "class", "class name", "FP32 DSC", "DSC", "relative drop"]
    rows = [
        [
            r["source"],
            int(r["class"]),
            r["class_name"],
            r["fp32_dsc"],
            r["dsc"],
            f"{100 * r['rel_drop']:.2f}%" if pd.notna(r["rel_drop"]) else None,
        ]
        for _, r in card.risks.iterrows()
    ]
    return header, rows


def to_markdown(card: Scorecard) -> str:
    """The scorecard as a Markdown document (title, summary table, one section per criterion)."""
    headline, explanation = _overall_text(card)
    lines = [
        f"# Quantization readiness: {card.model}",
        "",
        f"**{headline}** ({explanation})",
        "",
        f"**Recommendation:** {card.recommendation}",
        "",
        *_md_table(
            ["criterion", "score", "rule"],
            [[c.name, _score_text(c.score), c.rule] for c in card.criteria],
        ),
        "",
    ]
    if card.missing:
        lines += [
            "## What to run",
            "",
            "Each command adds the missing evidence to `results/<experiment_name>/`; pass that "
            "folder to `python -m benchmark.readiness` beside the others.",
            "",
            *_md_table(["criterion", "command"], _to_run(card)),
            "",
        ]
    for c in card.criteria:
        lines += [
            f"## {c.name}: {_score_text(c.score)}",
            "",
            f"Rule: {c.rule}.",
            "",
            f"Applied: {c.why}.",
            "",
        ]
        lines += _md_table(["measured", "value"], [[k, v] for k, v in c.measured.items()])
        lines.append("")
    lines += ["## Key risks", ""]
    if card.risks.empty:
        lines += ["Not measured (no per-class results).", ""]
    else:
        lines += [*_md_table(*_risk_rows(card)), ""]
    for note in card.notes:
        lines += [f"- {note}"]
    return "\n".join(lines).rstrip() + "\n"


def _html_table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(card: Scorecard) -> str:
    """The scorecard as one self-contained HTML page (inline CSS, no scripts)."""
    esc = html.escape
    headline, explanation = _overall_text(card)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Quantization readiness: {esc(card.model)}</title>",
        "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;}"
        "table{border-collapse:collapse;margin:0.5rem 0 1.5rem;}"
        "td,th{border:1px solid #bbb;padding:0.25rem 0.5rem;text-align:left;vertical-align:top;}"
        "th{background:#eee;}</style></head><body>",
        f"<h1>Quantization readiness: {esc(card.model)}</h1>",
        f"<p><strong>{esc(headline)}</strong> ({esc(explanation)})</p>",
        f"<p><strong>Recommendation:</strong> {esc(card.recommendation)}</p>",
        _html_table(
            ["criterion", "score", "rule"],
            [[c.name, _score_text(c.score), c.rule] for c in card.criteria],
        ),
    ]
    if card.missing:
        parts += [
            "<h2>What to run</h2>",
            "<p>Each command adds the missing evidence to <code>results/&lt;experiment_name&gt;/"
            "</code>; pass that folder to <code>python -m benchmark.readiness</code> beside the "
            "others.</p>",
            _html_table(["criterion", "command"], _to_run(card)),
        ]
    for c in card.criteria:
        parts += [
            f"<h2>{esc(c.name)}: {esc(_score_text(c.score))}</h2>",
            f"<p>Rule: {esc(c.rule)}.<br>Applied: {esc(c.why)}.</p>",
            _html_table(["measured", "value"], [[k, v] for k, v in c.measured.items()]),
        ]
    parts.append("<h2>Key risks</h2>")
    parts.append(
        "<p>Not measured (no per-class results).</p>"
        if card.risks.empty
        else _html_table(*_risk_rows(card))
    )
    if card.notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in card.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
