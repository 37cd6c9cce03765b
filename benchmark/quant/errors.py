"""Exception types of the fake-quant engine.

Each error names what is wrong (module name, key, value) and what to do about it, so that a failed
sweep point can be fixed from its log line alone.
"""

from __future__ import annotations

__all__ = [
    "QuantError",
    "QuantSpecError",
    "NonFiniteError",
    "NoQuantizableLayerError",
    "CalibrationError",
    "UncalibratedError",
    "RangesMismatchError",
]


class QuantError(Exception):
    """Base class of every error raised by ``benchmark.quant``."""


class QuantSpecError(QuantError, ValueError):
    """A :class:`~benchmark.quant.spec.QuantSpec` field or spec string is invalid."""


class NonFiniteError(QuantError, ValueError):
    """NaN or Inf found in weights or calibration data."""


class NoQuantizableLayerError(QuantError, ValueError):
    """``quantize`` found no module to quantize after include/exclude filtering."""


class CalibrationError(QuantError, ValueError):
    """``calibrate`` got no batches or unusable batches."""


class UncalibratedError(QuantError, RuntimeError):
    """A static quantizer ran before its ranges were calibrated or loaded."""


class RangesMismatchError(QuantError, ValueError):
    """A ranges file does not match the quantized model it is loaded into."""
