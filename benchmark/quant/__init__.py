"""Fake-quant engine: simulate every precision and granularity of the benchmark on any model.

``quantize(model, QuantSpec(...))`` returns a quantized copy, ``calibrate(qmodel, batches)``
collects static ranges, ``save_ranges``/``load_ranges`` cache them, and
``quantization_table(qmodel)`` reports which module was quantized how. Definitions and every
policy choice are documented in the submodules: ``spec`` (defaults and why), ``granularity``
(axes), ``primitives`` (grids and formulas), ``observers`` (range estimators), ``modules`` and
``attention`` (what each operator quantizes), ``factorized`` (integer execution).
"""

from __future__ import annotations

from benchmark.quant.api import (
    FloatCast,
    calibrate,
    copy_ranges,
    load_ranges,
    quantization_table,
    quantize,
    quantized_layer_names,
    save_ranges,
)
from benchmark.quant.errors import (
    CalibrationError,
    NonFiniteError,
    NoQuantizableLayerError,
    QuantError,
    QuantSpecError,
    RangesMismatchError,
    UncalibratedError,
)
from benchmark.quant.granularity import Granularity, PerAxis, PerTensor, PerToken, PerVoxel
from benchmark.quant.spec import QuantSpec, parse_precision

__all__ = [
    "QuantSpec",
    "parse_precision",
    "quantize",
    "calibrate",
    "save_ranges",
    "load_ranges",
    "copy_ranges",
    "quantization_table",
    "quantized_layer_names",
    "FloatCast",
    "Granularity",
    "PerTensor",
    "PerAxis",
    "PerToken",
    "PerVoxel",
    "QuantError",
    "QuantSpecError",
    "NonFiniteError",
    "NoQuantizableLayerError",
    "CalibrationError",
    "UncalibratedError",
    "RangesMismatchError",
]
