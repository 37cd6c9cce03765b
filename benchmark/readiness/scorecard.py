"""The quantization readiness scorecard: the five criteria, the overall score, a recommendation.

Each criterion is scored from measured evidence (:mod:`.evidence`) by a threshold rule that is
printed next to the score, so a reader can check the arithmetic. A criterion without evidence is
"not measured", counts 0 and comes with the command that measures it, so missing evidence can
only lower the overall percentage, never raise it:

``overall = 100 * sum(scores of measured criteria) / (5 * 5)``

Without the deployment and validation evidence (a gated static INT8 model) the recommendation
never says to proceed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from benchmark.readiness.criteria import (
    CALIBRATION_RULE,
    DEPLOYMENT_RULE,
    EFFORT_RULE,
    SENSITIVITY_RULE,
    VALIDATION_RULE,
    Criterion,
    calibration,
    change_text,
    deployment,
    effort,
    label,
    pct,
    score_by_thresholds,
    sensitivity,
    speed_text,
    validation,
)
from benchmark.readiness.evidence import DeployEvidence, SweepEvidence, finite

__all__ = [
    "CALIBRATION_RULE",
    "DEPLOYMENT_RULE",
    "EFFORT_RULE",
    "SENSITIVITY_RULE",
    "VALIDATION_RULE",
    "Criterion",
    "Scorecard",
    "build_scorecard",
    "score_by_thresholds",
    "speed_text",
]


@dataclass
class Scorecard:
    """A model's filled scorecard."""

    model: str
    criteria: list[Criterion]
    recommendation: str
    risks: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def overall_percent(self) -> float:
        """``100 * sum / (5 * number of criteria)``, unmeasured ones counting 0 (NaN if none
        is measured)."""
        scored = [c.score for c in self.criteria if c.score is not None]
        return 100.0 * sum(scored) / (5 * len(self.criteria)) if scored else float("nan")

    @property
    def n_scored(self) -> int:
        return sum(c.score is not None for c in self.criteria)

    @property
    def complete(self) -> bool:
        """Whether every criterion was measured."""
        return self.n_scored == len(self.criteria)

    @property
    def missing(self) -> list[Criterion]:
        """The criteria without evidence, in scorecard order."""
        return [c for c in self.criteria if c.score is None]


def _recommendation(
    criteria: list[Criterion], sweep: SweepEvidence, deploy: DeployEvidence | None, tolerance: float
) -> str:
    """One recommendation; "proceed" only when a deployed static INT8 model passed the gate."""
    best = sweep.best("w8a8")
    gated = deploy is not None and "ort_int8_static" in deploy.gate
    chosen = deploy.recommended() if deploy is not None else None
    int8_passed = deploy is not None and any(
        ok and "int8" in b for b, (ok, _) in deploy.gate.items()
    )
    if int8_passed:
        point = deploy.point
        text = (
            f"Proceed with W8A8 PTQ per-channel ({point.get('granularity')} granularity, "
            f"{point.get('observer')} observer, {point.get('calib_n')} calibration patches): "
            f"{_deploy_text(deploy, chosen)}"
        )
    elif gated:
        drop, reason = deploy.rel_drop(), deploy.gate["ort_int8_static"][1]
        if finite(drop) and drop <= tolerance:
            text = (
                f"Keep FP32 for now: the static INT8 mean DSC drop ({pct(drop)}) is within the "
                f"tolerance, but the gate rejected it ({reason}); try mixed precision for the "
                "layers behind the classes at risk below, or another calibration setting."
            )
        else:
            text = _by_drop(drop, "the deployed static INT8 model")
    elif best is not None and best["rel_drop"] <= tolerance:
        text = (
            f"No deployment decision yet: in fake-quant the best W8A8 point ({label(best)}) "
            f"{change_text(best['rel_drop'])} mean DSC (within the {pct(tolerance)} tolerance), but no "
            "INT8 model of it has been deployed and gated; deploy it (see What to run) first."
        )
    elif best is not None:
        text = _by_drop(float(best["rel_drop"]), "the best fake-quant W8A8 point")
    else:
        text = "Not enough evidence to recommend anything: see What to run."
    missing = [c.name for c in criteria if c.score is None]
    if missing:
        text += (
            f" The assessment is incomplete: {', '.join(missing)} not measured (counted 0 in the "
            "overall score; What to run lists the commands)."
        )
    backend = chosen or "ort_int8_static"
    speeds = deploy.speedups.get(backend, {}) if deploy is not None else {}
    if speeds:
        batch = max(speeds)
        speed = speeds[batch]
        if speed < 1.1:
            text += (
                f" Note: on this hardware {backend} is {speed_text(speed)} than ONNX Runtime "
                f"FP32 at batch {batch}; the gain is the smaller model."
            )
    return text


def _deploy_text(deploy: DeployEvidence, chosen: str | None) -> str:
    """Which backend to serve and how fast it is, from the gate and the timed speed-ups."""
    speeds = deploy.speedups.get(chosen or "", {})
    if chosen is None or not speeds:
        return "an INT8 model passed the accuracy gate."
    batch = max(speeds)
    what = "INT8" if "int8" in chosen else "float"
    return (
        f"deploy {chosen} ({what}), the fastest backend that passed the accuracy gate "
        f"({speed_text(speeds[batch])} than ONNX Runtime FP32 at batch {batch}), with the FP32 "
        "model kept as its run-time fallback."
    )


def _by_drop(drop: float, what: str) -> str:
    """The recommendation for a W8A8 drop beyond the tolerance."""
    if finite(drop) and drop <= 0.05:
        return (
            f"Consider QAT or mixed precision: {what} {change_text(drop)} mean DSC (keep the "
            "most sensitive layers and classes in FP16/FP32)."
        )
    if finite(drop):
        return (
            f"Keep FP32/FP16: {what} {change_text(drop)} mean DSC, more than 5%; INT8 needs "
            "QAT at least."
        )
    return "Not enough evidence to recommend anything: see What to run."


def _what_to_run(criterion: Criterion, model: str, sweep: SweepEvidence) -> str:
    """The command that measures an unmeasured criterion of ``model``."""
    best = sweep.best("w8a8")
    granularity = best["granularity"] if best is not None else "per_channel_token"
    commands = {
        "Performance sensitivity": f"python -m benchmark.run -m model={model} "
        "precision=fp32,w8a8 granularity=per_tensor,per_channel_token,adaptive "
        f"experiment_name=sweep_{model}",
        "Calibration data": f"python -m benchmark.run -m model={model} precision=fp32,w8a8 "
        f"granularity={granularity} observer=minmax,percentile,mse "
        f"experiment_name=calibration_{model}",
        "Deployment constraints": f"python -m benchmark.run experiment=deploy_smoke model={model}",
        "Validation": f"python -m benchmark.run experiment=deploy_smoke model={model}",
        "Effort": f"python -m benchmark.run experiment=deploy_smoke model={model}",
    }
    return commands[criterion.name]


def _risks(sweep: SweepEvidence, deploy: DeployEvidence | None, top: int = 3) -> pd.DataFrame:
    """Classes with the largest relative DSC drop, from the best W8A8 point and the deployment.

    Only classes that lost accuracy are listed (a class that gained is not a risk), at most
    ``top`` per source.
    """
    frames = []
    best = sweep.best("w8a8")
    if best is not None and not sweep.class_drops.empty:
        mask = pd.Series(True, index=sweep.class_drops.index)
        for key in ("precision", "granularity", "observer", "algorithm", "calib_n"):
            mask &= sweep.class_drops[key] == best[key]
        rows = sweep.class_drops[mask & (sweep.class_drops["rel_drop"] > 0)].nlargest(
            top, "rel_drop"
        )
        frames.append(
            rows.assign(source=f"sweep {label(best)}")[
                ["source", "class", "class_name", "fp32_dsc", "dsc", "rel_drop"]
            ]
        )
    if deploy is not None and not deploy.class_dsc.empty:
        table = deploy.class_dsc.pivot(index="class", columns="backend", values="dsc")
        names = deploy.class_dsc.groupby("class")["class_name"].first()
        if {"torch_fp32", "ort_int8_static"} <= set(table.columns):
            rows = pd.DataFrame(
                {
                    "source": "deploy ort_int8_static",
                    "class": table.index.astype(int),
                    "class_name": names.reindex(table.index).to_numpy(),
                    "fp32_dsc": table["torch_fp32"].to_numpy(),
                    "dsc": table["ort_int8_static"].to_numpy(),
                }
            )
            rows["rel_drop"] = (rows["fp32_dsc"] - rows["dsc"]) / rows["fp32_dsc"].where(
                rows["fp32_dsc"] != 0
            )
            frames.append(rows[rows["rel_drop"] > 0].nlargest(top, "rel_drop"))
    if not frames:
        return pd.DataFrame(
            columns=["source", "class", "class_name", "fp32_dsc", "dsc", "rel_drop"]
        )
    return pd.concat(frames, ignore_index=True)


def build_scorecard(
    model: str, sweep: SweepEvidence, deploy: DeployEvidence | None, tolerance: float = 0.01
) -> Scorecard:
    """Score the five criteria, recommend, and list the key risks for ``model``.

    Args:
        model: model name.
        sweep: fake-quant sweep evidence.
        deploy: deployment evidence (``None`` when there is no deployment run).
        tolerance: gate tolerance on the relative drop of the mean DSC (0.01 = 1 %).
    """
    criteria = [
        sensitivity(sweep),
        calibration(sweep, deploy),
        deployment(deploy),
        validation(deploy, tolerance),
        effort(sweep, deploy, tolerance),
    ]
    notes = []
    if deploy is not None:
        floats = deploy.float_ops.get("ort_int8_static", [])
        if floats:
            notes.append(
                "Operators still executed in float in the static INT8 model: "
                + ", ".join(floats)
                + " (no integer kernel on this execution provider)."
            )
        if deploy.batch_consistent.get("ort_int8_dynamic") is False:
            notes.append(
                "Dynamic INT8 predictions depend on the batch size (batch-wide activation ranges)."
            )
    for criterion in criteria:
        if criterion.score is None:
            criterion.to_measure = _what_to_run(criterion, model, sweep)
    return Scorecard(
        model,
        criteria,
        _recommendation(criteria, sweep, deploy, tolerance),
        _risks(sweep, deploy),
        notes,
    )
