"""Which rows a figure reads: sweep (evaluate) rows, sensitivity rows, deployment rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

__all__ = ["deploy_rows", "mean_ci", "sweep_rows"]


def sweep_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Rows of the standard evaluation (``task=evaluate``; rows without a sensitivity ``mode``)."""
    rows = results
    if "task" in rows.columns:
        rows = rows[rows["task"].fillna("evaluate") == "evaluate"]
    if "mode" in rows.columns:
        rows = rows[rows["mode"].isna()]
    if "backend" in rows.columns:
        rows = rows[rows["backend"].isna()]
    return rows


def deploy_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Rows of deployment runs (those with a ``backend``)."""
    if "backend" not in results.columns:
        return results.iloc[0:0]
    return results[results["backend"].notna()]


def mean_ci(values: np.ndarray, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean over cases (NaN, NaN with fewer than 2)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2 or np.all(values == values[0]):
        return (float("nan"), float("nan")) if len(values) < 2 else (values[0], values[0])
    result = bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=2000,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
