"""The line a single run ends with: its mean DSC and NSD and the drop from its FP32 baseline.

The baseline is the FP32 run of the same model, data, inference settings, task and seed in the
same experiment folder (its resolved config sits beside its rows); means are taken over the
(case, class) pairs both runs scored, so a run on fewer cases is compared on those cases only.
Without that run the line says so and gives the command that adds it. Quantized runs also
report their agreement with the FP32 predictions (``dsc_fp32``), which needs no FP32 run.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmark.pipeline.evaluate import FP32_AGREEMENT_METRIC
from benchmark.results import run_path
from benchmark.schema import RunPoint

__all__ = ["fp32_baseline", "fp32_command", "run_summary"]

#: Sections of two configs that must agree for one run to be the other's FP32 baseline.
BASELINE_KEYS = ("task", "seed", "model", "data", "inference")
#: Groups that set the quantization point: dropped from a run's options for its FP32 run.
_QUANT_GROUPS = {"precision", "granularity", "observer", "algorithm", "calibration", "quant"}
_PAIR = ["split", "case", "class", "metric", "tolerance_mm"]


def _sections(point: RunPoint) -> dict[str, Any]:
    """The baseline sections as they read back from a run's ``.yaml`` (same round trip)."""
    plain = yaml.safe_load(point.resolved_yaml)
    return {key: plain.get(key) for key in BASELINE_KEYS}


def fp32_baseline(experiment_dir: str | Path, point: RunPoint) -> pd.DataFrame | None:
    """Rows of the FP32 runs of the point's model/data/inference in ``experiment_dir``, or None.

    Candidates are the run files named ``<model>-fp32-*`` (:func:`benchmark.config.run_name`);
    each one's resolved config must agree with the point on :data:`BASELINE_KEYS`.
    """
    runs = Path(experiment_dir) / "runs"
    wanted = _sections(point)
    frames = []
    for config_file in sorted(runs.glob(f"{point.model.name}-fp32-*.yaml")):
        rows_file = config_file.with_suffix(".parquet")
        if not rows_file.is_file():
            continue
        found = yaml.safe_load(config_file.read_text())
        if found.get("precision", {}).get("name") != "fp32":
            continue
        if all(found.get(key) == wanted[key] for key in BASELINE_KEYS):
            frames.append(pd.read_parquet(rows_file))
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True).drop_duplicates(_PAIR, keep="last")


def fp32_command(point: RunPoint, overrides: Sequence[str] | None) -> str:
    """The command that adds the FP32 run of a run: its own options without the quantization
    point, plus ``precision=fp32 granularity=none``.

    Without the command line's ``overrides`` (a run started from Python), the model and data
    options are spelled out from the config.
    """
    if overrides is None:
        kept = [f"model={point.model.name}", f"data={point.data.name}"]
        if point.data.root is not None:
            kept.append(f"data.root={point.data.root}")
        kept.append(f"experiment_name={point.experiment}")
    else:
        kept = [o for o in overrides if _override_group(o) not in _QUANT_GROUPS]
    words = ["python", "-m", "benchmark.run", *kept, "precision=fp32", "granularity=none"]
    return " ".join(shlex.quote(w) for w in words)


def _override_group(override: str) -> str:
    """``+quant.act_mapping=symmetric`` -> ``quant``; ``precision=w8a8`` -> ``precision``."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key.split(".", 1)[0].split("@", 1)[0]


def _mean(rows: pd.DataFrame, metric: str) -> float:
    values = rows.loc[rows["metric"] == metric, "value"].to_numpy(dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _drop(name: str, run: float, base: float) -> str:
    """``DSC 0.812 vs FP32 0.830 (-1.80 pt, -2.2%)``: pt = points of the score x 100."""
    rel = f", {100 * (run - base) / base:+.1f}%" if base else ""
    return f"{name} {run:.3f} vs FP32 {base:.3f} ({100 * (run - base):+.2f} pt{rel})"


def run_summary(
    rows: pd.DataFrame,
    experiment_dir: str | Path,
    point: RunPoint,
    overrides: Sequence[str] | None = None,
) -> str:
    """One line: the point, mean DSC/NSD, their drop from the FP32 baseline, FP32 agreement.

    Args:
        rows: the run's tidy rows (from :func:`benchmark.pipeline.evaluate.run_point`).
        experiment_dir: where the run's files (and its FP32 baseline's) are.
        point: the run.
        overrides: the command line's overrides, for the FP32 command when it is missing.
    """
    precision = point.precision
    label = precision if precision == "fp32" else f"{precision} {rows['granularity'].iloc[0]}"
    scored = rows[rows["metric"].isin(["dsc", "nsd"])]
    split = ", ".join(sorted(set(scored["split"].astype(str)))) or point.evaluation.split
    head = f"{point.model.name} {label} on {point.data.name} ({split}, {scored['case'].nunique()} cases)"
    nsd = f"NSD@{float(point.evaluation.tolerance_mm):g}mm"
    dsc_run, nsd_run = _mean(scored, "dsc"), _mean(scored, "nsd")
    if precision == "fp32":
        return f"{head}: DSC {dsc_run:.3f}, {nsd} {nsd_run:.3f} (the FP32 baseline itself)"
    agreement = _mean(rows, FP32_AGREEMENT_METRIC)
    agree = (
        f"; agreement with FP32 predictions DSC {agreement:.3f}" if np.isfinite(agreement) else ""
    )
    baseline = fp32_baseline(experiment_dir, point)
    paired = None
    if baseline is not None:
        both = scored.merge(baseline[_PAIR + ["value"]], on=_PAIR, suffixes=("", "_fp32"))
        both = both[np.isfinite(both["value"]) & np.isfinite(both["value_fp32"])]
        paired = both if len(both) else None
    if paired is None:
        why = "no FP32 run" if baseline is None else "its FP32 run scored none of these cases"
        return (
            f"{head}: DSC {dsc_run:.3f}, {nsd} {nsd_run:.3f}{agree}; {why} of this model and data "
            f"in {experiment_dir}, so no drop from FP32: add it with {fp32_command(point, overrides)}"
        )
    parts = []
    for metric, name in (("dsc", "DSC"), ("nsd", nsd)):
        pairs = paired[paired["metric"] == metric]
        if len(pairs):
            parts.append(_drop(name, pairs["value"].mean(), pairs["value_fp32"].mean()))
    return f"{head}: {'; '.join(parts)}{agree}"


def summary_for_run(
    experiment_dir: str | Path, run_id: str, point: RunPoint, overrides: Sequence[str] | None
) -> str:
    """:func:`run_summary` of a finished run read back from its rows file."""
    return run_summary(
        pd.read_parquet(run_path(experiment_dir, run_id)), experiment_dir, point, overrides
    )
