"""Latency protocol: warm-up excluded, percentiles ordered, throughput consistent, sizes on disk."""

from __future__ import annotations

import time

import pytest
import torch

from benchmark.deploy.latency import (
    hardware_info,
    measure_latency,
    session_latency,
    size_mb,
    torch_latency,
    torch_threads,
)
from benchmark.deploy.session import make_session


def test_warmup_calls_are_not_timed():
    calls = []

    def call():
        # the first (warm-up) calls are slow; timed ones must not see them
        time.sleep(0.05 if len(calls) < 2 else 0.001)
        calls.append(1)

    stats = measure_latency(call, batch_size=1, warmup=2, runs=10)
    assert len(calls) == 12
    assert stats.p99_ms < 30
    assert stats.mean_ms >= 1.0


def test_statistics_are_ordered_and_throughput_is_batch_over_mean():
    stats = measure_latency(lambda: time.sleep(0.002), batch_size=4, warmup=1, runs=12)
    assert 2.0 <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.throughput == pytest.approx(4 * 1000 / stats.mean_ms)
    assert set(stats.as_metrics()) == {
        "latency_mean_ms",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p99_ms",
        "throughput",
    }


def test_invalid_protocol_is_rejected():
    with pytest.raises(ValueError, match="runs >= 1"):
        measure_latency(lambda: None, batch_size=1, runs=0)


def test_session_and_torch_latency_measure_both_batch_sizes(exported, tiny_unet):
    session = make_session(exported.path, threads=1)
    for batch in (1, 2):
        ort_stats = session_latency(session, (1, 16, 16, 16), batch, warmup=1, runs=10)
        torch_stats = torch_latency(tiny_unet, (1, 16, 16, 16), batch, warmup=1, runs=10, threads=1)
        for stats in (ort_stats, torch_stats):
            assert stats.batch_size == batch and stats.runs == 10 and stats.p50_ms > 0


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_size_mb_counts_bytes_in_millions(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"0" * 1_500_000)
    (tmp_path / "m.onnx.data").write_bytes(b"0" * 500_000)
    assert size_mb(path) == pytest.approx(2.0)


def test_hardware_info_names_cpu_and_versions():
    info = hardware_info()
    assert info["cpu_cores"] >= 1 and info["onnxruntime"] and info["torch"] and info["cpu"]


def test_interleaved_latency_times_every_backend_in_each_round():
    from benchmark.deploy.latency import interleaved_latency

    order: list[str] = []
    calls = {name: (lambda n=name: order.append(n)) for name in ("a", "b")}
    stats = interleaved_latency(calls, batch_size=2, warmup=1, runs=4, rounds=2)
    # warm-up a, b; then round 1: a a b b; round 2: a a b b
    assert order == ["a", "b", "a", "a", "b", "b", "a", "a", "b", "b"]
    assert stats["a"].runs == 4 and stats["b"].warmup == 1 and stats["a"].batch_size == 2
    with pytest.raises(ValueError, match="rounds >= 1"):
        interleaved_latency(calls, 1, rounds=0)
