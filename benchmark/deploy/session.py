"""ONNX Runtime sessions built one way everywhere, and a module wrapper for sliding windows.

Every backend is timed and scored through :func:`make_session`, so thread count, graph
optimisation level and provider order are the same for FP32 and INT8 and the comparison is fair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

__all__ = [
    "make_session",
    "run_session",
    "OrtSegmenter",
    "OrtPredictor",
    "ArraySegmenter",
    "available_providers",
    "gpu_provider",
    "GPU_PROVIDERS",
]

#: Providers that run FP16 kernels; the CPU provider has FP16 only for a handful of ops.
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")


def available_providers(requested: Sequence[str]) -> list[str]:
    """The requested providers this ONNX Runtime build has, in the requested order.

    Raises:
        RuntimeError: none of ``requested`` is available (names both lists).
    """
    have = ort.get_available_providers()
    chosen = [p for p in requested if p in have]
    if not chosen:
        raise RuntimeError(
            f"none of the providers {list(requested)} is available in onnxruntime "
            f"{ort.__version__}; available: {have}. List only available backends in deploy.backends."
        )
    return chosen


def gpu_provider(requested: Sequence[str]) -> str | None:
    """The first requested GPU provider that is available, or ``None`` (FP16 is then skipped)."""
    have = set(ort.get_available_providers())
    return next((p for p in requested if p in GPU_PROVIDERS and p in have), None)


def make_session(
    path: str | Path,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int = 0,
    optimized_model_path: str | Path | None = None,
) -> ort.InferenceSession:
    """An inference session with all graph optimisations enabled.

    Args:
        path: ``.onnx`` model.
        providers: execution providers in priority order; unavailable ones are dropped.
        threads: intra-op threads (0 = ONNX Runtime's default, one per physical core);
            inter-op parallelism stays off (sequential execution), as in latency studies.
        optimized_model_path: where ONNX Runtime writes the graph after optimisation (the
            operators that really execute, used by the operator report).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; the NCHWc serialisation warning is expected
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return ort.InferenceSession(
        str(path), sess_options=options, providers=available_providers(providers)
    )


def run_session(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Logits ``[B, K, *roi]`` float32 for an input ``[B, C, *roi]`` (cast to the model's dtype)."""
    meta = session.get_inputs()[0]
    dtype = np.float16 if meta.type == "tensor(float16)" else np.float32
    out = session.run(None, {meta.name: np.ascontiguousarray(x, dtype=dtype)})[0]
    return out.astype(np.float32, copy=False)


class OrtPredictor:
    """Logits for ``[B, C, *roi]`` numpy inputs from one session built by :func:`make_session`."""

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int = 0,
    ):
        self.session = make_session(path, providers, threads=threads)
        self.provider = self.session.get_providers()[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return run_session(self.session, x)


class ArraySegmenter(nn.Module):
    """Any numpy predictor (``[B, C, *roi]`` -> logits) behind the ``nn.Module`` call interface.

    MONAI's sliding-window inferer (``benchmark.infer.predict_probabilities``) calls its
    predictor on ``[B, C, *roi]`` patches; wrapping a runtime lets ONNX Runtime, OpenVINO and
    quantized PyTorch models be scored by exactly the same stitching, padding and Gaussian
    blending as the PyTorch models.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]):
        super().__init__()
        self.predict = predict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.predict(x.detach().cpu().numpy()))

    def extra_repr(self) -> str:
        return f"provider={getattr(self.predict, 'provider', type(self.predict).__name__)}"


class OrtSegmenter(ArraySegmenter):
    """An ONNX Runtime session behind the ``nn.Module`` call interface (see :class:`ArraySegmenter`)."""

    def __init__(self, session: ort.InferenceSession):
        super().__init__(lambda x: run_session(session, x))
        self.session = session

    def extra_repr(self) -> str:
        return f"providers={self.session.get_providers()}"
