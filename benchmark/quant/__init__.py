"""Fake-quant engine: simulate every precision and granularity of the benchmark on any model.

``quantize(model, QuantSpec(...))`` returns a quantized copy, ``calibrate(qmodel, batches)``
collects static ranges, ``save_ranges``/``load_ranges`` cache them, and
``quantization_table(qmodel, example)`` reports every compute op, quantized or left in float,
and ``quant_table_hash`` condenses it into a short id. Definitions and every
policy choice are documented in the submodules: ``spec`` (defaults and why), ``granularity``
(axes), ``primitives`` (grids and formulas), ``modules`` and ``attention`` (what each operator
quantizes), ``factorized`` (integer execution).

Extension points, one module per entry:

- granularity policies: ``benchmark/quant/policies/`` (operator kind -> granularities);
- observers: ``benchmark/quant/observers/`` (range estimators, by name);
- algorithms: ``benchmark/quant/algorithms/`` (hooks around calibration, by name);
- number formats: ``formats`` (precision strings), ``elements`` (FP8/FP6/FP4/MX element
  grids), ``blocks`` (MX, NVFP4, group-wise scales);
- quantization-aware training: ``qat.make_learnable`` (straight-through rounding, learnable
  scales and offsets).
"""

from __future__ import annotations

from benchmark.quant.algorithms import ALGORITHMS, Algorithm, float_reference, register_algorithm
from benchmark.quant.api import (
    FloatCast,
    calibrate,
    copy_ranges,
    load_ranges,
    needs_labels,
    quant_table_hash,
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
from benchmark.quant.formats import precision_format
from benchmark.quant.granularity import (
    Granularity,
    PerAxis,
    PerBlock,
    PerOutputChannel,
    PerTensor,
    PerToken,
    PerVoxel,
)
from benchmark.quant.observers import OBSERVERS, register_observer
from benchmark.quant.policies import POLICIES, register_policy
from benchmark.quant.qat import make_learnable
from benchmark.quant.spec import QuantSpec, parse_precision

__all__ = [
    "QuantSpec",
    "parse_precision",
    "precision_format",
    "quantize",
    "calibrate",
    "needs_labels",
    "save_ranges",
    "load_ranges",
    "copy_ranges",
    "quantization_table",
    "quant_table_hash",
    "quantized_layer_names",
    "FloatCast",
    "Granularity",
    "PerTensor",
    "PerAxis",
    "PerToken",
    "PerVoxel",
    "PerOutputChannel",
    "PerBlock",
    "POLICIES",
    "OBSERVERS",
    "ALGORITHMS",
    "Algorithm",
    "register_policy",
    "register_observer",
    "register_algorithm",
    "float_reference",
    "make_learnable",
    "QuantError",
    "QuantSpecError",
    "NonFiniteError",
    "NoQuantizableLayerError",
    "CalibrationError",
    "UncalibratedError",
    "RangesMismatchError",
]
