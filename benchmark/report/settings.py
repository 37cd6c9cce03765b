"""Which settings tell runs apart: the point keys rows carry, as the text tables and figures show.

A run's quantization point is its precision, bit widths, granularity, observer, algorithm and
calibration size, plus every other field of the quantization spec the rows carry (a run written
before carries none). A spec carries every observer's options (``averaging_constant`` of the
moving average, ``percentile``, ...), so an option only tells runs apart among the runs whose
activation or weight observer reads it; elsewhere its text is ``–``.
"""

from __future__ import annotations

from dataclasses import fields

import pandas as pd

from benchmark.quant import OBSERVERS, QuantSpec

__all__ = ["NOT_USED", "POINT_KEYS", "SPEC_KEYS", "point_keys", "setting_text", "varying_settings"]

#: the text of an observer option on a run whose observers do not read it
NOT_USED = "–"
POINT_KEYS = ["precision", "w_bits", "a_bits", "granularity", "observer", "algorithm", "calib_n"]
#: the other spec fields rows carry (one column each)
SPEC_KEYS = [f.name for f in fields(QuantSpec) if f.name not in POINT_KEYS]


def point_keys(results: pd.DataFrame) -> list[str]:
    """The point keys and the spec fields ``results`` carries, in that order."""
    return POINT_KEYS + [k for k in SPEC_KEYS if k in results.columns]


def setting_text(lines: pd.DataFrame) -> pd.DataFrame:
    """The point keys of ``lines`` as text, with :data:`NOT_USED` for an observer option on a
    run whose activation and weight observers do not read it."""
    shown = lines[point_keys(lines)].astype(str)
    none = pd.Series(None, index=lines.index, dtype=object)
    used = [
        {*OBSERVERS.get(_observer_name(a)).options, *OBSERVERS.get(_observer_name(w)).options}
        for a, w in zip(
            lines.get("observer", none), lines.get("weight_observer", none), strict=True
        )
    ]
    for option in {o for name in OBSERVERS.names() for o in OBSERVERS.get(name).options}:
        if option in shown.columns:
            shown[option] = [
                v if option in u else NOT_USED for v, u in zip(shown[option], used, strict=True)
            ]
    return shown


def varying_settings(lines: pd.DataFrame, keys: list[str]) -> list[str]:
    """The ``keys`` that take two or more used values among ``lines``."""
    shown = setting_text(lines)
    return [k for k in keys if k in shown and shown[k][shown[k] != NOT_USED].nunique() > 1]


def _observer_name(value) -> str:
    """A row's observer name; unset (NaN, None) and FP32's ``none`` read as the default."""
    return "minmax" if value is None or pd.isna(value) or value == "none" else str(value)
