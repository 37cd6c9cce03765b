"""Statistics over cases: relative drop from the FP32 baseline and a paired bootstrap.

The relative drop is what the published MedQuanBench tables print next to each quantized score,
e.g. ``0.387 (55.6%)`` for nnU-Net W4A4 per-channel DSC against 0.872 in FP32, and ``(1%↑)``
where the quantized model scores higher. The paired bootstrap answers the question the tables
cannot: is the difference between two configurations, evaluated on the same cases, larger than
case-to-case noise? Cases are resampled with replacement, keeping each case's two values
together (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 16).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BootstrapResult", "format_with_drop", "paired_bootstrap", "relative_drop"]


def relative_drop(value: float | np.ndarray, baseline: float | np.ndarray) -> float | np.ndarray:
    r"""Relative drop in percent from the baseline: positive when the score went down.

    .. math::
        \Delta\% = 100 \cdot \frac{\text{baseline} - \text{value}}{\text{baseline}}

    Args:
        value: quantized score(s).
        baseline: FP32 score(s), broadcastable against ``value``.

    Returns:
        Δ% (negative for an increase); NaN where the baseline is 0 or either input is NaN.

    Example:
        >>> round(relative_drop(0.387, 0.872), 1)
        55.6
    """
    value = np.asarray(value, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(baseline != 0, 100.0 * (baseline - value) / baseline, np.nan)
    return float(out) if out.ndim == 0 else out


def format_with_drop(value: float, baseline: float, *, digits: int = 3, pct_digits: int = 1) -> str:
    """A table cell as published: ``0.387 (55.6%)``, with ``↑`` after an increase.

    Args:
        value: quantized score.
        baseline: FP32 score of the same model, dataset and metric.
        digits: decimals of the score.
        pct_digits: decimals of the percentage.

    Returns:
        ``"{value} ({drop}%)"`` for a drop, ``"{value} ({rise}%↑)"`` for an increase,
        ``"{value}"`` when Δ% is undefined (baseline 0 or NaN), ``"nan"`` for a NaN value.
    """
    if math.isnan(value):
        return "nan"
    cell = f"{value:.{digits}f}"
    drop = relative_drop(value, baseline)
    if math.isnan(drop):
        return cell
    if drop < 0:
        return f"{cell} ({-drop:.{pct_digits}f}%↑)"
    return f"{cell} ({drop:.{pct_digits}f}%)"


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of the mean difference ``a - b`` over cases.

    Attributes:
        estimate: mean over cases of ``a - b`` (the point estimate, not a bootstrap mean).
        ci_low, ci_high: percentile confidence interval of the mean difference.
        p_value: two-sided bootstrap p-value ``min(1, 2 min(P(Δ* >= 0), P(Δ* < 0)))``.
        n_cases: pairs used (pairs with a NaN on either side are dropped).
        n_dropped: pairs dropped for NaN.
        n_resamples: bootstrap resamples.
        confidence: confidence level of the interval.
        seed: seed of the resampling generator.
    """

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    n_cases: int
    n_dropped: int
    n_resamples: int
    confidence: float
    seed: int


def _paired(
    a: Sequence[float] | Mapping[str, float], b: Sequence[float] | Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise TypeError("pass a and b both as {case: value} mappings or both as sequences.")
        if set(a) != set(b):
            only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            raise ValueError(
                f"paired bootstrap needs the same cases on both sides; only in a: {only_a[:5]}, "
                f"only in b: {only_b[:5]}."
            )
        keys = sorted(a)
        return (
            np.array([a[k] for k in keys], dtype=np.float64),
            np.array([b[k] for k in keys], dtype=np.float64),
        )
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"a and b must be 1-D and paired by case, got shapes {x.shape}, {y.shape}."
        )
    return x, y


def paired_bootstrap(
    a: Sequence[float] | Mapping[str, float],
    b: Sequence[float] | Mapping[str, float],
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Paired bootstrap over cases for the mean difference between two configurations.

    Each resample draws n cases with replacement and takes the mean of ``a - b`` over them; the
    interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of those
    means, and the p-value is ``min(1, 2 min(P(Δ* >= 0), P(Δ* < 0)))`` over resamples.

    Args:
        a: per-case scores of configuration A (a sequence in case order, or ``{case: value}``).
        b: per-case scores of configuration B on the same cases.
        n_resamples: bootstrap resamples.
        confidence: confidence level of the percentile interval, in (0, 1).
        seed: seed of ``numpy.random.default_rng``; the same inputs and seed give the same
            result.

    Returns:
        :class:`BootstrapResult`.

    Raises:
        ValueError: If cases differ between a and b, fewer than 2 pairs remain, or parameters
            are out of range.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1).")
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples} must be >= 1.")
    x, y = _paired(a, b)
    valid = ~(np.isnan(x) | np.isnan(y))
    diff = x[valid] - y[valid]
    n = diff.shape[0]
    if n < 2:
        raise ValueError(f"paired bootstrap needs at least 2 cases without NaN, got {n}.")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    # Resample in blocks so memory stays ~8 MB whatever n and n_resamples are.
    block = max(1, 1_000_000 // n)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    p_value = min(1.0, 2 * min(float(np.mean(means >= 0)), float(np.mean(means < 0))))
    return BootstrapResult(
        estimate=float(diff.mean()),
        ci_low=float(low),
        ci_high=float(high),
        p_value=p_value,
        n_cases=n,
        n_dropped=int((~valid).sum()),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
