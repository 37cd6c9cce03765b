"""The deployment backends: what each ``deploy.backends`` name runs, where, and whether it can.

Every backend is loaded as a *predictor*: a callable from a ``[B, C, *roi]`` float32 array to
logits ``[B, K, *roi]`` with a ``provider`` attribute naming what executes it. Latency, the
operator report, agreement, the gate and the run-time selector all go through that one
interface, so FP32 and INT8, ONNX Runtime, OpenVINO and PyTorch are measured the same way.

=====================  =========  ==========================================================
backend                runtime    what runs
=====================  =========  ==========================================================
``torch_fp32``         PyTorch    the checkpoint (the accuracy reference; always run)
``ort_fp32``           ORT CPU    the ONNX export (the reference of every speed-up)
``ort_int8_static``    ORT CPU    the QDQ model, ``QLinearConv`` where the layer policy says
``ort_int8_dynamic``   ORT CPU    dynamic INT8 (``ConvInteger``); only when listed
``openvino_fp32``      OpenVINO   the ONNX export on OpenVINO's CPU plugin
``openvino_bf16``      OpenVINO   the same with ``INFERENCE_PRECISION_HINT=bf16`` (CPUs with BF16)
``openvino_int8``      OpenVINO   the QDQ model (layer policy measured on OpenVINO)
``torch_x86_int8``     PyTorch    x86 INT8 ``Conv3d`` from static PTQ (:mod:`.torch_int8`)
``torch_x86_int8_qat`` PyTorch    the same after PyTorch's QAT flow (``deploy.torch_qat_*``)
``ort_cuda_fp16``      ORT CUDA   FP16 ONNX model on the CUDA execution provider
``ort_cuda_int8``      ORT CUDA   the QDQ model (policy ``all``) on the CUDA execution provider
``ort_tensorrt_int8``  ORT TRT    the QDQ model (policy ``all``) on the TensorRT provider
``torch_cuda_fp16``    PyTorch    the checkpoint in FP16 on the GPU
``torch_cuda_bf16``    PyTorch    the checkpoint in BF16 on the GPU
=====================  =========  ==========================================================

A backend that cannot run here (no GPU, no BF16, OpenVINO missing) is skipped with its reason
(:func:`unavailable_reason`); nothing requires a GPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import benchmark.deploy.openvino_backend as openvino_backend
import benchmark.deploy.torch_int8 as torch_int8
from benchmark.deploy.latency import torch_threads
from benchmark.deploy.session import OrtPredictor
from benchmark.models import full_resolution_logits

__all__ = ["Backend", "BACKENDS", "unavailable_reason", "load_predictor", "TorchDevicePredictor"]

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Backend:
    """One ``deploy.backends`` entry.

    Attributes:
        name: the ``backend`` row value.
        runtime: ``ort``, ``openvino`` or ``torch``.
        precision: ``fp32``, ``bf16``, ``fp16``, ``int8`` (static) or ``int8_dynamic``.
        artefact: what it loads: ``fp32_onnx``, ``qdq_onnx`` (calibrated by the runtime's
            tooling), ``qdq_own_onnx`` (the fake-quant model's own scales and zero points,
            :mod:`.qdq_export`), ``dynamic_onnx``, ``fp16_onnx``, ``torch_int8`` (a quantized
            module) or ``torch`` (the checkpoint).
        providers: ONNX Runtime execution providers (ORT backends).
        cost_runtime: runtime whose layer costs drive ``latency_aware`` (``None``: the layer
            policy does not apply; INT8 backends without it use ``all``).
        device: ``cpu`` or ``cuda``.
    """

    name: str
    runtime: str
    precision: str
    artefact: str
    providers: tuple[str, ...] = ()
    cost_runtime: str | None = None
    device: str = "cpu"

    @property
    def quantized(self) -> bool:
        return self.precision.startswith("int8")


_CPU = ("CPUExecutionProvider",)
BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("torch_fp32", "torch", "fp32", "torch"),
        Backend("ort_fp32", "ort", "fp32", "fp32_onnx", _CPU),
        Backend("ort_int8_static", "ort", "int8", "qdq_onnx", _CPU, cost_runtime="ort"),
        Backend("ort_int8_dynamic", "ort", "int8_dynamic", "dynamic_onnx", _CPU),
        Backend("openvino_fp32", "openvino", "fp32", "fp32_onnx"),
        Backend("openvino_bf16", "openvino", "bf16", "fp32_onnx"),
        Backend("openvino_int8", "openvino", "int8", "qdq_onnx", cost_runtime="openvino"),
        Backend("torch_x86_int8", "torch", "int8", "torch_int8", cost_runtime="torch"),
        Backend("torch_x86_int8_qat", "torch", "int8", "torch_int8", cost_runtime="torch"),
        Backend("ort_int8_own_scales", "ort", "int8", "qdq_own_onnx", _CPU),
        Backend("openvino_int8_own_scales", "openvino", "int8", "qdq_own_onnx"),
        Backend(
            "ort_cuda_fp16", "ort", "fp16", "fp16_onnx", ("CUDAExecutionProvider",), device="cuda"
        ),
        Backend(
            "ort_cuda_int8", "ort", "int8", "qdq_onnx", ("CUDAExecutionProvider",), device="cuda"
        ),
        Backend(
            "ort_tensorrt_int8",
            "ort",
            "int8",
            "qdq_onnx",
            ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
            device="cuda",
        ),
        Backend("torch_cuda_fp16", "torch", "fp16", "torch", device="cuda"),
        Backend("torch_cuda_bf16", "torch", "bf16", "torch", device="cuda"),
    )
}


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run on this machine, or ``None`` when it can.

    Raises:
        KeyError: an unknown backend name, listing the known ones.
    """
    if name not in BACKENDS:
        raise KeyError(f"unknown deploy backend {name!r}; known: {list(BACKENDS)}")
    backend = BACKENDS[name]
    if backend.runtime == "ort":
        have = ort.get_available_providers()
        if backend.providers[0] not in have:
            return (
                f"skipped: {backend.providers[0]} is not available in onnxruntime "
                f"{ort.__version__} (available: {have})"
            )
        return None
    if backend.runtime == "openvino":
        return openvino_backend.unavailable_reason(backend.precision)
    if backend.device == "cuda":
        if not torch.cuda.is_available():
            return f"skipped: torch {torch.__version__} sees no CUDA device"
        if backend.precision == "bf16" and not torch.cuda.is_bf16_supported():
            return "skipped: this GPU has no BF16 support"
        return None
    return torch_int8.unavailable_reason()


class TorchDevicePredictor:
    """The checkpoint in FP16/BF16 on a CUDA device (inputs and logits stay float32 numpy)."""

    def __init__(self, model: nn.Module, precision: str, device: str = "cuda"):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
        self.dtype, self.device = dtype, device
        self.provider = f"torch-{device}-{precision}"

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(x, np.float32)).to(self.device, self.dtype)
        out = full_resolution_logits(self.model(x))
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out.float().cpu().numpy()


class _ThreadedTorch:
    """A float module timed with the deployment's torch thread count."""

    provider = "torch-cpu"

    def __init__(self, model: nn.Module, threads: int):
        self.model, self.threads = model.eval(), threads

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch_threads(self.threads):
            out = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        out = full_resolution_logits(out)
        return out.float().numpy()


def load_predictor(
    name: str, artefact: Path | nn.Module, threads: int, profile: bool = False
) -> Predictor:
    """Load backend ``name`` from its artefact (an ``.onnx`` path or a module).

    Loading is where a broken model fails (a corrupted file, an unsupported operator), which
    the run-time selector (:mod:`.selector`) relies on.
    """
    backend = BACKENDS[name]
    if backend.runtime == "ort":
        return OrtPredictor(artefact, backend.providers, threads=threads)
    if backend.runtime == "openvino":
        precision = "bf16" if backend.precision == "bf16" else "fp32"
        return openvino_backend.OpenVinoPredictor(
            artefact, precision=precision, threads=threads, profile=profile
        )
    if backend.device == "cuda":
        return TorchDevicePredictor(artefact, backend.precision)
    if backend.artefact == "torch_int8":
        return torch_int8.TorchPredictor(artefact, threads)
    return _ThreadedTorch(artefact, threads)
