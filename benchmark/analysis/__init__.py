"""Sensitivity analyses: which layers break a quantized model, and why.

- :mod:`benchmark.analysis.sensitivity`: ``run_sensitivity(context)``, the ``task=sensitivity``
  pipeline (one unit at a time quantized, the inverse, weight vs activation attribution).
- :mod:`benchmark.analysis.activations`: activation statistics and the FP32-vs-quantized shift
  of every quantized layer input, collected by hooks in one streaming pass.
- :mod:`benchmark.analysis.streaming`: the streaming summaries (moments, histogram, SQNR, KL).
- :mod:`benchmark.analysis.summary`: drops and statistics tables from the tidy rows.
- :mod:`benchmark.schema.sensitivity`: ``SensitivityConfig`` (schema of ``conf/sensitivity/``).
"""

from __future__ import annotations

from benchmark.analysis.sensitivity import run_sensitivity
from benchmark.analysis.summary import activation_table, sensitivity_table, spec_label

__all__ = ["activation_table", "run_sensitivity", "sensitivity_table", "spec_label"]
