"""OpenVINO on the CPU: the exported ONNX model in FP32 or BF16, and INT8 from the same QDQ model.

OpenVINO reads the QDQ model that ONNX Runtime's ``quantize_static`` wrote
(``openvino.Core().read_model``): its low-precision transformations turn each
``QuantizeLinear``/``DequantizeLinear`` pair into a ``FakeQuantize`` and run the convolution
between them in an integer kernel, so both runtimes execute the same scales and zero points.
BF16 is OpenVINO's ``INFERENCE_PRECISION_HINT``; it is offered only where the CPU reports BF16
among its optimisation capabilities.

A model is compiled once per batch size with a static input shape (``reshape``), as a deployed
service would, with the latency hint and ``threads`` inference threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "openvino_version",
    "unavailable_reason",
    "OpenVinoPredictor",
    "runtime_layers",
    "op_counts",
    "layer_precisions",
    "profile_op_times",
]

#: OpenVINO CPU layer types that carry the multiply-accumulate work.
COMPUTE_LAYERS = frozenset(
    {"Convolution", "Deconvolution", "GroupConvolution", "FullyConnected", "MatMul", "Gemm"}
)
#: Layer types that only convert formats (quantize, layout reorders).
CONVERT_LAYERS = frozenset({"FakeQuantize", "Reorder", "Convert"})
_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def openvino_version() -> str | None:
    """The installed OpenVINO version, or ``None`` when it is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.__version__.split("-")[0]


def unavailable_reason(precision: str = "fp32") -> str | None:
    """Why OpenVINO cannot run ``precision`` (``fp32``/``bf16``/``int8``) here, or ``None``."""
    if openvino_version() is None:
        return "skipped: openvino is not installed (pip install openvino)"
    import openvino as ov

    core = ov.Core()
    if "CPU" not in core.available_devices:
        return f"skipped: no OpenVINO CPU device (devices: {core.available_devices})"
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if precision == "bf16" and "BF16" not in capabilities:
        return f"skipped: this CPU has no BF16 support in OpenVINO (capabilities {capabilities})"
    if precision == "int8" and "INT8" not in capabilities:
        return f"skipped: this CPU has no INT8 support in OpenVINO (capabilities {capabilities})"
    return None


class OpenVinoPredictor:
    """Logits for ``[B, C, *roi]`` inputs from an ONNX model compiled by OpenVINO for the CPU.

    Args:
        model_path: FP32 or QDQ ``.onnx`` model.
        precision: ``fp32`` or ``bf16`` inference precision (a QDQ model is INT8 either way
            where its quantized layers have integer kernels).
        threads: inference threads (0 = OpenVINO's default).
        profile: collect per-node timings (``PERF_COUNT``); slows inference slightly.
    """

    provider = "openvino-CPU"

    def __init__(
        self,
        model_path: str | Path,
        precision: str = "fp32",
        threads: int = 0,
        profile: bool = False,
    ):
        if precision not in _PRECISIONS:
            raise ValueError(f"OpenVINO precision {precision!r} is not one of {list(_PRECISIONS)}")
        import openvino as ov

        self._core = ov.Core()
        self.model_path = Path(model_path)
        self.config: dict[str, object] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _PRECISIONS[precision],
            "PERF_COUNT": bool(profile),
        }
        if threads > 0:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self._compiled: dict[tuple[int, ...], tuple[object, object]] = {}
        self.compile((1, *self._input_shape()[1:]))  # a broken model fails here, at load time

    def _input_shape(self) -> list[int]:
        shape = self._core.read_model(str(self.model_path)).inputs[0].get_partial_shape()
        return [d.get_length() if d.is_static else -1 for d in shape]

    def compile(self, shape: tuple[int, ...]) -> tuple[object, object]:
        """The compiled model and its infer request for one static input shape (cached)."""
        if shape not in self._compiled:
            model = self._core.read_model(str(self.model_path))
            model.reshape(list(shape))
            compiled = self._core.compile_model(model, "CPU", self.config)
            self._compiled[shape] = (compiled, compiled.create_infer_request())
        return self._compiled[shape]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        _, request = self.compile(tuple(x.shape))
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def _info(node: object, key: str) -> str:
    value = node.get_rt_info()[key]
    return str(value.astype(str) if hasattr(value, "astype") else value)


def runtime_layers(predictor: OpenVinoPredictor, batch: int = 1) -> pd.DataFrame:
    """The executed graph at ``batch``: one row per node with ``layer_type``, ``precision``,
    ``original`` (the source ONNX node names it implements, comma-separated)."""
    shape = (batch, *predictor._input_shape()[1:])
    compiled, _ = predictor.compile(shape)
    rows = [
        {
            "name": node.get_friendly_name(),
            "layer_type": _info(node, "layerType"),
            "precision": _info(node, "runtimePrecision").upper(),
            "original": _info(node, "originalLayersNames"),
        }
        for node in compiled.get_runtime_model().get_ordered_ops()
    ]
    return pd.DataFrame(rows)


def _kind(layer_type: str, precision: str) -> str:
    if layer_type in COMPUTE_LAYERS:
        return "integer" if precision in ("I8", "U8") else "float_compute"
    if layer_type in CONVERT_LAYERS:
        return "quantize"
    return "other"


def op_counts(predictor: OpenVinoPredictor) -> pd.DataFrame:
    """Executed layer types with counts and kinds, in the columns of ``ops.optimized_op_counts``.

    ``op_type`` is OpenVINO's layer type with its run-time precision (``Convolution:I8``), so
    one table says both which kernels run and in what arithmetic.
    """
    layers = runtime_layers(predictor)
    layers = layers[~layers["layer_type"].isin(["Input", "Output", "Constant", "Parameter"])]
    rows = [
        {
            "op_type": f"{layer_type}:{precision}",
            "domain": "openvino",
            "count": int(len(group)),
            "kind": _kind(layer_type, precision),
        }
        for (layer_type, precision), group in layers.groupby(["layer_type", "precision"])
    ]
    frame = pd.DataFrame(rows, columns=["op_type", "domain", "count", "kind"])
    return frame.sort_values(["kind", "count", "op_type"], ascending=[True, False, True])


def layer_precisions(predictor: OpenVinoPredictor, onnx_names: Sequence[str]) -> dict[str, str]:
    """ONNX node name -> run-time precision of the compute layer that executes it."""
    layers = runtime_layers(predictor)
    compute = layers[layers["layer_type"].isin(COMPUTE_LAYERS)]
    found = {}
    for row in compute.itertuples():
        for original in row.original.split(","):
            base = original.strip().split("/")[0]
            if base in onnx_names and base not in found:
                found[base] = row.precision
    return found


def profile_op_times(
    model_path: str | Path,
    input_shape: tuple[int, ...],
    precision: str = "fp32",
    threads: int = 1,
    warmup: int = 1,
    runs: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean time per run in each executed layer type, from warmed runs only.

    ``warmup`` untimed inferences first; then the per-node counters of each of ``runs``
    inferences are summed by ``<layer type>:<precision>`` (OpenVINO's ``exec_type`` names the
    kernel, e.g. ``brgconv_avx2_I8``, whose last field is the precision).

    Returns:
        Columns ``op_type``, ``time_ms``, ``share``, longest first.
    """
    predictor = OpenVinoPredictor(model_path, precision=precision, threads=threads, profile=True)
    x = np.random.default_rng(seed).standard_normal((1, *input_shape), dtype=np.float32)
    _, request = predictor.compile(tuple(x.shape))
    for _ in range(warmup):
        request.infer({0: x})
    totals: dict[str, float] = {}
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status.name != "EXECUTED":
                continue
            exec_precision = info.exec_type.rsplit("_", 1)[-1].upper()
            key = f"{info.node_type}:{exec_precision}"
            totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1000.0
    frame = pd.DataFrame({"op_type": list(totals), "time_ms": [t / runs for t in totals.values()]})
    total = frame["time_ms"].sum()
    frame["share"] = frame["time_ms"] / total if total > 0 else np.nan
    return frame.sort_values("time_ms", ascending=False).reset_index(drop=True)
