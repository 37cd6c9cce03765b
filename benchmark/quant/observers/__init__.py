"""Range observers, one module each, registered by ``QuantSpec.observer`` name.

``minmax``, ``moving_average``, ``percentile``, ``mse`` and ``histogram``; the interface and the
registry are in :mod:`benchmark.quant.observers.base`. Adding an observer is one module here
(a :class:`Observer` subclass decorated with :func:`register_observer`) and one
``conf/observer/<name>.yaml``.
"""

from __future__ import annotations

import torch

from benchmark.quant.granularity import Granularity
from benchmark.quant.observers.base import (
    OBSERVERS,
    FakeQuant,
    Observer,
    integer_fake_quant,
    register_observer,
    resolve_mapping,
)
from benchmark.quant.registry import discover

__all__ = [
    "OBSERVERS",
    "Observer",
    "RangeObserver",
    "estimate_range",
    "make_observer",
    "register_observer",
    "resolve_mapping",
]

discover(__name__, __path__)


def make_observer(
    kind: str,
    granularity: Granularity,
    *,
    bits: int,
    mapping: str,
    fake_quant: FakeQuant | None = None,
    **options,
) -> Observer:
    """The registered observer ``kind`` for one operand; options it does not read are ignored
    (a spec carries every observer's options)."""
    cls = OBSERVERS.get(kind)
    own = {k: v for k, v in options.items() if k in cls.options}
    return cls(granularity, bits=bits, mapping=mapping, fake_quant=fake_quant, **own)


#: the constructor's earlier name: ``RangeObserver("minmax", PerTensor(), bits=8, mapping=...)``
RangeObserver = make_observer


def estimate_range(
    x: torch.Tensor,
    scale_dims: tuple[int, ...],
    kind: str,
    *,
    bits: int = 8,
    mapping: str = "symmetric",
    fake_quant: FakeQuant | None = None,
    **options,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's (or one input's) range per scale group with the observer ``kind``.

    Returns:
        ``(lo, hi)``, each of shape ``x.shape`` with reduced dimensions set to 1.
    """
    cls = OBSERVERS.get(kind)
    own = {k: v for k, v in options.items() if k in cls.options}
    return cls.estimate(
        x.detach().float(),
        scale_dims,
        mapping=mapping,
        fake_quant=fake_quant or integer_fake_quant(bits),
        **own,
    )
