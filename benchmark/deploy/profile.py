"""Where the time goes: ONNX Runtime's per-node profiler summed by operator type.

The operator report (:mod:`.ops`) says which kernels run; this says how long each kind takes,
which is what explains an INT8 model that is slower than FP32 (layout transposes around integer
3D convolutions, quantize/dequantize pairs, float fallbacks).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

from benchmark.deploy.session import available_providers, run_session

__all__ = ["profile_op_times"]


def profile_op_times(
    model_path: str | Path,
    input_shape: tuple[int, ...],
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int = 1,
    runs: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean time per run spent in each operator type.

    One untimed run first (allocations), then ``runs`` profiled runs on a random input
    ``[1, *input_shape]``.

    Args:
        model_path: ``.onnx`` model.
        input_shape: ``(C, D, H, W)``.
        providers: execution providers.
        threads: intra-op threads.
        runs: profiled runs.
        seed: input seed.

    Returns:
        Columns ``op_type``, ``time_ms`` (mean per run), ``share`` (of the summed node time),
        sorted by time, longest first.
    """
    x = np.random.default_rng(seed).standard_normal((1, *input_shape), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=available_providers(providers)
        )
        run_session(session, x)
        session.end_profiling()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=available_providers(providers)
        )
        for _ in range(runs):
            run_session(session, x)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    # "Node" events carry the kernel time of one node in microseconds; the first run of the
    # profiled session also includes kernel set-up, as in any first call
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "unknown")
            totals[op] = totals.get(op, 0.0) + float(event.get("dur", 0)) / 1000.0
    frame = pd.DataFrame({"op_type": list(totals), "time_ms": [t / runs for t in totals.values()]})
    total = frame["time_ms"].sum()
    frame["share"] = frame["time_ms"] / total if total > 0 else np.nan
    return frame.sort_values("time_ms", ascending=False).reset_index(drop=True)
