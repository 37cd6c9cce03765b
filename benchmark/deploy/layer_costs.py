"""Float vs INT8 time of each convolution shape, measured alone on the runtime at hand, cached.

The input of the ``latency_aware`` policy (:mod:`.layer_policy`). Each distinct shape becomes a
one-layer model with random weights, timed at batch 1 in float and in INT8 with the same
thread count as the deployment:

* ``ort`` and ``openvino``: a one-node ONNX model and its QDQ version from the same
  ``quantize_static`` call the deployment uses (so the integer kernel is the one that would
  run), in ONNX Runtime's CPU provider or OpenVINO's CPU plugin;
* ``torch``: ``nn.Conv3d`` against the x86 INT8 wrapper of :mod:`.torch_int8`.

Times are the fastest of ``runs`` calls after ``warmup`` (the least disturbed by other work on
a shared machine). The table is cached per runtime version,
CPU model and thread count in one JSON file (``[float_ms, int8_ms, integer_kernel]`` per
shape key), so a second run on the same machine measures only
shapes it has not seen.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from benchmark.deploy.export import INPUT_NAME
from benchmark.deploy.latency import hardware_info
from benchmark.deploy.layer_policy import ConvShape
from benchmark.deploy.openvino_backend import OpenVinoPredictor, openvino_version
from benchmark.deploy.openvino_backend import op_counts as openvino_op_counts
from benchmark.deploy.ops import optimized_op_counts
from benchmark.deploy.ort_quant import needs_reduce_range, quantize_static_onnx
from benchmark.deploy.session import OrtPredictor
from benchmark.deploy.torch_int8 import TorchPredictor, quantize_convs

__all__ = ["RUNTIMES", "cache_path", "measure_layer_costs", "one_layer_onnx"]

#: How the cached numbers were measured; a cache written another way is measured again.
PROTOCOL = (
    "fastest of runs after warmup, batch 1, random weights; [float_ms, int8_ms, integer_kernel]"
)
#: Runtimes with a cost measurement.
RUNTIMES = ("ort", "openvino", "torch")


def _runtime_version(runtime: str) -> str:
    return {
        "ort": f"onnxruntime-{ort.__version__}",
        "openvino": f"openvino-{openvino_version()}",
        "torch": f"torch-{torch.__version__}",
    }[runtime]


def cache_path(cache_dir: str | Path, runtime: str, threads: int) -> Path:
    """``<cache_dir>/<runtime-version>_<cpu>_t<threads>.json``."""
    cpu = re.sub(r"[^A-Za-z0-9]+", "-", str(hardware_info()["cpu"])).strip("-").lower()
    return Path(cache_dir) / f"{_runtime_version(runtime)}_{cpu}_t{threads}.json"


def one_layer_onnx(shape: ConvShape, path: str | Path, seed: int = 0) -> Path:
    """A one-node ONNX model (FP32, random weights and bias) of ``shape`` at batch 1."""
    rng = np.random.default_rng(seed)
    k = list(shape.kernel)
    if shape.op == "Conv":
        w_shape = [shape.out_channels, shape.in_channels // shape.groups, *k]
    else:
        w_shape = [shape.in_channels, shape.out_channels // shape.groups, *k]
    fan_in = int(np.prod(w_shape[1:]))
    weight = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(shape.out_channels)).astype(np.float32)
    node = helper.make_node(
        shape.op,
        [INPUT_NAME, "w", "b"],
        ["y"],
        kernel_shape=k,
        strides=list(shape.stride),
        pads=list(shape.padding),
        group=shape.groups,
    )
    graph = helper.make_graph(
        [node],
        "one_layer",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, [1, shape.in_channels, *shape.spatial]
            )
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))
    return Path(path)


def _load(runtime: str, path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    if runtime == "ort":
        return OrtPredictor(path, threads=threads)
    return OpenVinoPredictor(path, threads=threads)


def _has_integer_kernel(runtime: str, path: Path, predictor: object) -> bool:
    """Whether the runtime executes the one-layer QDQ model's convolution in an integer kernel."""
    if runtime == "ort":
        counts = optimized_op_counts(path, threads=1)
    else:
        counts = openvino_op_counts(predictor)
    return bool((counts["kind"] == "integer").any())


def _time(predict: Callable[[np.ndarray], object], x: np.ndarray, warmup: int, runs: int) -> float:
    """Fastest of ``runs`` calls after ``warmup``: a layer's own cost is what it takes when
    nothing else disturbs it, and on a shared machine every disturbance only adds time."""
    for _ in range(warmup):
        predict(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        predict(x)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return min(times)


def _measure_one(shape: ConvShape, runtime: str, threads: int, warmup: int, runs: int) -> tuple:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, shape.in_channels, *shape.spatial), dtype=np.float32)
    if runtime == "torch":
        if shape.op != "Conv":  # transposed convolutions stay float in torch_x86_int8
            return (float("nan"), float("nan"), False)
        conv = nn.Conv3d(
            shape.in_channels,
            shape.out_channels,
            shape.kernel,
            shape.stride,
            tuple(shape.padding[: len(shape.kernel)]),
            groups=shape.groups,
        ).eval()
        net = nn.Sequential(conv)
        qnet = quantize_convs(net, [torch.from_numpy(x)])
        return (
            _time(TorchPredictor(net, threads), x, warmup, runs),
            _time(TorchPredictor(qnet, threads), x, warmup, runs),
            True,
        )
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = one_layer_onnx(shape, Path(tmp) / "fp32.onnx")
        calib = [rng.standard_normal(x.shape, dtype=np.float32) for _ in range(2)]
        int8 = quantize_static_onnx(
            fp32, Path(tmp) / "int8.onnx", calib, reduce_range=needs_reduce_range()
        )
        quantized = _load(runtime, int8, threads)
        return (
            _time(_load(runtime, fp32, threads), x, warmup, runs),
            _time(quantized, x, warmup, runs),
            _has_integer_kernel(runtime, int8, quantized),
        )


def measure_layer_costs(
    shapes: Iterable[ConvShape],
    runtime: str,
    threads: int,
    cache_dir: str | Path | None = None,
    warmup: int = 1,
    runs: int = 5,
) -> dict[str, tuple[float, float, bool]]:
    """Shape key -> ``(float_ms, int8_ms, integer_kernel)`` on ``runtime`` with ``threads``.

    ``integer_kernel`` says whether the runtime really ran the quantized layer in an integer
    kernel (ONNX Runtime runs a QDQ ``ConvTranspose`` as dequantize -> float -> quantize).

    Args:
        shapes: convolution shapes (duplicates are measured once).
        runtime: one of :data:`RUNTIMES`.
        threads: intra-op threads, as in the deployment (0 = the runtime's default).
        cache_dir: folder of the JSON cache (``None``: measure every time, cache nothing).
        warmup, runs: untimed calls, then timed calls of which the fastest counts.

    Raises:
        ValueError: unknown runtime.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} is not one of {RUNTIMES}")
    path = cache_path(cache_dir, runtime, threads) if cache_dir is not None else None
    cached: dict[str, list[float]] = {}
    if path is not None and path.is_file():
        record = json.loads(path.read_text())
        if record.get("protocol") == PROTOCOL:
            cached = record.get("costs", {})
    wanted = {s.key: s for s in shapes}
    for key, shape in wanted.items():
        if key not in cached:
            cached[key] = list(_measure_one(shape, runtime, threads, warmup, runs))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "runtime": _runtime_version(runtime),
            "hardware": hardware_info(),
            "threads": threads,
            "protocol": PROTOCOL,
            "costs": cached,
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    return {
        key: (float(cached[key][0]), float(cached[key][1]), bool(cached[key][2])) for key in wanted
    }
