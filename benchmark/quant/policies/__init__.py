"""Granularity policies, one module each (``per_tensor``, ``per_channel_token``, ``adaptive``,
``per_block``, ``none``); see :mod:`benchmark.quant.policies.base` for the table format."""

from __future__ import annotations

from benchmark.quant.policies.base import (
    ATTENTION,
    CONV,
    CONV_1X1,
    CONV_TRANSPOSED,
    LINEAR,
    OP_KINDS,
    POLICIES,
    GranularityPolicy,
    register_policy,
)
from benchmark.quant.registry import discover

__all__ = [
    "ATTENTION",
    "CONV",
    "CONV_1X1",
    "CONV_TRANSPOSED",
    "LINEAR",
    "OP_KINDS",
    "POLICIES",
    "GranularityPolicy",
    "register_policy",
]

discover(__name__, __path__)
