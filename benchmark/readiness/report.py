"""Read result files, build one scorecard per model and write its Markdown and HTML."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmark.readiness.evidence import deploy_evidence, sweep_evidence
from benchmark.readiness.render import to_html, to_markdown
from benchmark.readiness.scorecard import Scorecard, build_scorecard
from benchmark.results import read_results

__all__ = ["load_results", "scorecard_for", "write_reports"]


def load_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate tidy result files (:func:`benchmark.results.read_results` of each path).

    Raises:
        FileNotFoundError: a path with no results, or no path at all.
        ValueError: a file that is not tidy results.
    """
    if not paths:
        raise FileNotFoundError("no result files given")
    return pd.concat([read_results(p) for p in paths], ignore_index=True)


def scorecard_for(results: pd.DataFrame, model: str, tolerance: float = 0.01) -> Scorecard:
    """The filled scorecard of ``model``.

    Raises:
        KeyError: ``model`` has no rows (names the models that do).
    """
    models = sorted(results["model"].dropna().unique())
    if model not in models:
        raise KeyError(f"no rows for model {model!r}; models in the results: {models}")
    return build_scorecard(
        model, sweep_evidence(results, model), deploy_evidence(results, model), tolerance
    )


def write_reports(
    results: pd.DataFrame, models: Sequence[str], out_dir: str | Path, tolerance: float = 0.01
) -> list[Path]:
    """Write ``readiness_<model>.md`` and ``.html`` for each model; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for model in models:
        card = scorecard_for(results, model, tolerance)
        md, page = out / f"readiness_{model}.md", out / f"readiness_{model}.html"
        md.write_text(to_markdown(card))
        page.write_text(to_html(card))
        written += [md, page]
    return written
