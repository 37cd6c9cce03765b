"""Sensitivity analyses: which layers break a quantized model, and why.

- :mod:`benchmark.analysis.sensitivity`: ``run_sensitivity(cfg)``, the ``task=sensitivity``
  pipeline (one unit at a time quantized, the inverse, weight vs activation attribution).
- :mod:`benchmark.analysis.activations`: activation statistics and the FP32-vs-quantized shift
  of every quantized layer input, collected by hooks in one streaming pass.
- :mod:`benchmark.analysis.streaming`: the streaming summaries (moments, histogram, SQNR, KL).
- :mod:`benchmark.analysis.summary`: drops and statistics tables from the tidy rows.
- :mod:`benchmark.analysis.config`: ``SensitivityConfig`` (schema of ``conf/sensitivity/``).

Nothing is imported here: :mod:`benchmark.config` imports the config module while it is itself
being imported, and the pipeline module imports :mod:`benchmark.config`.
"""
