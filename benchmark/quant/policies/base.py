"""Granularity policies: a table from operator kind to (weight, activation) granularity.

A policy is what a ``QuantSpec.granularity`` name means. Layers look up their operator kind in
it and :func:`benchmark.quant.granularity.bind` turns the entries into axes, so no layer tests a
granularity name. ``large_kernel_per_voxel`` entries replace table rows when
``QuantSpec.large_kernel_per_voxel`` is set. ``precision_kind`` says which precisions the policy
applies to: ``scaled`` (integer and FP8 grids with per-tensor/channel/token/voxel scales),
``block`` (formats that set their own block scales) or ``cast`` (fp32/fp16/bf16).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from benchmark.quant.granularity import Granularity
from benchmark.quant.registry import Registry

__all__ = [
    "CONV",
    "CONV_1X1",
    "CONV_TRANSPOSED",
    "LINEAR",
    "ATTENTION",
    "OP_KINDS",
    "GranularityPolicy",
    "POLICIES",
    "register_policy",
]

CONV = "conv"
CONV_1X1 = "conv_1x1"  # every kernel size 1, transposed or not
CONV_TRANSPOSED = "conv_transposed"
LINEAR = "linear"
ATTENTION = "attention_matmul"  # the operands of Q.K^T and A.V (no weights)
OP_KINDS = (CONV, CONV_1X1, CONV_TRANSPOSED, LINEAR, ATTENTION)

Entry = tuple[Granularity | None, Granularity]


@dataclass(frozen=True)
class GranularityPolicy:
    """One named granularity.

    Args:
        name: the ``QuantSpec.granularity`` value.
        description: one line for tables and ``--help``.
        precision_kind: ``scaled``, ``block`` or ``cast`` (see the module docstring).
        table: ``{op kind: (weight granularity, activation granularity)}`` for every kind of
            :data:`OP_KINDS` (empty for ``cast``).
        large_kernel_per_voxel: rows that replace ``table`` rows under that spec option.
    """

    name: str
    description: str
    precision_kind: str
    table: Mapping[str, Entry]
    large_kernel_per_voxel: Mapping[str, Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [k for k in OP_KINDS if k not in self.table]
        if self.precision_kind != "cast" and missing:
            raise ValueError(f"granularity policy {self.name!r} lacks rows for {missing}")

    def lookup(self, kind: str, large_kernel_per_voxel: bool = False) -> Entry:
        """``(weight granularity, activation granularity)`` of an operator kind."""
        if large_kernel_per_voxel and kind in self.large_kernel_per_voxel:
            return self.large_kernel_per_voxel[kind]
        return self.table[kind]


POLICIES: Registry[GranularityPolicy] = Registry("QuantSpec.granularity")


def register_policy(policy: GranularityPolicy) -> GranularityPolicy:
    """Make ``policy`` available as ``QuantSpec(granularity=policy.name)``."""
    return POLICIES.register(policy.name, policy)
