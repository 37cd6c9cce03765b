"""Deployment: ONNX export, real INT8 on ONNX Runtime, OpenVINO and PyTorch, latency-aware layer
choice, latency, agreement, the accuracy gate and run-time fallback.

Modules, in pipeline order: :mod:`~benchmark.deploy.export` (FP32 -> ONNX, checked),
:mod:`~benchmark.deploy.backends` (what each ``deploy.backends`` name runs and whether it can),
:mod:`~benchmark.deploy.layer_policy` and :mod:`~benchmark.deploy.layer_costs` (which
convolutions run INT8, from per-shape timings on the runtime at hand),
:mod:`~benchmark.deploy.build` (QDQ/dynamic/FP16 models via :mod:`~benchmark.deploy.ort_quant`,
torch INT8 via :mod:`~benchmark.deploy.torch_int8`, OpenVINO via
:mod:`~benchmark.deploy.openvino_backend`), :mod:`~benchmark.deploy.measure` (operator report
from :mod:`~benchmark.deploy.ops` and :mod:`~benchmark.deploy.profile`, latency per backend and
policy), :mod:`~benchmark.deploy.agreement` (DSC/NSD against ground truth, FP32 and fake-quant),
:mod:`~benchmark.deploy.gate` (accept or keep FP32), :mod:`~benchmark.deploy.selector` (serve
INT8, fall back to FP32), :mod:`~benchmark.deploy.pipeline` (``run_deploy(context)``, all of
the above for one run point), :mod:`~benchmark.deploy.settings` (what the ``deploy`` settings
must satisfy). Entry point: ``python -m benchmark.deploy`` (``benchmark.run task=deploy``).
"""

from __future__ import annotations

from benchmark.deploy.pipeline import run_deploy
from benchmark.deploy.settings import check_deploy

__all__ = ["check_deploy", "run_deploy"]
