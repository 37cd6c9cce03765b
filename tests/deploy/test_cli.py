"""End to end: ``experiment=deploy_smoke`` through both entry points, then the readiness report.

``python -m benchmark.run experiment=deploy_smoke`` computes the run; the same command through
``python -m benchmark.deploy`` then finds its config hash done, skips it and prints the summary
from the stored rows; ``python -m benchmark.readiness`` turns those rows into the scorecard.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pandas as pd
import pytest
import torch

from benchmark.results import ROW_COLUMNS

REPO = Path(__file__).resolve().parents[2]
# deploy_smoke with a random-init network, 32^3 windows on a coarse grid, one case, short timing
SHRINK = [
    "model.checkpoint=null",
    "inference.roi_size=[32,32,32]",
    "data.target_spacing_mm=[8.0,6.0,6.0]",
    "calibration.n=4",
    "deploy.cases=1",
    "deploy.warmup=0",
    "deploy.runs=10",
    "deploy.latency_rounds=2",
]


def _run(module: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, *extra]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return done


@pytest.mark.slow
def test_deploy_smoke_writes_tidy_rows_summary_and_readiness_report(tmp_path):
    results = tmp_path / "results"
    overrides = [
        "experiment=deploy_smoke",
        *SHRINK,
        f"paths.results_dir={results}",
        f"deploy.cost_cache_dir={tmp_path / 'costs'}",
    ]
    done = _run("benchmark.run", tmp_path, *overrides, f"hydra.sweep.dir={tmp_path / 'h1'}")
    # the job logs its summary: one line per backend, speed-up columns, the gate's reasons
    assert "deployment summary" in done.stdout and "speedup@b1" in done.stdout
    assert "layer policies (batch 1" in done.stdout
    if not torch.cuda.is_available():
        assert "torch_cuda_fp16: skipped: torch" in done.stdout
    assert "initializer" not in done.stdout  # exporter chatter is silenced

    rows = pd.read_parquet(results / "deploy_smoke" / "results.parquet")
    assert set(ROW_COLUMNS) <= set(rows.columns)
    assert (rows["task"] == "deploy").all() and rows["run_id"].nunique() == 1
    backends = set(rows["backend"])
    assert {
        "torch_fp32",
        "torch_fakequant",
        "ort_fp32",
        "ort_int8_static",
        "openvino_fp32",
        "openvino_int8",
        "torch_x86_int8",
        "torch_x86_int8_qat",
        "ort_int8_own_scales",
        "openvino_int8_own_scales",
    } <= backends
    assert "ort_int8_dynamic" not in backends  # dynamic INT8 only when listed
    metrics = set(rows["metric"])
    for name in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput", "size_mb"):
        assert name in metrics
    for name in (
        "dsc",
        "nsd",
        "dsc_vs_fp32",
        "dsc_vs_fakequant",
        "gate_accepted",
        "batch_consistent",
    ):
        assert name in metrics

    def values(backend, metric):
        return rows[(rows["backend"] == backend) & (rows["metric"] == metric)]["value"]

    # the export is exact to float32 reassociation, so its predictions equal PyTorch's
    assert values("ort_fp32", "export_max_abs_diff").iloc[0] < 1e-3
    assert values("ort_fp32", "voxel_agreement_vs_fp32").min() > 0.999
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert values("ort_cuda_fp16", "backend_available").tolist() == [0.0]  # recorded skip
    assert set(rows.loc[rows["metric"] == "latency_p50_ms", "batch_size"]) == {1, 2}
    assert (values("ort_int8_static", "size_mb").iloc[0]) < values("ort_fp32", "size_mb").iloc[0]
    static_ops = rows[(rows["backend"] == "ort_int8_static") & (rows["metric"] == "op_count")]
    assert "QLinearConv" in set(static_ops["op_type"])
    # the deployed policy's per-layer choice and what executes; every compared policy timed
    chosen = rows[(rows["metric"] == "layer_int8") & (rows["backend"] == "ort_int8_static")]
    assert set(chosen["policy"]) == {"all", "min_channels:16", "latency_aware"}
    executed = rows[
        (rows["metric"] == "layer_executed_int8") & (rows["backend"] == "ort_int8_static")
    ]
    transposed = executed[executed["op_type"] == "ConvTranspose"]
    assert len(transposed) == 4 and (transposed["value"] == 0).all()  # no integer kernel in ORT
    speedups = rows[rows["metric"] == "policy_speedup"]
    assert set(zip(speedups["backend"], speedups["policy"], strict=True)) >= {
        ("ort_int8_static", "all"),
        ("openvino_int8", "latency_aware"),
    }
    dsc = rows[(rows["metric"] == "dsc") & rows["class"].notna()]
    assert dsc["class_name"].notna().all() and dsc["split"].eq("test").all()

    run_id = rows["run_id"].iloc[0]
    work = results / "deploy_smoke" / "runs" / f"{run_id}_deploy"
    gate = json.loads((work / "gate.json").read_text())
    assert set(gate) >= {
        "ort_int8_static",
        "openvino_int8",
        "torch_x86_int8",
        "torch_x86_int8_qat",
        "openvino_fp32",
    }
    assert (work / "ops.csv").is_file() and (work / "int8_static_0.onnx").is_file()

    again = _run("benchmark.deploy", tmp_path, *overrides, f"hydra.sweep.dir={tmp_path / 'h2'}")
    assert f"{run_id} (skipped)" in again.stdout and "ort_int8_static" in again.stdout
    assert pd.read_parquet(results / "deploy_smoke" / "results.parquet").shape == rows.shape

    report = _run(
        "benchmark.readiness",
        tmp_path,
        str(results / "deploy_smoke"),
        "--out",
        str(tmp_path / "ready"),
    )
    md = (tmp_path / "ready" / "readiness_tiny_nnunet.md").read_text()
    assert report.stdout.split() == [
        str(tmp_path / "ready" / "readiness_tiny_nnunet.md"),
        str(tmp_path / "ready" / "readiness_tiny_nnunet.html"),
    ]
    assert "## Deployment constraints: " in md and "recommended backend" in md
    assert "## Validation: not measured" not in md
