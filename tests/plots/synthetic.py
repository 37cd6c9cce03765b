"""Small tidy result tables of every kind the figures read: an evaluation sweep, a sensitivity
run and a deployment run, built with a seeded generator in milliseconds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.analysis.activations import DISTRIBUTION_METRICS, SHIFT_METRICS

CLASSES = {1: "liver", 2: "spleen", 3: "kidney"}
CASES = ("c0", "c1", "c2")
UNITS = ("encoder.stages.0", "encoder.stages.1", "decoder.stages.0", "decoder.seg_layers.0")


def _base(model: str, run_id: str, precision: str, granularity: str) -> dict:
    w, a = (32, 32) if precision == "fp32" else map(int, precision[1:].split("a"))
    return {
        "experiment": "synthetic",
        "run_id": run_id,
        "config_hash": run_id,
        "model": model,
        "display_name": model,
        "family": "cnn",
        "framework": "nnUNet",
        "params_m": 1.0,
        "dataset": "phantom",
        "split": "test",
        "precision": precision,
        "w_bits": w,
        "a_bits": a,
        "granularity": granularity,
        "observer": "none" if precision == "fp32" else "minmax",
        "algorithm": "none",
        "calib_n": 0 if precision == "fp32" else 8,
        "seed": 0,
        "commit": "0" * 40,
        "created": "2026-01-01T00:00:00",
        "tolerance_mm": np.nan,
    }


def evaluation_rows(rng: np.random.Generator) -> list[dict]:
    rows = []
    points = [("fp32", "none")] + [
        (p, g) for p in ("w8a8", "w4a4") for g in ("per_tensor", "per_channel_token", "adaptive")
    ]
    for model, base_dsc in (("tiny_a", 0.85), ("tiny_b", 0.75)):
        for precision, granularity in points:
            run = f"{model}-{precision}-{granularity}"
            drop = {"fp32": 0.0, "w8a8": 0.01, "w4a4": 0.15}[precision]
            drop *= {"none": 1, "per_tensor": 2, "per_channel_token": 1, "adaptive": 0.5}[
                granularity
            ]
            for case in CASES:
                for cls, name in CLASSES.items():
                    for metric in ("dsc", "nsd"):
                        value = base_dsc - drop * cls / 2 + rng.normal(0, 0.01)
                        rows.append(
                            {
                                **_base(model, run, precision, granularity),
                                "task": "evaluate",
                                "case": case,
                                "class": cls,
                                "class_name": name,
                                "metric": metric,
                                "value": float(np.clip(value, 0, 1)),
                            }
                        )
    return rows


def calibration_size_rows(rng: np.random.Generator) -> list[dict]:
    """W4A4 per-tensor runs of ``tiny_a`` at 1, 2 and 32 calibration patches beside the sweep's
    8 (``experiment=calib_size``): the score rises with the number of patches."""
    rows = []
    for calib_n, drop in ((1, 0.45), (2, 0.35), (32, 0.2)):  # 8 patches: 0.3
        run = f"tiny_a-w4a4-per_tensor-n{calib_n}"
        for case in CASES:
            for cls, name in CLASSES.items():
                rows.append(
                    {
                        **_base("tiny_a", run, "w4a4", "per_tensor"),
                        "calib_n": calib_n,
                        "task": "evaluate",
                        "case": case,
                        "class": cls,
                        "class_name": name,
                        "metric": "dsc",
                        "value": float(np.clip(0.85 - drop + rng.normal(0, 0.01), 0, 1)),
                    }
                )
    return rows


def sensitivity_rows(rng: np.random.Generator) -> list[dict]:
    rows = []
    run = "sensitivity-tiny_a-w4a4-adaptive"

    def add(mode, layer, index, precision, value):
        for case in CASES[:2]:
            for cls, name in CLASSES.items():
                rows.append(
                    {
                        **_base(
                            "tiny_a", run, precision, "none" if precision == "fp32" else "adaptive"
                        ),
                        "task": "sensitivity",
                        "mode": mode,
                        "layer": layer,
                        "layer_index": index,
                        "case": case,
                        "class": cls,
                        "class_name": name,
                        "metric": "dsc",
                        "value": value + rng.normal(0, 0.001),
                    }
                )

    add("reference", None, None, "fp32", 0.85)
    add("all", None, None, "w4a4", 0.70)
    for i, unit in enumerate(UNITS):
        cost = 0.02 * (i + 1)
        add("one_layer", unit, i, "w4a4", 0.85 - cost)
        add("all_but_one", unit, i, "w4a4", 0.70 + cost / 2)
        add("weights_only", unit, i, "w4a16", 0.85 - cost / 4)
        add("activations_only", unit, i, "w16a4", 0.85 - cost * 0.75)
    for i, unit in enumerate(UNITS):
        layer = f"{unit}.conv"
        common = {
            **_base("tiny_a", run, "fp32", "none"),
            "task": "sensitivity",
            "layer": layer,
            "layer_index": i,
            "case": None,
            "class": -1,
            "class_name": "case",
        }
        for metric in DISTRIBUTION_METRICS:
            rows.append(
                {
                    **common,
                    "mode": "activation_stats",
                    "metric": metric,
                    "value": float(rng.uniform(0.5, 5.0)),
                }
            )
        for granularity in ("per_tensor", "adaptive"):
            for metric in SHIFT_METRICS:
                rows.append(
                    {
                        **common,
                        **_base("tiny_a", run, "w4a4", granularity),
                        "task": "sensitivity",
                        "layer": layer,
                        "layer_index": i,
                        "case": None,
                        "class": -1,
                        "class_name": "case",
                        "mode": "activation_shift",
                        "metric": metric,
                        "value": float(20 - 3 * i + rng.normal(0, 0.5)),
                    }
                )
    return rows


def deploy_rows() -> list[dict]:
    rows = []
    for backend, latency, size, dsc in (
        ("torch_fp32", 40.0, 3.8, 0.85),
        ("ort_fp32", 30.0, 3.8, 0.85),
        ("ort_int8_static", 15.0, 1.0, 0.83),
        ("ort_int8_dynamic", 20.0, 1.0, 0.80),
    ):
        common = {
            **_base("tiny_a", "deploy-tiny_a", "w8a8", "per_channel_token"),
            "task": "deploy",
            "backend": backend,
            "case": None,
            "class": None,
        }
        rows.append({**common, "metric": "latency_p50_ms", "value": latency, "batch_size": 1})
        rows.append({**common, "metric": "latency_p50_ms", "value": latency * 3, "batch_size": 4})
        rows.append({**common, "metric": "size_mb", "value": size})
        for case in CASES:
            for cls, name in CLASSES.items():
                rows.append(
                    {
                        **common,
                        "case": case,
                        "class": cls,
                        "class_name": name,
                        "metric": "dsc",
                        "reference": "label",
                        "value": dsc,
                    }
                )
    return rows


def synthetic_results(seed: int = 0) -> pd.DataFrame:
    """All three kinds of rows in one table, as a consolidated ``results.parquet`` would hold."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        evaluation_rows(rng) + calibration_size_rows(rng) + sensitivity_rows(rng) + deploy_rows()
    )
    frame["class"] = frame["class"].astype("Int64")
    return frame
