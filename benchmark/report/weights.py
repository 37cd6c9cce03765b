"""Which weights each model's rows were made with: a table must not mix a retrained model's
rows with its predecessor's without saying so."""

from __future__ import annotations

import pandas as pd

__all__ = ["mixed_weights_notes"]


def mixed_weights_notes(results: pd.DataFrame) -> list[str]:
    """One line per model whose rows come from more than one set of weights (the ``weights``
    column, :func:`benchmark.points.sources.weights_digest`), naming the runs made with weights
    other than the newest run's. Rows written before runs recorded their weights are left out."""
    if "weights" not in results.columns:
        return []
    known = results.dropna(subset=["weights"])
    notes = []
    for model, rows in known.groupby("model", sort=True):
        if rows["weights"].nunique() < 2:
            continue
        newest = rows.sort_values("created")["weights"].iloc[-1]
        stale = sorted(rows.loc[rows["weights"] != newest, "run_id"].unique())
        notes.append(
            f"warning: {model} rows come from {rows['weights'].nunique()} sets of weights; "
            f"{len(stale)} run(s) predate the newest ({newest}), e.g. {stale[0]}: rerun the "
            "experiment to remake them"
        )
    return notes
