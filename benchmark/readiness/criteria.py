"""The five readiness criteria, each scored 1-5 from measured evidence by a stated rule.

Each rule is printed next to its score, so a reader can check the arithmetic; a criterion
without evidence has score ``None`` ("not measured"). Thresholds are relative DSC drops
(fractions) unless stated; ``tol`` is the gate tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from benchmark.readiness.evidence import DeployEvidence, SweepEvidence, finite

__all__ = [
    "CALIBRATION_RULE",
    "DEPLOYMENT_RULE",
    "EFFORT_RULE",
    "SENSITIVITY_RULE",
    "VALIDATION_RULE",
    "Criterion",
    "calibration",
    "change_text",
    "deployment",
    "effort",
    "label",
    "pct",
    "score_by_thresholds",
    "sensitivity",
    "speed_text",
    "validation",
]

SENSITIVITY_RULE = (
    "best W8A8 relative DSC drop d: d <= 1% -> 5, <= 2% -> 4, <= 5% -> 3, <= 10% -> 2, else 1"
)
CALIBRATION_RULE = (
    "spread s of the relative DSC drop over W8A8 runs that differ only in observer or number "
    "of calibration patches (best granularity): s <= 0.5 pp -> 5, <= 1 pp -> 4, <= 2 pp -> 3, "
    "<= 5 pp -> 2, else 1"
)
DEPLOYMENT_RULE = (
    "floor of the mean of a speed-up score of the recommended backend, the fastest one that "
    "passed the gate (ort_int8_static when none did): ort_fp32 p50 / its p50 at the largest "
    "batch: >= 2x -> 5, >= 1.5x -> 4, >= 1.1x -> 3, >= 0.9x -> 2, else 1; and a size score "
    "(its size / ort_fp32 size: <= 0.3 -> 5, <= 0.5 -> 4, <= 0.75 -> 3, <= 1 -> 2, else 1)"
)
VALIDATION_RULE = (
    "static INT8 gate accepted and batch-consistent with fake-quant agreement "
    "(mean dsc_vs_fakequant) >= 0.98 -> 5; accepted and batch-consistent -> 4; rejected but "
    "mean drop <= tol -> 3; rejected with mean drop <= 5 tol -> 2; else 1"
)
EFFORT_RULE = (
    "deployed W8A8 PTQ passes the gate -> 5 (none); else the smallest W8A8 relative DSC drop d "
    "(swept points and the deployed static INT8 model): d <= tol -> 4 (config change); "
    "<= 5% -> 3 (mixed precision or advanced PTQ); <= 10% -> 2 (QAT); else 1 (keep float)"
)


def score_by_thresholds(
    value: float, thresholds: tuple[float, float, float, float], higher_is_better: bool
) -> int:
    """1-5 from four thresholds, best first (e.g. ``(0.01, 0.02, 0.05, 0.10)`` for drops).

    ``higher_is_better=False``: ``value <= t[0] -> 5``, ``<= t[1] -> 4``, ... else 1;
    ``higher_is_better=True``: ``value >= t[0] -> 5``, ... else 1.
    """
    for score, limit in zip((5, 4, 3, 2), thresholds, strict=True):
        if (value >= limit) if higher_is_better else (value <= limit):
            return score
    return 1


@dataclass
class Criterion:
    """One scorecard line.

    Attributes:
        name: criterion title.
        score: 1-5, or ``None`` when not measured.
        rule: the scoring rule, verbatim.
        measured: label -> value as text ("not measured" where absent).
        why: one sentence applying the rule to the measured values.
        to_measure: the command that supplies the evidence (set when ``score`` is ``None``).
    """

    name: str
    score: int | None
    rule: str
    measured: dict[str, str]
    why: str
    to_measure: str = ""


def speed_text(speedup: float) -> str:
    """``1.80x faster`` / ``1.89x slower`` for a speed-up ratio ``p50(FP32) / p50(INT8)``."""
    if not finite(speedup) or speedup <= 0:
        return "not measured"
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"


def pct(value: float) -> str:
    return f"{100 * value:.2f}%" if finite(value) else "not measured"


def change_text(drop: float) -> str:
    """``loses 0.40%`` for a relative drop, ``gains 0.01%`` for a rise (``drop < 0``)."""
    return f"loses {pct(drop)}" if drop >= 0 else f"gains {pct(-drop)}"


def label(row: pd.Series) -> str:
    return f"{row['precision']} {row['granularity']} / {row['observer']} / n={row['calib_n']}"


def sensitivity(sweep: SweepEvidence) -> Criterion:
    best, best4 = sweep.best("w8a8"), None
    low_bits = sweep.configs[sweep.configs["precision"].str.match(r"^w[2-4]a")]
    if not low_bits.empty:
        best4 = low_bits.iloc[0]
    measured = {
        "FP32 mean DSC": f"{sweep.fp32_dsc:.4f}" if finite(sweep.fp32_dsc) else "not measured",
        "best W8A8 point": label(best) if best is not None else "not measured",
        "best W8A8 relative DSC drop": pct(best["rel_drop"])
        if best is not None
        else "not measured",
        "best <= 4-bit relative DSC drop": (
            f"{pct(best4['rel_drop'])} ({label(best4)})" if best4 is not None else "not measured"
        ),
    }
    if not sweep.layers.empty:
        measured["most sensitive layers"] = ", ".join(sweep.layers["layer"].astype(str))
    if best is None:
        return Criterion(
            "Performance sensitivity", None, SENSITIVITY_RULE, measured, "no FP32 + W8A8 sweep rows"
        )
    score = score_by_thresholds(best["rel_drop"], (0.01, 0.02, 0.05, 0.10), higher_is_better=False)
    return Criterion(
        "Performance sensitivity",
        score,
        SENSITIVITY_RULE,
        measured,
        f"d = {pct(best['rel_drop'])} -> {score}",
    )


def calibration(sweep: SweepEvidence, deploy: DeployEvidence | None) -> Criterion:
    best = sweep.best("w8a8")
    measured = {"calibration patches (deployed run)": "not measured"}
    if deploy is not None:
        measured["calibration patches (deployed run)"] = str(deploy.point.get("calib_n"))
        measured["observer (deployed run)"] = str(deploy.point.get("observer"))
    if best is None:
        return Criterion("Calibration data", None, CALIBRATION_RULE, measured, "no W8A8 sweep rows")
    same = sweep.configs[
        (sweep.configs["precision"] == "w8a8")
        & (sweep.configs["granularity"] == best["granularity"])
        & (sweep.configs["algorithm"] == best["algorithm"])
    ]
    measured["W8A8 runs compared"] = str(len(same))
    measured["observers"] = ", ".join(sorted(same["observer"].astype(str).unique()))
    measured["calibration sizes"] = ", ".join(str(n) for n in sorted(same["calib_n"].unique()))
    if len(same) < 2:
        return Criterion(
            "Calibration data",
            None,
            CALIBRATION_RULE,
            measured,
            "only one calibration setting was swept; sweep observer= or calibration.n= to measure",
        )
    spread_pp = 100 * float(same["rel_drop"].max() - same["rel_drop"].min())
    measured["spread of relative drop"] = f"{spread_pp:.2f} pp"
    score = score_by_thresholds(spread_pp, (0.5, 1.0, 2.0, 5.0), higher_is_better=False)
    return Criterion(
        "Calibration data", score, CALIBRATION_RULE, measured, f"s = {spread_pp:.2f} pp -> {score}"
    )


def deployment(deploy: DeployEvidence | None) -> Criterion:
    backend = deploy.recommended() if deploy is not None else None
    backend = backend or "ort_int8_static"
    speeds = deploy.speedups.get(backend, {}) if deploy is not None else {}
    if not speeds:
        measured = {"speed-up": "not measured", "size": "not measured"}
        return Criterion(
            "Deployment constraints", None, DEPLOYMENT_RULE, measured, "no deployment run"
        )
    batch = max(speeds)
    speed = speeds[batch]
    ratio = deploy.size_mb.get(backend, math.nan) / deploy.size_mb.get("ort_fp32", math.nan)
    accepted = deploy.gate.get(backend, (False, ""))[0]
    measured = {
        "recommended backend": f"{backend} ({'passed' if accepted else 'no backend passed'} "
        "the gate)"
    }
    measured.update(
        {
            f"{_name(backend)} vs ONNX Runtime FP32 at batch {b}": (
                f"{speed_text(s)} (p50 ratio {s:.2f})"
            )
            for b, s in sorted(speeds.items())
        }
    )
    others = {b: v[batch] for b, v in deploy.speedups.items() if batch in v and b not in (backend,)}
    measured[f"other backends at batch {batch} (p50 ratio; gate)"] = ", ".join(
        f"{b} {v:.2f} ({_gate_word(deploy, b)})" for b, v in sorted(others.items())
    )
    measured[f"size (MB) ort_fp32 -> {backend}"] = (
        f"{deploy.size_mb.get('ort_fp32', math.nan):.3f} -> "
        f"{deploy.size_mb.get(backend, math.nan):.3f} ({ratio:.2f}x)"
    )
    fraction = deploy.integer_conv_fraction.get(backend, math.nan)
    measured["convolutions in integer kernels"] = pct(fraction)
    measured[f"float compute ops left ({backend})"] = (
        ", ".join(deploy.float_ops.get(backend, [])) or "none"
    )
    measured.update(_policy_lines(deploy))
    measured["hardware"] = deploy.hardware
    speed_score = score_by_thresholds(speed, (2.0, 1.5, 1.1, 0.9), higher_is_better=True)
    size_score = score_by_thresholds(ratio, (0.3, 0.5, 0.75, 1.0), higher_is_better=False)
    score = (speed_score + size_score) // 2
    why = (
        f"{backend} {speed_text(speed)} (p50 ratio {speed:.2f}) -> {speed_score}, size ratio "
        f"{ratio:.2f} -> {size_score}; floor(mean) = {score}"
    )
    return Criterion("Deployment constraints", score, DEPLOYMENT_RULE, measured, why)


def _name(backend: str) -> str:
    return "static INT8" if backend == "ort_int8_static" else backend


def _gate_word(deploy: DeployEvidence, backend: str) -> str:
    if backend not in deploy.gate:
        return "reference" if backend in ("ort_fp32", "torch_fp32") else "not gated"
    return "accepted" if deploy.gate[backend][0] else "rejected"


def _policy_lines(deploy: DeployEvidence) -> dict[str, str]:
    """One line per INT8 backend: each layer policy's batch-1 speed-up, and the deployed
    policy's float layers."""
    lines = {}
    if not deploy.policies.empty:
        for backend, group in deploy.policies.groupby("backend"):
            lines[f"layer policies of {backend} (batch 1 p50 ratio; INT8 convolutions)"] = (
                ", ".join(
                    f"{r.policy} {r.speedup:.2f}x ({pct(r.int8_convs)})" for r in group.itertuples()
                )
            )
    if not deploy.layers.empty:
        for (backend, policy), group in deploy.layers.groupby(["backend", "policy"]):
            kept = group[~group["int8"]]["layer"].astype(str).tolist()
            fell = group[group["int8"] & ~group["executed_int8"]]["layer"].astype(str).tolist()
            text = f"{len(group) - len(kept)} of {len(group)} INT8; float: " + (
                ", ".join(kept) or "none"
            )
            if fell:
                text += f"; quantized but run in float (no integer kernel): {', '.join(fell)}"
            lines[f"layer choice of {backend} ({policy})"] = text
    return lines


def validation(deploy: DeployEvidence | None, tolerance: float) -> Criterion:
    backend = "ort_int8_static"
    if deploy is None or backend not in deploy.gate:
        measured = {"gate": "not measured"}
        return Criterion(
            "Validation", None, VALIDATION_RULE, measured, "no gate result for static INT8"
        )
    accepted, note = deploy.gate[backend]
    consistent = deploy.batch_consistent.get(backend, False)
    drop = deploy.rel_drop(backend)
    faithful = deploy.mean_metric.get((backend, "dsc_vs_fakequant"), math.nan)
    measured = {
        "gate (static INT8)": "accepted" if accepted else f"rejected: {note}",
        "relative DSC drop vs FP32": pct(drop),
        "batch-size consistency": "yes" if consistent else "no",
        "mean DSC vs fake-quant (simulation fidelity)": f"{faithful:.4f}"
        if finite(faithful)
        else "not measured",
        "mean DSC vs FP32": f"{deploy.mean_metric.get((backend, 'dsc_vs_fp32'), math.nan):.4f}",
        "test cases": str(deploy.n_cases),
    }
    if accepted and consistent:
        score = 5 if finite(faithful) and faithful >= 0.98 else 4
    elif finite(drop) and drop <= tolerance:
        score = 3
    elif finite(drop) and drop <= 5 * tolerance:
        score = 2
    else:
        score = 1
    return Criterion(
        "Validation",
        score,
        VALIDATION_RULE,
        measured,
        f"gate {'accepted' if accepted else 'rejected'}, drop {pct(drop)} -> {score}",
    )


def effort(sweep: SweepEvidence, deploy: DeployEvidence | None, tolerance: float) -> Criterion:
    best = sweep.best("w8a8")
    accepted = deploy is not None and deploy.gate.get("ort_int8_static", (False, ""))[0]
    deployed_drop = deploy.rel_drop() if deploy is not None else math.nan
    measured = {
        "deployed PTQ passes the gate": "not measured"
        if deploy is None
        else ("yes" if accepted else "no"),
        "best swept W8A8 drop": pct(best["rel_drop"]) if best is not None else "not measured",
        "deployed static INT8 drop": pct(deployed_drop),
    }
    if accepted:
        return Criterion(
            "Effort", 5, EFFORT_RULE, measured, "the deployed PTQ model passes the gate -> 5"
        )
    drops = [
        d for d in (best["rel_drop"] if best is not None else None, deployed_drop) if finite(d)
    ]
    if not drops:
        return Criterion(
            "Effort", None, EFFORT_RULE, measured, "neither a passing deployment nor a W8A8 sweep"
        )
    d = float(min(drops))
    score = 4 if d <= tolerance else 3 if d <= 0.05 else 2 if d <= 0.10 else 1
    return Criterion("Effort", score, EFFORT_RULE, measured, f"d = {pct(d)} -> {score}")
