"""Where the time goes: per-operator time of a *warmed* session, summed by operator type.

The operator report (:mod:`.ops`) says which kernels run; this says how long each kind takes,
which is what explains an INT8 model that is slower than FP32 (on ONNX Runtime's CPU provider:
``QLinearConv`` on narrow, full-resolution 3D convolutions, not the layout transposes or the
quantize/dequantize pairs, which are about 1 % of the time).

Only warmed calls count: the profiled session first runs ``warmup`` calls whose events are
dropped (the first call of a session includes kernel set-up, memory arena growth and
pre-packing of weights), then ``runs`` profiled calls.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch

from benchmark.deploy.session import available_providers, run_session

__all__ = ["profile_op_times", "profile_torch_op_times", "op_time_frame"]


def op_time_frame(totals: dict[str, float], runs: int) -> pd.DataFrame:
    """``op_type``, ``time_ms`` (mean per run), ``share`` of the summed time, longest first."""
    frame = pd.DataFrame({"op_type": list(totals), "time_ms": [t / runs for t in totals.values()]})
    total = frame["time_ms"].sum()
    frame["share"] = frame["time_ms"] / total if total > 0 else np.nan
    return frame.sort_values("time_ms", ascending=False).reset_index(drop=True)


def profile_op_times(
    model_path: str | Path,
    input_shape: tuple[int, ...],
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int = 1,
    runs: int = 3,
    seed: int = 0,
    warmup: int = 1,
) -> pd.DataFrame:
    """Mean time per warmed run spent in each operator type of an ONNX Runtime session.

    Args:
        model_path: ``.onnx`` model.
        input_shape: ``(C, D, H, W)``; the input is ``[1, *input_shape]``.
        providers: execution providers.
        threads: intra-op threads.
        runs: profiled runs counted.
        seed: input seed.
        warmup: first runs of the profiled session whose events are dropped (>= 1).

    Returns:
        Columns ``op_type``, ``time_ms`` (mean per counted run), ``share`` (of the summed node
        time), sorted by time, longest first.
    """
    if warmup < 1 or runs < 1:
        raise ValueError(f"profiling needs warmup >= 1 and runs >= 1; got {warmup}, {runs}")
    x = np.random.default_rng(seed).standard_normal((1, *input_shape), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=available_providers(providers)
        )
        for _ in range(warmup + runs):
            run_session(session, x)
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    counted = model_runs[-runs:]
    totals: dict[str, float] = {}
    # "Node" events carry the kernel time of one node in microseconds
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if not any(lo <= event["ts"] <= hi for lo, hi in counted):
            continue
        op = event.get("args", {}).get("op_name", "unknown")
        totals[op] = totals.get(op, 0.0) + float(event.get("dur", 0)) / 1000.0
    return op_time_frame(totals, len(counted))


@torch.no_grad()
def profile_torch_op_times(
    predict: Callable[[np.ndarray], np.ndarray],
    input_shape: tuple[int, ...],
    runs: int = 3,
    seed: int = 0,
    warmup: int = 1,
) -> pd.DataFrame:
    """The same table for a PyTorch predictor, from ``torch.profiler`` over warmed calls.

    Operator names are torch's (``quantized::conv3d``, ``aten::convolution``, ...); times are
    self CPU times, so nested operators are not counted twice.
    """
    from torch.profiler import ProfilerActivity, profile

    x = np.random.default_rng(seed).standard_normal((1, *input_shape), dtype=np.float32)
    for _ in range(warmup):
        predict(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            predict(x)
    totals = {
        e.key: e.self_cpu_time_total / 1000.0
        for e in prof.key_averages()
        if e.self_cpu_time_total > 0
    }
    return op_time_frame(totals, runs)
