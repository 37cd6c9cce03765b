"""A run point read back from the resolved config a run wrote beside its rows.

Reports find a run's cached FP32 predictions from that file long after the run; this rebuilds
the typed settings from the plain YAML (no Hydra: the file is already resolved). Keys a run of
an older version did not write read as ``None``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import yaml

from benchmark.quant import QuantSpec
from benchmark.schema import RunPoint
from benchmark.schema.groups import Config

__all__ = ["point_from_yaml"]


def _build(cls: type, value: Any) -> Any:
    """``value`` (a mapping) as an instance of the dataclass ``cls``, nested fields included."""
    if not isinstance(value, dict):
        return value
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        inner = _dataclass_in(hints[f.name])
        raw = value.get(f.name)
        kwargs[f.name] = _build(inner, raw) if inner is not None else raw
    return cls(**kwargs)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field's type names (``X`` or ``X | None``), else None."""
    candidates = typing.get_args(hint) or (hint,)
    return next((c for c in candidates if dataclasses.is_dataclass(c)), None)


def point_from_yaml(text: str, run_id: str = "", config_hash: str = "") -> RunPoint:
    """The :class:`RunPoint` of a run's resolved config (its spec is the precision alone)."""
    plain = yaml.safe_load(text) or {}
    config = _build(Config, plain)
    precision = (plain.get("precision") or {}).get("name") or "fp32"
    return RunPoint.of(config, QuantSpec(precision), config_hash, run_id, text)
