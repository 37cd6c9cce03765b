"""Full-size deployment latency: every CPU backend and layer policy against ``ort_fp32``.

Builds the registry's nnU-Net (26.9 M parameters) and SwinUNETR (62.2 M) with random weights
(latency does not depend on them; the tiny trained models of ``experiment=deploy_smoke`` give
the accuracy), exports each at a 96^3 patch, builds the static INT8 QDQ model under each layer
policy (``all``, ``min_channels:16``, ``latency_aware`` with the layer costs of the backend's
own runtime, cached like the deployment's) and the torch x86 INT8 model, then for each thread
count times the variants at batch 1 *in turn* (``interleaved_latency``: ``--runs`` timed calls
each, spread over as many rounds, after one warm-up call), all in one process: the float
backends together, then each INT8 backend's policies beside ``ort_fp32`` again
(:func:`timing_groups`). Prints one table per model and thread count: p50 in ms, speed-up =
``ort_fp32`` p50 of the same group / p50, the share of convolutions in INT8; writes the rows as
CSV with ``--out`` (after each model).

    OMP_NUM_THREADS=1 .venv/bin/python tests/perf/bench_deploy.py [--models nnunet swinunetr]
        [--threads 1 2] [--runs 3] [--size 96] [--policies all latency_aware]
        [--out bench_deploy.csv]

Not part of the test suite (pytest collects ``test_*.py`` only). About 40 minutes on a
2-core CPU.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmark.deploy.backends import load_predictor, unavailable_reason
from benchmark.deploy.export import export_checked, load_registry_model
from benchmark.deploy.latency import hardware_info, interleaved_latency
from benchmark.deploy.layer_costs import measure_layer_costs
from benchmark.deploy.layer_policy import choose_layers, float_layers, onnx_conv_layers
from benchmark.deploy.ort_quant import needs_reduce_range, quantize_static_onnx
from benchmark.deploy.torch_int8 import quantize_convs, torch_conv_layers
from benchmark.models import load_model_config
from benchmark.points.cache import cache_root

CONF_MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"
POLICIES = ("all", "min_channels:16", "latency_aware")
RUNTIME_OF = {"ort_int8_static": "ort", "openvino_int8": "openvino", "torch_x86_int8": "torch"}


def build(name: str, size: int, workdir: Path, threads: list[int], policies: list[str]) -> dict:
    """Every variant's artefact and layer choice for model ``name`` at ``size``^3."""
    torch.manual_seed(0)
    model = load_registry_model(load_model_config(name, CONF_MODELS), 1, 14)
    roi = (size, size, size)
    t0 = time.perf_counter()
    fp32 = export_checked(model, workdir / f"{name}.onnx", 1, roi, check_batch_sizes=(1,)).path
    print(f"{name}: exported in {time.perf_counter() - t0:.0f} s", flush=True)
    rng = np.random.default_rng(0)
    # one calibration patch: ONNX Runtime's calibrator holds every quantized tensor of every
    # patch until the end (two SwinUNETR patches at 96^3 exceeded 23 GB)
    calib = [rng.standard_normal((1, 1, *roi), dtype=np.float32)]
    onnx_layers = onnx_conv_layers(fp32)
    torch_layers = torch_conv_layers(model, torch.from_numpy(calib[0]))
    cache = cache_root(None) / "layer_costs"
    variants: dict = {
        t: {("ort_fp32", "-"): (fp32, 0.0), ("openvino_fp32", "-"): (fp32, 0.0)} for t in threads
    }
    files: dict[frozenset, Path] = {}
    for t in threads:
        for backend, runtime in RUNTIME_OF.items():
            if unavailable_reason(backend):
                print(f"{backend}: {unavailable_reason(backend)}")
                continue
            layers = torch_layers if runtime == "torch" else onnx_layers
            t0 = time.perf_counter()
            costs = measure_layer_costs(layers.values(), runtime, t, cache)
            print(f"{name} t{t} {runtime}: costs {time.perf_counter() - t0:.0f} s", flush=True)
            for policy in policies:
                choices = choose_layers(layers, policy, costs)
                excluded = frozenset(float_layers(choices))
                if runtime == "torch":
                    artefact = quantize_convs(
                        model, [torch.from_numpy(c) for c in calib], keep_float=excluded
                    )
                else:
                    if excluded not in files:
                        path = workdir / f"{name}_int8_{len(files)}.onnx"
                        files[excluded] = quantize_static_onnx(
                            fp32,
                            path,
                            calib,
                            nodes_to_exclude=sorted(excluded),
                            reduce_range=needs_reduce_range(),
                        )
                    artefact = files[excluded]
                share = sum(c.int8 for c in choices) / len(choices)
                variants[t][(backend, policy)] = (artefact, share)
    return variants


def timing_groups(keys: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The variants timed together: the float backends, then each INT8 backend's policies,
    each group with ``ort_fp32`` as its in-turn reference. Loading every variant of a 62 M
    model at 96^3 at once (about a dozen sessions with their memory arenas) exceeded 23 GB."""
    reference = ("ort_fp32", "-")
    floats = [k for k in keys if k[1] == "-"]
    backends = dict.fromkeys(k[0] for k in keys if k[1] != "-")
    return [floats] + [[reference] + [k for k in keys if k[0] == b] for b in backends]


def time_group(variants: dict, group: list, x: np.ndarray, t: int, runs: int) -> list[dict]:
    """p50 and speed-up over ``ort_fp32`` of each variant of ``group``, timed in turn."""
    loaded, shares = {}, {}
    for key in group:
        artefact, shares[key] = variants[key]
        loaded[key] = load_predictor(key[0], artefact, t)
    calls = {key: (lambda p=p: p(x)) for key, p in loaded.items()}
    stats = interleaved_latency(calls, 1, warmup=1, runs=runs, rounds=runs)
    reference = stats[("ort_fp32", "-")].p50_ms
    return [
        {
            "threads": t,
            "backend": backend,
            "policy": policy,
            "p50_ms": s.p50_ms,
            "speedup": reference / s.p50_ms,
            "ort_fp32_ms": reference,
            "int8_convs": shares[(backend, policy)],
            "runs": s.runs,
        }
        for (backend, policy), s in stats.items()
    ]


def bench(name: str, size: int, threads: list[int], runs: int, policies: list[str]) -> pd.DataFrame:
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = build(name, size, Path(tmp), threads, policies)
        x = np.random.default_rng(1).standard_normal((1, 1, size, size, size), dtype=np.float32)
        for t in threads:
            t0, rows = time.perf_counter(), []
            for group in timing_groups(list(variants[t])):
                timed = time_group(variants[t], group, x, t, runs)
                # ort_fp32's own row once, from its first group; later groups only as reference
                rows += [r for r in timed if not rows or r["backend"] != "ort_fp32"]
                gc.collect()
            frame = pd.DataFrame(rows)
            print(
                f"\n{name} {size}^3 batch 1, {t} thread(s), {runs} runs each "
                f"({time.perf_counter() - t0:.0f} s):"
            )
            print(frame.drop(columns=["threads"]).to_string(index=False))
            frames.append(frame.assign(model=name, size=size))
    return pd.concat(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["nnunet", "swinunetr"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    hw = hardware_info()
    print(
        f"{hw['cpu']}, {hw['cpu_cores']} cores; onnxruntime {hw['onnxruntime']}, torch {hw['torch']}"
    )
    frames = []
    for name in args.models:
        frames.append(bench(name, args.size, args.threads, args.runs, args.policies))
        if args.out:  # after every model, so a later model's failure keeps the earlier rows
            pd.concat(frames).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
