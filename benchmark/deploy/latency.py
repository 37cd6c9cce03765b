"""Latency protocol: warm-up runs, then N timed runs; percentiles, throughput, size on disk.

The protocol follows the usual INT8 calibration studies: ``warmup`` untimed calls absorb
one-off costs (memory arena growth, kernel selection, page faults), then each of ``runs`` calls
is timed alone with ``time.perf_counter_ns`` on a fixed input. Reported per backend and batch
size ``B``:

* ``mean``, ``p50``, ``p90``, ``p99`` of the per-call wall time, in milliseconds;
* ``throughput`` = ``B / mean`` in patches per second (one patch = one ``[C, *roi]`` input).

Numbers are measurements on the machine recorded by :func:`hardware_info`; nothing here is
modelled or estimated.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from benchmark.deploy.session import run_session

__all__ = [
    "LatencyStats",
    "measure_latency",
    "interleaved_latency",
    "session_latency",
    "torch_latency",
    "hardware_info",
    "size_mb",
    "torch_threads",
]


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one timed series.

    Attributes:
        batch_size: inputs per call ``B``.
        warmup: untimed calls made first.
        runs: timed calls.
        mean_ms, p50_ms, p90_ms, p99_ms: per-call wall time statistics in milliseconds
            (percentiles by linear interpolation, ``numpy.percentile``'s default).
        throughput: ``B * 1000 / mean_ms`` patches per second.
    """

    batch_size: int
    warmup: int
    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float

    def as_metrics(self) -> dict[str, float]:
        """Metric name -> value, with the names used in result rows."""
        values = asdict(self)
        return {
            "latency_mean_ms": values["mean_ms"],
            "latency_p50_ms": values["p50_ms"],
            "latency_p90_ms": values["p90_ms"],
            "latency_p99_ms": values["p99_ms"],
            "throughput": values["throughput"],
        }


def measure_latency(
    call: Callable[[], object], batch_size: int, warmup: int = 5, runs: int = 50
) -> LatencyStats:
    """Time ``call`` with the protocol above.

    Args:
        call: runs one forward pass on a fixed input and returns when the result is ready.
        batch_size: inputs per call, for the throughput.
        warmup: untimed calls first.
        runs: timed calls (>= 1; percentiles are meaningful from about 10).

    Returns:
        The :class:`LatencyStats`.
    """
    if runs < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(
            f"need runs >= 1, warmup >= 0, batch_size >= 1; got {runs}, {warmup}, {batch_size}"
        )
    for _ in range(warmup):
        call()
    times_ms = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter_ns()
        call()
        times_ms[i] = (time.perf_counter_ns() - start) / 1e6
    return _stats(times_ms, batch_size, warmup)


def _stats(times_ms: np.ndarray, batch_size: int, warmup: int) -> LatencyStats:
    mean_ms = float(times_ms.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(times_ms, [50, 90, 99]))
    return LatencyStats(
        batch_size=batch_size,
        warmup=warmup,
        runs=len(times_ms),
        mean_ms=mean_ms,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        throughput=batch_size * 1000.0 / mean_ms,
    )


def interleaved_latency(
    calls: Mapping[str, Callable[[], object]],
    batch_size: int,
    warmup: int = 5,
    runs: int = 50,
    rounds: int = 5,
) -> dict[str, LatencyStats]:
    """Time several backends in turn, so that a change of machine load hits them all alike.

    Every call gets ``warmup`` untimed runs first; then ``rounds`` rounds each time
    ``runs / rounds`` calls of every backend in order (at least one per round), and the
    statistics are taken over all of a backend's timed calls. On a machine shared with other
    work this keeps ratios between backends honest where timing one backend after the other
    would compare different load phases.

    Returns:
        Backend name -> :class:`LatencyStats`, in the order of ``calls``.
    """
    if runs < 1 or warmup < 0 or batch_size < 1 or rounds < 1:
        raise ValueError(
            f"need runs >= 1, warmup >= 0, batch_size >= 1, rounds >= 1; got {runs}, {warmup}, "
            f"{batch_size}, {rounds}"
        )
    for call in calls.values():
        for _ in range(warmup):
            call()
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    times: dict[str, list[float]] = {name: [] for name in calls}
    for n in (k for k in per_round if k > 0):
        for name, call in calls.items():
            for _ in range(n):
                start = time.perf_counter_ns()
                call()
                times[name].append((time.perf_counter_ns() - start) / 1e6)
    return {name: _stats(np.asarray(t), batch_size, warmup) for name, t in times.items()}


def session_latency(
    session: ort.InferenceSession,
    input_shape: tuple[int, ...],
    batch_size: int,
    warmup: int = 5,
    runs: int = 50,
    seed: int = 0,
) -> LatencyStats:
    """Latency of an ONNX Runtime session on a random ``[batch_size, *input_shape]`` input."""
    x = np.random.default_rng(seed).standard_normal((batch_size, *input_shape), dtype=np.float32)
    return measure_latency(lambda: run_session(session, x), batch_size, warmup, runs)


@torch.no_grad()
def torch_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    warmup: int = 5,
    runs: int = 50,
    threads: int = 0,
    seed: int = 0,
) -> LatencyStats:
    """Latency of a PyTorch module in eval mode on the CPU, with ``threads`` intra-op threads."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *input_shape, generator=generator)
    model = model.eval()
    with torch_threads(threads):
        return measure_latency(lambda: model(x), batch_size, warmup, runs)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Temporarily use ``threads`` torch intra-op threads (0 = leave unchanged), then restore."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def hardware_info() -> dict[str, str | int]:
    """What the numbers were measured on: CPU model, usable cores, OS and library versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_cores": int(usable or 0),
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }


def size_mb(path: str | Path) -> float:
    """Size of a model file on disk in megabytes (10^6 bytes), external data files included."""
    path = Path(path)
    total = path.stat().st_size
    data = path.with_name(path.name + ".data")
    if data.exists():
        total += data.stat().st_size
    return total / 1e6
