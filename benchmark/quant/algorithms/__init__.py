"""Quantization algorithms, one module each, dispatched by ``QuantSpec.algorithm``.

``none`` (round to nearest) is the default; :mod:`benchmark.quant.algorithms.base` defines the
hooks. Adding an algorithm is one module here (an :class:`Algorithm` subclass decorated with
:func:`register_algorithm`) and one ``conf/algorithm/<name>.yaml``.
"""

from __future__ import annotations

from benchmark.quant.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    float_reference,
    register_algorithm,
)
from benchmark.quant.registry import discover

__all__ = ["ALGORITHMS", "Algorithm", "float_reference", "register_algorithm"]

discover(__name__, __path__)
