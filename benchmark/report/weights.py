"""Which weights each model's rows were made with: a table must not mix a retrained model's
rows with its predecessor's without saying so."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import pandas as pd

from benchmark.models import shipped_weights_path
from benchmark.points.cache import content_digest

__all__ = ["mixed_weights_notes", "shipped_digests", "unshipped_weights_notes"]


def mixed_weights_notes(results: pd.DataFrame) -> list[str]:
    """One line per model whose rows come from more than one set of weights (the ``weights``
    column, :func:`benchmark.points.sources.weights_digest`), naming the runs made with weights
    other than the newest run's. Rows written before runs recorded their weights are left out."""
    notes = []
    for model, rows in _rows_with_known_weights(results):
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


def shipped_digests(models: Iterable[str]) -> dict[str, str]:
    """Digest of the weights shipped today for each of ``models`` that has shipped weights."""
    paths = {model: shipped_weights_path(model) for model in models}
    return {model: content_digest(path) for model, path in paths.items() if path.is_file()}


def unshipped_weights_notes(results: pd.DataFrame, shipped: Mapping[str, str]) -> list[str]:
    """One line per model some of whose rows were made with weights other than the ones shipped
    today (``shipped``: model -> digest): after a baseline is retrained, a committed table that
    has not been rerun describes its predecessor. Rows of runs on a user's own checkpoint of a
    shipped model differ on purpose, so the line says how to tell."""
    notes = []
    for model, rows in _rows_with_known_weights(results):
        current = shipped.get(model)
        if current is None:
            continue
        other = rows.loc[rows["weights"] != current]
        if other.empty:
            continue
        digests = ", ".join(sorted(other["weights"].unique()))
        notes.append(
            f"warning: {other['run_id'].nunique()} {model} run(s) were made with weights "
            f"{digests}, not the shipped ones ({current}): rerun the experiment to remake them "
            "(runs on your own checkpoint differ on purpose)"
        )
    return notes


def _rows_with_known_weights(results: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each model's rows that recorded their weights, by model name."""
    if "weights" not in results.columns:
        return
    for model, rows in results.dropna(subset=["weights"]).groupby("model", sort=True):
        yield str(model), rows
