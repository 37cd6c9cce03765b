"""Run-time selection with fallback: serve the INT8 model, keep the FP32 model ready.

Clinical deployments ship both models. :class:`FallbackSelector` loads both, serves INT8, and
switches to FP32 when

* the INT8 model fails to load (``load``): FP32 serves from the start;
* an INT8 call raises (``runtime_error``): that call is answered by FP32, and FP32 keeps
  serving (a model that raised once is not trusted again);
* in validation mode, a call's INT8 argmax differs from FP32's on more than
  ``max_disagreement`` of the voxels (``disagreement``): that call is answered by FP32, which
  keeps serving.

Each switch is an :class:`Fallback` event in :attr:`FallbackSelector.events` and a WARNING log
record with the reason. FP32 failing to load, or raising, is an error: there is nothing left to
fall back to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Fallback", "FallbackSelector", "disagreement"]

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Fallback:
    """One switch to FP32.

    Attributes:
        reason: ``load``, ``runtime_error`` or ``disagreement``.
        detail: the error message, or the measured disagreement and the threshold.
        call: index of the call that caused it (``-1`` for a load failure).
    """

    reason: str
    detail: str
    call: int


def disagreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of voxels whose argmax class differs between two ``[B, K, ...]`` logit arrays."""
    if logits.shape != reference.shape:
        raise ValueError(f"logit shapes differ: {logits.shape} vs {reference.shape}")
    return float(np.mean(logits.argmax(1) != reference.argmax(1)))


class FallbackSelector:
    """Serve ``int8`` with ``fp32`` as the fallback.

    Args:
        load_int8: builds the INT8 predictor (may raise: the ``load`` fallback).
        load_fp32: builds the FP32 predictor.
        validate: also run FP32 on every call and compare (validation mode).
        max_disagreement: largest tolerated fraction of voxels whose class changes.
        name: what the log records call the INT8 model.

    Raises:
        ValueError: ``max_disagreement`` outside ``[0, 1]``.
    """

    def __init__(
        self,
        load_int8: Callable[[], Predictor],
        load_fp32: Callable[[], Predictor],
        validate: bool = False,
        max_disagreement: float = 0.005,
        name: str = "int8",
    ):
        if not 0.0 <= max_disagreement <= 1.0:
            raise ValueError(f"max_disagreement={max_disagreement} must be a fraction in [0, 1]")
        self.name, self.validate, self.max_disagreement = name, validate, float(max_disagreement)
        self.events: list[Fallback] = []
        self.calls = 0
        self.int8_calls = 0
        self.last_disagreement = float("nan")
        self.fp32 = load_fp32()
        try:
            self.int8: Predictor | None = load_int8()
        except Exception as exc:  # any load failure means: serve FP32
            self.int8 = None
            self._fall_back("load", f"{type(exc).__name__}: {exc}")

    @property
    def serving(self) -> str:
        """``int8`` while the INT8 model serves, ``fp32`` after a fallback."""
        return "int8" if self.int8 is not None else "fp32"

    def _fall_back(self, reason: str, detail: str) -> None:
        call = -1 if reason == "load" else self.calls - 1
        self.events.append(Fallback(reason, detail, call))
        self.int8 = None
        log.warning("%s: falling back to FP32 (%s): %s", self.name, reason, detail)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits of the serving model for ``x``."""
        self.calls += 1
        if self.int8 is None:
            return self.fp32(x)
        try:
            out = self.int8(x)
        except Exception as exc:  # the INT8 runtime raised: answer with FP32
            self._fall_back("runtime_error", f"{type(exc).__name__}: {exc}")
            return self.fp32(x)
        if self.validate:
            reference = self.fp32(x)
            self.last_disagreement = disagreement(out, reference)
            if self.last_disagreement > self.max_disagreement:
                self._fall_back(
                    "disagreement",
                    f"{self.last_disagreement:.3%} of voxels change class "
                    f"> {self.max_disagreement:.3%}",
                )
                return reference
        self.int8_calls += 1
        return out
