"""Deployment: ONNX export, real INT8 with ONNX Runtime, latency, agreement and the accuracy gate.

Modules, in pipeline order: :mod:`~benchmark.deploy.export` (FP32 -> ONNX, checked),
:mod:`~benchmark.deploy.ort_quant` (static/dynamic INT8, FP16), :mod:`~benchmark.deploy.ops`
(which operators run in integer kernels), :mod:`~benchmark.deploy.latency` (timing protocol),
:mod:`~benchmark.deploy.agreement` (DSC/NSD against ground truth, FP32 and fake-quant),
:mod:`~benchmark.deploy.gate` (accept or keep FP32), :mod:`~benchmark.deploy.pipeline`
(``run_deploy(cfg)``, all of the above for one config). Entry point: ``python -m benchmark.deploy``.

Nothing is imported here: :mod:`benchmark.config` imports :class:`DeployConfig` while the
pipeline imports :mod:`benchmark.config`, so eager imports would form a cycle.
"""

from __future__ import annotations

__all__: list[str] = []
